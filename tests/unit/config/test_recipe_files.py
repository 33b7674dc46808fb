"""A setting is one file, simpo_cli/recipes/<setting>.yaml (simpo_cli/config/recipe_files.py): the
options Hydra composes are made from it, and a malformed file is one line naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simpo_cli.config import recipe_files
from simpo_cli.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

NEW_SETTING = """\
recipe:
  published: true
  source: a lab's own training config
model:
  name_or_path: acme/phi-mini-instruct
  dtype: bfloat16
  params_b: 3.8
data:
  name: phi-mini-pairs
  kind: preference
  path: acme/phi-mini-pairs
  format: ultrafeedback
  split: train
  eval_split: test
hparams:
  learning_rate: 7.0e-7
  num_train_epochs: 1
  per_device_train_batch_size: 2
  global_batch_size: 64
  max_length: 1024
  max_prompt_length: 512
train:
  model: {dtype: float32}
  trainer: {bf16: true}
published:
  simpo: {beta: 4.0, gamma: 2.0}
"""

# Runs in a fresh interpreter: the recipe book is read once per process (Hydra's ConfigStore keeps
# what was stored), so the copy with the new file must be the only one that process sees.
COMPOSE_WITH_NEW_FILE = textwrap.dedent("""
    import json, shutil, sys
    from pathlib import Path
    import simpo_cli.config.recipe_files as book
    book_dir = Path(sys.argv[1])
    shutil.copytree(book.RECIPES_DIR, book_dir)
    (book_dir / "phi-mini.yaml").write_text(sys.argv[2])
    book.RECIPES_DIR = book_dir
    from omegaconf import OmegaConf
    from tests.helpers import compose
    out = {}
    for name, stage, overrides in [("train", "config", ["model=phi-mini"]),
                                   ("dpo", "config", ["model=phi-mini", "objective=dpo"]),
                                   ("eval", "eval", ["model=phi-mini"]),
                                   ("options", "config", ["hparams=phi-mini", "data=phi-mini-pairs"])]:
        out[name] = OmegaConf.to_container(compose(overrides, stage), resolve=True)
    print(json.dumps(out))
""")


def test_a_new_setting_is_one_recipe_file(tmp_path):
    proc = subprocess.run([sys.executable, "-c", COMPOSE_WITH_NEW_FILE, str(tmp_path / "recipes"), NEW_SETTING],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    train = out["train"]
    assert (train["model"]["name"], train["model"]["name_or_path"], train["model"]["dtype"]) == (
        "phi-mini", "acme/phi-mini-instruct", "float32")  # train.model on top of model
    assert train["trainer"]["bf16"] and train["recipe"] == {"name": "phi-mini", "published": True,
                                                           "source": "a lab's own training config"}
    assert (train["data"]["path"], train["data"]["eval_split"]) == ("acme/phi-mini-pairs", "test")
    assert (train["hparams"]["learning_rate"], train["hparams"]["global_batch_size"]) == (7e-7, 64)
    assert (train["objective"]["beta"], train["objective"]["gamma"]) == (4.0, 2.0)  # published.simpo
    assert out["dpo"]["objective"]["beta"] == 0.1  # nothing published for DPO: its default
    assert out["eval"]["model"]["dtype"] == "bfloat16"  # the other stages load `model:` as written
    # its inline sections are options too: over the demo, hparams=phi-mini brings its published values
    options = out["options"]
    assert options["model"]["name"] == "tiny-llama" and options["hparams"]["learning_rate"] == 7e-7
    assert options["data"]["path"] == "acme/phi-mini-pairs" and options["objective"]["beta"] == 4.0


@pytest.fixture
def book(tmp_path, monkeypatch):
    """An empty recipe book in ``tmp_path`` (the in-process node cache cleared before and after)."""
    monkeypatch.setattr(recipe_files, "RECIPES_DIR", tmp_path)
    recipe_files.nodes.cache_clear()
    yield tmp_path
    recipe_files.nodes.cache_clear()


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("published:\n", "publish:\n"), "unknown section 'publish'"),
    (lambda t: t.replace("train:\n  model: {dtype: float32}", "train:\n  objective: {beta: 1}"),
     "train.objective is not a section a recipe sets for simpo train"),
    (lambda t: t.replace("  name: phi-mini-pairs\n", ""), "data.name: missing"),
    (lambda t: t.replace("  name: phi-mini-pairs\n", "  name: ultrafeedback\n"),
     "data.name 'ultrafeedback' is already a data option"),
])
def test_a_malformed_recipe_is_one_line_naming_its_file(book, edit, message):
    (book / "phi-mini.yaml").write_text(edit(NEW_SETTING))
    with pytest.raises(ConfigError) as info:
        recipe_files.nodes()
    (line,) = info.value.problems
    assert line.startswith(f"{book}/phi-mini.yaml: ") and message in line, line


def test_every_shipped_recipe_reads_and_names_existing_options():
    for name in recipe_files.names():
        doc = recipe_files.recipe(name)
        for group, option in (("data", recipe_files.data_option(doc)),
                              ("hparams", recipe_files.hparams_option(name, doc))):
            assert recipe_files.option_doc(group, option), f"{name}: {group}={option} does not exist"
