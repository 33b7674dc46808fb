"""The real CLI trains every objective on the tiny model and the bundled pairs."""

import json
import math

import pytest

from simpo_cli.objectives import OBJECTIVES
from tests.helpers import FAST_TRAIN, read_jsonl, run_dirs, run_simpo


def test_dpo_trains_from_the_cli(tmp_path):
    """``simpo train objective=dpo``: reference log-probs precomputed (in the run's cache), policy =
    reference at step 0 so the first loss is log 2, metrics logged like SimPO's."""
    run_simpo(["train", "objective=dpo", *FAST_TRAIN, "trainer.save_model=false", "paths.output_root=out"],
              tmp_path)
    (run,) = run_dirs(tmp_path / "out")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["steps"] == 2
    assert meta["reference"]["mode"] == "precompute" and meta["reference"]["train"]["cache_hit"] is False
    assert (tmp_path / "cache" / "reference" / meta["reference"]["train"]["key"] / "logps.json").is_file()
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert len(records) == 2 and records[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert "rewards/margins" in records[0] and "logps/chosen" in records[0]


@pytest.mark.slow
def test_every_objective_trains_in_one_multirun(tmp_path):
    """``simpo train -m objective=glob(*)``: one run per registered objective, each completed with
    its metrics (Hydra runs the jobs, one per objective, in one process: 46 s for 14 objectives on
    2 loaded CPU cores, hence slow). Fast variant: tests/unit/training/test_baseline_invariants.py
    trains every objective on the real trainer from its composed config."""
    run_simpo(["train", "-m", "objective=glob(*)", *FAST_TRAIN, "trainer.save_model=false",
               "trainer.evaluate=false", "paths.output_root=out"], tmp_path, timeout=1200)
    from omegaconf import OmegaConf

    runs = run_dirs(tmp_path / "out")
    seen = set()
    for run in runs:
        meta = json.loads((run / "meta.json").read_text())
        assert meta["status"] == "completed" and meta["steps"] == 2, run
        records = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
        assert len(records) == 2 and all(math.isfinite(r["loss"]) for r in records), run
        name = OmegaConf.load(run / "config.yaml").objective.name
        assert ("reference" in meta) == OBJECTIVES[name].needs_reference
        seen.add(name)
    assert seen == set(OBJECTIVES) and len(runs) == len(OBJECTIVES)


def test_wpo_weighting_trains_and_logs_its_weight(tmp_path):
    """``simpo train objective=simpo objective.wpo=true`` (~15 s): the run completes, every training
    record logs ``wpo/weight`` (the mean WPO weight of the logged steps: finite and > 0; the
    aligned weight is not bounded by 1) and the saved config keeps the switch."""
    run_simpo(["train", "objective=simpo", "objective.wpo=true", *FAST_TRAIN, "trainer.save_model=false",
               "trainer.evaluate=false", "paths.output_root=out"], tmp_path)
    from omegaconf import OmegaConf

    (run,) = run_dirs(tmp_path / "out")
    assert json.loads((run / "meta.json").read_text())["status"] == "completed"
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert len(records) == 2
    assert all(math.isfinite(r["wpo/weight"]) and r["wpo/weight"] > 0 for r in records)
    cfg = OmegaConf.load(run / "config.yaml").objective
    assert cfg.wpo is True and cfg.wpo_alignment == "sampled"
