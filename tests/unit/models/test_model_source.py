"""``model.name_or_path`` decoded once per load into a frozen ``ModelSource``."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from simpo_cli.models.loading import ModelSource, model_source


def _cfg(where):
    return OmegaConf.create({"name": "x", "name_or_path": where})


def test_each_kind_of_source(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "meta.json").write_text("{}")
    (run / "model" / "config.json").write_text("{}")
    lora = tmp_path / "lora" / "model"
    lora.mkdir(parents=True)
    (lora.parent / "meta.json").write_text("{}")
    (lora / "adapter_config.json").write_text("{}")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert model_source(_cfg(None)) == ModelSource("tiny", None)
    assert model_source(_cfg("org/name")) == ModelSource("hub", "org/name")
    assert model_source(_cfg(str(plain))) == ModelSource("local", str(plain))
    for where in (run, run / "model"):  # the run directory or its model/
        assert model_source(_cfg(str(where))) == ModelSource("run", str(run / "model"), run / "model")
    assert model_source(_cfg(str(lora.parent))) == ModelSource("adapter", str(lora), lora)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model_source(_cfg(None)).kind = "hub"
