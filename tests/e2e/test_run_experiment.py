"""``simpo run experiment=ifeval-smoke`` end to end through the real CLI on the tiny model:
generate-pairs (IFEval verifiers on the bundled demo prompts) -> SimPO -> eval with IFEval, killed
with SIGKILL inside the train stage, then rerun: the completed stage is skipped, train resumes from
its checkpoint, eval runs; a third run repeats nothing. A mistake in a later stage stops the command
before stage 1 starts."""

import json
import signal
import time

import pytest

from tests.e2e.reliability.procs import finish, start_simpo, wait_for
from tests.helpers import run_simpo

EXPERIMENT = ["run", "experiment=ifeval-smoke", "paths.output_root=out"]


def _meta(path):
    return json.loads((path / "meta.json").read_text())


@pytest.mark.slow  # three stages twice, ~45 s; CI runs it (make test-slow); the chain logic is unit-tested fast
def test_kill_9_inside_a_stage_then_rerun_finishes_without_repeating_a_completed_stage(tmp_path):
    exp = tmp_path / "out" / "run" / "ifeval-smoke"
    victim = start_simpo(EXPERIMENT, tmp_path, step_sleep=0.5)  # the steps run the same (slowed) CLI
    wait_for(exp / "02-train" / "checkpoints" / "checkpoint-2", victim)
    victim.send_signal(signal.SIGKILL)
    code, _ = finish(victim)
    assert code == -signal.SIGKILL
    checkpoints = sorted((exp / "02-train" / "checkpoints").iterdir())
    time.sleep(2)  # a surviving train step would write a checkpoint every 0.5 s: it died with the runner
    assert sorted((exp / "02-train" / "checkpoints").iterdir()) == checkpoints
    assert _meta(exp / "02-train")["status"] == "running"
    record = json.loads((exp / "experiment.json").read_text())
    assert [s["status"] for s in record["stages"]] == ["completed", "running", None]
    pairs_meta = _meta(exp / "01-generate-pairs")
    assert pairs_meta["status"] == "completed" and pairs_meta["attempts"] == 1

    code, out = finish(start_simpo(EXPERIMENT, tmp_path))
    assert code == 0, out[-4000:]
    assert "stage 1 (generate-pairs): completed in 01-generate-pairs, skipped" in out
    assert "stage 2 (train): resuming" in out and "stage 3 (eval): starting" in out
    assert _meta(exp / "01-generate-pairs") == pairs_meta  # not run again
    train = _meta(exp / "02-train")
    assert train["status"] == "completed" and train["steps"] == 4
    assert int(train["resumed_from"].rsplit("-", 1)[1]) >= 2  # from its checkpoint, not from scratch
    record = json.loads((exp / "experiment.json").read_text())
    assert record["status"] == "completed" and record["attempts"] == 2
    assert [s["status"] for s in record["stages"]] == ["completed"] * 3
    assert record["stages"][1]["inputs"] == {"data": "01-generate-pairs"}
    assert f"model={exp / '02-train'}" in record["stages"][2]["args"]
    final = record["stages"][2]["metrics"]
    assert 0 <= final["ifeval/prompt_loose"] <= 1 and "ifeval/before/prompt_loose" in final
    assert _meta(exp)["status"] == "completed" and _meta(exp)["ran"] == [2, 3]

    again = run_simpo(EXPERIMENT, tmp_path)  # everything done: nothing runs again
    assert _meta(exp)["ran"] == [] and again.stderr.count("skipped") == 3
    assert _meta(exp / "02-train") == train


def test_a_mistake_in_stage_3_stops_the_run_before_stage_1(tmp_path):
    proc = run_simpo([*EXPERIMENT, "eval_limit=0"], tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "simpo: error: invalid config: stage 3 (eval): eval.limit must be >= 1, got 0"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_sweep_of_experiments_gives_one_table(tmp_path):
    """``simpo run -m experiment=ifeval-smoke objective=simpo,dpo`` then ``simpo report``: about
    twice the experiment's minute."""
    sweep = tmp_path / "sweep"
    run_simpo(["run", "-m", "experiment=ifeval-smoke", "objective=simpo,dpo", f"hydra.sweep.dir={sweep}"], tmp_path)
    for num, objective in ((0, "simpo"), (1, "dpo")):
        record = json.loads((sweep / str(num) / "experiment.json").read_text())
        assert record["status"] == "completed" and f"objective={objective}" in record["stages"][1]["args"]
        assert yaml_objective(sweep / str(num) / "02-train") == objective
    # the same pairs stage (same chain up to it): the second job reuses the first job's pairs
    reused = sweep / "1" / "01-generate-pairs"
    assert reused.is_symlink() and reused.resolve() == (sweep / "0" / "01-generate-pairs").resolve()
    record = json.loads((sweep / "1" / "experiment.json").read_text())
    assert record["stages"][0]["reused_from"] == str((sweep / "0" / "01-generate-pairs").resolve())
    assert "generation.n=8" in record["stages"][0]["args"]  # the command the reused stage stands for
    assert not (sweep / "1" / "02-train").is_symlink()  # another objective: trained, not reused
    proc = run_simpo(["report", str(sweep), "--metric", "ifeval/prompt_loose"], tmp_path)
    assert "2 jobs: 2 completed, 0 failed" in proc.stdout and "simpo run experiment=ifeval-smoke objective=" in proc.stdout
    table = (sweep / "report" / "report.md").read_text()
    assert "| rank | job | objective | ifeval/prompt_loose |" in table  # the swept axis, then the metric


def yaml_objective(run_dir):
    from omegaconf import OmegaConf

    return OmegaConf.load(run_dir / "config.yaml").objective.name
