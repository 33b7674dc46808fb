"""``simpo report`` on a hand-made sweep directory: what each job recorded is what the table,
CSV, plots and best line say."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from simpo_cli.errors import UserError
from simpo_cli.sweeps.report import collect_jobs, rank_jobs, sweep_axes, write_report
from tests.helpers import run_simpo

FIXED = ["trainer.max_steps=2"]


def _job(sweep: Path, num: int, beta: float, gamma: float, lr: float, acc: float | None,
         status: str = "completed", error: str | None = None, sub: str = "") -> list[str]:
    """Write the files a ``simpo train`` job leaves: meta.json, config.yaml, metrics.jsonl."""
    d = sweep / sub / str(num) if sub else sweep / str(num)
    d.mkdir(parents=True, exist_ok=True)
    overrides = [f"objective.beta={beta}", f"objective.gamma={gamma}", f"hparams.learning_rate={lr}", *FIXED]
    meta = {"stage": "train", "status": status, "started": f"2026-11-23T09:00:{num:02d}+00:00",
            "ended": f"2026-11-23T09:01:{num:02d}+00:00", "overrides": overrides, "error": error}
    if status == "completed":
        meta.update(steps=2, final_loss=1.0 - acc / 2,
                    pairs_after={"rewards/accuracies": acc, "rewards/margins": acc / 10, "loss": 1 - acc})
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "config.yaml").write_text(f"hparams:\n  beta: {beta}\n  gamma: {gamma}\n  learning_rate: {lr}\n")
    (d / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "loss": 0.9, "rewards/accuracies": 0.25}) + "\n"
        + json.dumps({"step": 2, "loss": 0.7, "rewards/accuracies": 0.75}) + "\n"
        + json.dumps({"step": 2, "train_runtime": 1.0, "train_loss": 0.8}) + "\n")
    return overrides


@pytest.fixture
def sweep(tmp_path) -> Path:
    """2 lr x 2 beta x 2 gamma; job 7 failed; job 3's directory also holds an older failed attempt
    of the same point in .previous/ (ignored) and job 8 repeats job 0's overrides as a failure
    (the completed record wins); job 9 was killed while running."""
    root = tmp_path / "sweep"
    accs = [0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, None]
    num = 0
    for lr in (5e-7, 1e-6):
        for beta in (2.0, 2.5):
            for gamma in (0.5, 1.0):
                acc = accs[num]
                _job(root, num, beta, gamma, lr, acc, *(("failed", "ValueError: boom") if acc is None else ()))
                num += 1
    prev = root / "3" / ".previous"
    prev.mkdir()
    (prev / "meta.json").write_text(json.dumps({"status": "failed", "overrides": ["x=1"], "error": "old"}))
    _job(root, 8, 2.0, 0.5, 5e-7, None, status="failed", error="RuntimeError: stale")
    _job(root, 9, 5.0, 0.5, 5e-7, None, status="running")  # killed: never recorded an end
    return root


def test_collect_and_rank(sweep):
    jobs = collect_jobs(sweep)
    assert [j.dir for j in jobs] == [*map(str, range(8)), "9"]  # job 8 = job 0's point, .previous ignored
    assert jobs[-1].status == "running"
    assert [j.status for j in jobs].count("failed") == 1 and jobs[7].error == "ValueError: boom"
    assert sweep_axes(jobs[:8]) == ["objective.beta", "objective.gamma", "hparams.learning_rate"]
    assert jobs[0].metrics["train/loss"] == 0.7 and jobs[0].metrics["train/rewards/accuracies"] == 0.75
    assert jobs[0].hparams == {"beta": 2.0, "gamma": 0.5, "lr": 5e-7}
    # accuracy is maximised: job 6 (0.80) first; loss = 1 - acc is minimised: the same order.
    assert [j.dir for j in rank_jobs(jobs, "rewards/accuracies")] == ["6", "5", "4", "3", "2", "1", "0"]
    assert [j.dir for j in rank_jobs(jobs, "loss")] == ["6", "5", "4", "3", "2", "1", "0"]
    assert [j.dir for j in rank_jobs(jobs, "loss", mode="max")][0] == "0"


def test_report_files(sweep, tmp_path):
    report = write_report(sweep, metric="rewards/accuracies")
    out = sweep / "report"
    assert {p.name for p in report.files} == {"report.md", "report.csv", "heatmap.png", "metric_vs_gamma.png"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert len(rows) == 9
    assert [r["job"] for r in rows[:7]] == ["6", "5", "4", "3", "2", "1", "0"] and rows[0]["rank"] == "1"
    assert rows[0]["rewards/accuracies"] == "0.8" and rows[0]["hparams.learning_rate"] == "1e-06"
    assert rows[7]["status"] == "failed" and rows[7]["error"] == "ValueError: boom" and rows[7]["rank"] == ""
    assert rows[8]["job"] == "9" and rows[8]["status"] == "running"
    md = (out / "report.md").read_text()
    assert "9 jobs: 7 completed, 1 failed, 1 unfinished" in md and "## Failed or unfinished" in md and "ValueError: boom" in md
    assert "| 1 | 6 | 2.5 | 0.5 | 1e-06 | 0.8 |" in md and "![β × γ heatmap](heatmap.png)" in md
    best = "simpo train objective.beta=2.5 objective.gamma=0.5 hparams.learning_rate=1e-06 trainer.max_steps=2"
    assert report.best_line == best and best in md
    for name in ("heatmap.png", "metric_vs_gamma.png"):
        from matplotlib.image import imread

        image = imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.05  # drawn, not blank


def test_metric_choice_and_errors(sweep, tmp_path):
    report = write_report(sweep, metric="final_loss", out_dir=tmp_path / "r")
    assert report.ranked[0].dir == "6" and (tmp_path / "r" / "report.md").is_file()
    with pytest.raises(UserError, match="choose from: .*rewards/accuracies"):
        write_report(sweep, metric="rewards/accuarcies")
    with pytest.raises(UserError, match="--mode"):
        write_report(sweep, mode="best")
    with pytest.raises(UserError, match="no runs found"):
        write_report(tmp_path / "r")


def test_report_cli(sweep, tmp_path):
    proc = run_simpo(["report", str(sweep), "--metric", "rewards/margins"], tmp_path)
    lines = proc.stdout.splitlines()
    assert lines[-1] == "simpo train objective.beta=2.5 objective.gamma=0.5 hparams.learning_rate=1e-06 trainer.max_steps=2"
    assert any(l.startswith("failed: 7 ") and "ValueError: boom" in l for l in lines)
    bad = run_simpo(["report", str(tmp_path / "nowhere")], tmp_path, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "no such directory" in bad.stderr


def test_sweep_command_rejects_an_unknown_sweep(tmp_path):
    proc = run_simpo(["sweep", "simpo_gird", "trainer.max_steps=1"], tmp_path, check=False)
    assert proc.returncode == 2 and "unknown sweep 'simpo_gird'; choose from:" in proc.stderr
    assert "simpo_grid" in proc.stderr and proc.stderr.strip().count("\n") == 0


def _ifeval_eval(job: Path, when: str, prompt_loose: float, status: str = "completed") -> None:
    """What ``simpo eval model=<job> eval.benchmarks=[ifeval]`` leaves in ``<job>/eval/<date>/<time>/``."""
    d = job / "eval" / "2026-11-24" / when
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"stage": "eval", "status": status}))
    metrics = {k: {"value": prompt_loose - i / 10, "ci": [0, 1]}
               for i, k in enumerate(("prompt_loose", "prompt_strict", "instruction_loose", "instruction_strict"))}
    (d / "eval.json").write_text(json.dumps({"benchmarks": {"ifeval": {"ifeval": {"metrics": metrics}}}}))


def test_rank_a_sweep_by_an_ifeval_metric(sweep, tmp_path):
    """Each job's latest eval counts (job 1: 0.3 then 0.9 later); an eval's meta.json is not a job."""
    _ifeval_eval(sweep / "0", "10-00-00", 0.5)
    _ifeval_eval(sweep / "1", "10-00-00", 0.3)
    _ifeval_eval(sweep / "1", "11-00-00", 0.9)
    _ifeval_eval(sweep / "2", "10-00-00", 0.7)
    jobs = collect_jobs(sweep)
    assert [j.dir for j in jobs] == [*map(str, range(8)), "9"]
    assert jobs[1].metrics["ifeval/prompt_loose"] == 0.9 and jobs[1].metrics["ifeval/prompt_strict"] == 0.8
    assert [j.dir for j in rank_jobs(jobs, "ifeval/prompt_loose")] == ["1", "2", "0"]
    proc = run_simpo(["report", str(sweep), "--metric", "ifeval/prompt_loose"], tmp_path)
    assert "best ifeval/prompt_loose: 0.9 (1)" in proc.stdout
    assert proc.stdout.splitlines()[-1] == ("simpo train objective.beta=2.0 objective.gamma=1.0 "
                                            "hparams.learning_rate=5e-07 trainer.max_steps=2")
