"""One vocabulary for hand-offs between stages: a run directory passed as the input it provides."""

from __future__ import annotations

import json

import pytest

from simpo_cli.errors import ConfigError
from simpo_cli.run.preflight import handoff_overrides, translate_run_dir


def _run(path, stage, model_name="tiny-llama"):
    (path / "model").mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"stage": stage, "status": "completed"}))
    (path / "config.yaml").write_text(f"model:\n  name: {model_name}\n")
    return path


def test_a_run_directory_as_model_or_data(tmp_path):
    sft = _run(tmp_path / "sft", "sft")
    gp = tmp_path / "gp"
    gp.mkdir()
    (gp / "meta.json").write_text(json.dumps({"stage": "generate-pairs"}))
    assert handoff_overrides("config", [f"model={sft}", f"data={gp}", "objective=dpo"]) == [
        "model=tiny-llama", f"model.name_or_path={sft}", "data=generated", f"data.path={gp}", "objective=dpo"]


def test_eval_composes_over_a_train_run_and_run_is_gone(tmp_path):
    """model=<train run>: each of the run's sections becomes its group's train-run option (the
    command line's own group choices and keys stay, after them); run= is one line and exit 2."""
    train = _run(tmp_path / "train", "train")
    out = handoff_overrides("eval", [f"model={train}", "seed=3", "hydra.run.dir=x"])
    assert out == ["model=train-run", f"source_run={train}", "seed=3", "hydra.run.dir=x"]
    out = handoff_overrides("eval", [f"model={train}"])
    assert out[:2] == ["model=train-run", f"source_run={train}"] and out[2].startswith(f"hydra.run.dir={train}/eval/")
    with pytest.raises(ConfigError, match=f"run= is gone; evaluate a train run with model={train}"):
        handoff_overrides("eval", [f"run={train}"])
    with pytest.raises(ConfigError, match="not a simpo run directory"):
        handoff_overrides("eval", [f"model={tmp_path / 'nope'}"])


def test_group_options_and_a_run_without_the_input_are_told_apart(tmp_path):
    assert handoff_overrides("config", ["model=llama3-instruct", "data=demo-prefs,ultrafeedback"]) == [
        "model=llama3-instruct", "data=demo-prefs,ultrafeedback"]
    train = _run(tmp_path / "train", "train")
    with pytest.raises(ConfigError, match="has no data to give"):
        handoff_overrides("config", [f"data={train}"])


def test_run_dir_for_every_stage_and_output_dir_is_gone():
    assert translate_run_dir(["run_dir=out/x"]) == ["hydra.run.dir=out/x"]
    assert translate_run_dir(["-m", "run_dir=out/x"]) == ["-m", "hydra.sweep.dir=out/x"]
    with pytest.raises(ConfigError, match="output_dir= is gone; use run_dir=gen"):
        translate_run_dir(["output_dir=gen"])
