"""A 2 x 2 grid of the real CLI on the tiny model: one job fails, the sweep goes on, the report
lists three finished rows and the failure, and a rerun skips the finished jobs."""

from __future__ import annotations

import csv
import io
import json

import pytest
from omegaconf import OmegaConf

from tests.helpers import FAST_TRAIN, run_simpo


def _json(path):
    return json.loads(path.read_text())


def test_grid_survives_a_failed_job_and_rerun_skips_finished_ones(tmp_path):
    sweep = tmp_path / "sweep"
    # Job 3 (beta=2.5, gamma=1.0) trains, then cannot save its model: `model` is a file there.
    (sweep / "3").mkdir(parents=True)
    (sweep / "3" / "model").write_text("in the way")
    # One shell command; the sweep file's axes are overridden from the shell (lr narrowed to one value).
    args = ["train", "-m", "+sweep=simpo_grid", "objective.beta=2.0,2.5", "objective.gamma=0.5,1.0",
            "hparams.learning_rate=1e-3", *FAST_TRAIN, f"hydra.sweep.dir={sweep}"]
    first = run_simpo(args, tmp_path, check=False)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "1 sweep job(s) failed: #3 (objective.beta=2.5 objective.gamma=1.0 hparams.learning_rate=0.001" in first.stderr
    status = {d: _json(sweep / d / "meta.json")["status"] for d in "0123"}
    assert status == {"0": "completed", "1": "completed", "2": "completed", "3": "failed"}
    assert "NotADirectoryError" in _json(sweep / "3" / "meta.json")["error"]

    rep = run_simpo(["report", str(sweep)], tmp_path)
    rows = list(csv.DictReader(io.StringIO((sweep / "report" / "report.csv").read_text())))
    assert [r["status"] for r in rows] == ["completed"] * 3 + ["failed"]
    assert rows[3]["job"] == "3" and "NotADirectoryError" in rows[3]["error"]
    assert all(float(r["rewards/accuracies"]) >= 0 for r in rows[:3]) and rows[3]["rewards/accuracies"] == ""
    assert rep.stdout.splitlines()[-1].startswith("simpo train objective.beta=")
    assert "failed: 3 (" in rep.stdout
    for name in ("heatmap.png", "metric_vs_gamma.png"):
        assert (sweep / "report" / name).stat().st_size > 10_000

    # Rerun the same command: the three finished jobs are skipped untouched, job 3 runs again.
    (sweep / "3" / "model").unlink()
    before = {d: (sweep / d / "meta.json").read_text() for d in "012"}
    run_simpo(args, tmp_path)
    attempt = {d: _json(sweep / d / "sweep.json")["status"] for d in "0123"}
    assert attempt == {"0": "skipped", "1": "skipped", "2": "skipped", "3": "completed"}
    assert {d: (sweep / d / "meta.json").read_text() for d in "012"} == before
    assert _json(sweep / "3" / "meta.json")["status"] == "completed"
    assert _json(sweep / "3" / ".previous" / "meta.json")["status"] == "failed"  # the failed attempt, kept

    run_simpo(["report", str(sweep)], tmp_path)
    rows = list(csv.DictReader(io.StringIO((sweep / "report" / "report.csv").read_text())))
    assert [r["status"] for r in rows] == ["completed"] * 4


@pytest.mark.slow
def test_optuna_study_gets_the_metric_and_survives_failed_trials(tmp_path):
    """4 seeded TPE trials over beta in (-1, 1): those with beta <= 0 fail validation, are recorded
    as failed and Optuna samples on; the best value is the metric the completed job returned."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'simpo-cli[optuna]'")
    sweep = tmp_path / "tpe"
    proc = run_simpo(["sweep", "simpo_optuna", "hydra.sweeper.n_trials=4", "objective.beta=interval(-1.0, 1.0)",
                      "hparams.learning_rate=1e-3", *FAST_TRAIN, f"hydra.sweep.dir={sweep}"], tmp_path, check=False)
    assert proc.returncode == 1 and "sweep job(s) failed" in proc.stderr
    metas = {d.name: _json(d / "meta.json") for d in sweep.iterdir() if (d / "meta.json").is_file()}
    assert len(metas) == 4
    done = [m for m in metas.values() if m["status"] == "completed"]
    failed = [m for m in metas.values() if m["status"] == "failed"]
    assert done and failed and all("objective.beta must be > 0" in m["error"] for m in failed)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == max(m["pairs_after"]["rewards/accuracies"] for m in done)
    assert best.best_params["objective.beta"] > 0


def test_a_sweep_over_objectives_gets_each_objectives_published_values(tmp_path):
    """`-m objective=simpo,cpo` on a setting: every job gets its own objective's published values
    (applied per job, after composition) and says so in meta.json."""
    sweep = tmp_path / "sweep"
    args = ["train", "-m", "objective=simpo,cpo", "hparams=smollm2-cpu", "trainer.evaluate=false", *FAST_TRAIN,
            "trainer.max_steps=1", f"hydra.sweep.dir={sweep}"]
    run_simpo(args, tmp_path)
    simpo, cpo = (OmegaConf.load(sweep / job / "config.yaml").objective for job in "01")
    assert (simpo.name, simpo.beta, simpo.gamma) == ("simpo", 2.5, 1.375)  # published.simpo of the preset's setting
    assert (cpo.name, cpo.beta) == ("cpo", 0.1)  # nothing published: CPO's default, never SimPO's 2.5
    meta = _json(sweep / "0" / "meta.json")
    assert meta["provenance"]["objective.beta"] == {
        "value": 2.5, "source": "recipe smollm2-135m-instruct (published simpo values)"}
