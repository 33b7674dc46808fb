"""The GPU check's CPU-side parts: arguments, skipping with a reason, the JSON, and the step bodies
that also run on a CPU (bench/gpu_check.sh, bench/gpu_check.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bench.gpu_check as gc

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "bench" / "gpu_check.sh"


@pytest.fixture(autouse=True)
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPO_GPU_WORK", str(tmp_path / "work"))
    return tmp_path / "work"


def sh(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, **env}, timeout=300)


@pytest.mark.parametrize("args, message", [
    ((), "OUTDIR is required"),
    (("out", "--frobnicate"), "unknown option --frobnicate"),
    (("a", "b"), "one OUTDIR only"),
    (("out", "--budget", "soon"), "--budget takes whole seconds"),
    (("out", "--wheels", "/nonexistent/wheels"), "no such directory"),
    (("out", "--wheels"), "usage:"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_without_a_gpu_every_step_is_skipped_with_the_reason(tmp_path):
    proc = sh(tmp_path / "out", "--no-install", "--budget", "100")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert list(report["steps"]) == list(gc.STEPS) and report["budget_s"] == 100
    for name, step in report["steps"].items():
        assert step == {"status": "skipped", "reason": "no CUDA GPU visible (torch.cuda.is_available() is False)"}
        assert f"{name}: skipped: no CUDA GPU visible" in proc.stdout
    assert report["machine"]["torch"] and report["machine"]["python"]


def test_step_selection_and_unknown_steps(tmp_path):
    proc = sh(tmp_path / "out", "--no-install", "--steps", "fsdp")
    assert proc.returncode == 0
    assert list(json.loads((tmp_path / "out" / "gpu_check.json").read_text())["steps"]) == ["fsdp"]
    bad = subprocess.run([sys.executable, "-m", "bench.gpu_check", str(tmp_path / "o2"), "--steps", "fsdp,warp"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "unknown step(s) warp" in bad.stderr


def test_missing_packages_and_features_are_reasons(monkeypatch):
    monkeypatch.setattr(gc, "has", lambda module: False)
    assert "deepspeed is not installed" in gc.skip_reason("zero3")
    assert "vllm is not installed" in gc.skip_reason("vllm")
    assert "trl is not installed" in gc.skip_reason("bench")
    assert gc.skip_reason("fsdp") is None and gc.skip_reason("padding_free") is None
    monkeypatch.setattr(gc, "REPO", Path("/nonexistent"))
    assert "no adapter feature" in gc.skip_reason("qlora")


def test_a_step_that_raises_is_a_failure_with_its_type(tmp_path):
    got = gc.run_step("no-such-step", tmp_path, timeout=120)
    assert got["status"] == "failed" and got["reason"] == "ValueError: unknown step no-such-step"


def test_padding_free_step_body_on_cpu_bf16(tmp_path):
    """The padding-free comparison itself (the GPU run uses device="cuda"); bf16 sdpa on a CPU."""
    got = gc.padding_free_step(tmp_path, device="cpu")
    assert got["attention"] == "sdpa" and got["tokens"] < got["padded_cells"]
    assert got["status"] == "ok", got


@pytest.mark.slow
def test_train_smoke_step_body_on_cpu(tmp_path, work):
    """The train smoke's plumbing (run directory, meta.json, saved model) without a launcher."""
    smoke = [o for o in gc.TRAIN_SMOKE if o != "trainer.bf16=true"]
    got = gc.train_step("plain", tmp_path, ["trainer.use_cpu=true"], smoke=smoke)
    assert got["status"] == "ok" and got["steps"] == 2, got
    assert (work / "runs" / "plain" / "model" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.log", "work"]  # OUTDIR: results only
