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


def test_every_objective_trains_in_one_multirun(tmp_path):
    """``simpo train -m objective=glob(*)``: one run per registered objective, each completed with
    its metrics (about 20 s on 2 CPU cores: Hydra runs the jobs, one per objective, in one process)."""
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
    assert seen == set(OBJECTIVES) and len(runs) == len(OBJECTIVES)  # read from the registry, not counted by hand
