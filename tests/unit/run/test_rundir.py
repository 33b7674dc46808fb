"""The run directory: one name per file, one skeleton (open_run) for every stage, one reader."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from simpo_cli.errors import Interrupted
from simpo_cli.files import CONFIG_FILE, META_FILE
from simpo_cli.run.rundir import RunDir, RunRecord, open_run

CFG = OmegaConf.create({"seed": 3, "model": {"name": "tiny-llama"}})


def test_open_run_writes_config_and_running_then_the_body_finishes(tmp_path):
    run = RunDir(tmp_path / "run", main=True)
    with open_run(run, CFG, "sft"):
        meta = json.loads((tmp_path / "run" / META_FILE).read_text())
        assert (meta["stage"], meta["status"], meta["seed"]) == ("sft", "running", 3)
        run.finish("completed", steps=2)
    record = RunRecord.read(tmp_path / "run")
    assert record.status == "completed" and record.meta["steps"] == 2
    assert record.config().model.name == "tiny-llama" and record.config_path.name == CONFIG_FILE


@pytest.mark.parametrize("error, status", [(ValueError("boom"), "failed"), (Interrupted("SIGTERM", 15), "interrupted")])
def test_open_run_records_how_a_run_ended_and_re_raises(tmp_path, error, status):
    run = RunDir(tmp_path / "run", main=True)
    with pytest.raises(type(error)):
        with open_run(run, CFG, "train"):
            raise error
    record = RunRecord.read(tmp_path / "run")
    assert record.status == status and record.meta["error"].startswith(type(error).__name__)


def test_a_non_main_process_writes_nothing(tmp_path):
    run = RunDir(tmp_path / "run", main=False)
    with open_run(run, CFG, "train"):
        run.finish("completed")
    assert not (tmp_path / "run" / META_FILE).exists() and run.meta["status"] == "completed"


def test_run_record_of_a_directory_without_meta_is_empty(tmp_path):
    (tmp_path / META_FILE).write_text("{not json")
    assert RunRecord.read(tmp_path).meta == {} and RunRecord.read(tmp_path / "none").config() is None
