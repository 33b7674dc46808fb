"""Helpers for the reliability tests: start the real CLI in the background, wait on its files, and\nkill it mid-run then resume it against an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import read_jsonl

REPO = Path(__file__).resolve().parents[3]


def start_simpo(args: list[str], tmp_path: Path, step_sleep: float = 0.0) -> subprocess.Popen:
    """``simpo ARGS`` in the background (``tests.e2e.reliability.slow_simpo``: each micro-step sleeps
    ``step_sleep`` s), stdout+stderr captured."""
    env = {**os.environ, "SIMPO_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "SIMPO_TEST_STEP_SLEEP": str(step_sleep),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "tests.e2e.reliability.slow_simpo", *args], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Poll until ``path`` exists; fail (with the process output) if the process ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"process exited {proc.returncode} before {path} appeared:\n{proc.stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {path}")
        time.sleep(0.02)


# 16 pairs / batch 2 = 8 steps an epoch, so 10 steps cross an epoch boundary (data order resumes
# mid-epoch and reshuffles after it). A checkpoint every 2 steps.
RUN = ["train", "trainer.max_steps=10", "data.max_samples=16", "hparams.max_length=128",
       "hparams.max_prompt_length=64", "hparams.per_device_train_batch_size=2",
       "trainer.logging_steps=1", "trainer.progress_bar=false", "trainer.evaluate=false",
       "trainer.save_model=false"]
TRACE_KEYS = ("step", "loss", "grad_norm", "learning_rate", "rewards/margins", "logps/chosen")


def trace(run_dir):
    return [tuple(r[k] for k in TRACE_KEYS) for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def sigkill_then_resume(args: list[str], tmp_path: Path, check_killed=lambda killed: None) -> Path:
    """Run ``simpo ARGS`` uninterrupted and, beside it, a copy killed with SIGKILL once
    ``checkpoint-4`` exists; ``check_killed(killed_dir)`` inspects the dead run; then ``resume=auto``
    it and assert it completes from a checkpoint with exactly the uninterrupted loss trace.
    ``args`` must save a checkpoint every 2 steps over 10 steps (``RUN`` + ``trainer.save_steps=2``)."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    reference = start_simpo([*args, f"run_dir={full}"], tmp_path)
    victim = start_simpo([*args, f"run_dir={killed}"], tmp_path, step_sleep=0.4)
    wait_for(killed / "checkpoints" / "checkpoint-4", victim)
    victim.send_signal(signal.SIGKILL)
    code, _ = finish(victim)
    assert code == -signal.SIGKILL
    check_killed(killed)

    code, out = finish(start_simpo([*args, f"run_dir={killed}", "resume=auto"], tmp_path))
    assert code == 0, out[-4000:]
    meta = json.loads((killed / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["steps"] == 10
    assert 4 <= int(meta["resumed_from"].rsplit("-", 1)[1]) < 10

    code, out = finish(reference)
    assert code == 0, out[-4000:]
    expected = trace(full)
    assert [t[0] for t in expected] == list(range(1, 11))
    assert trace(killed) == expected  # exact: same data order, RNG, optimizer and scheduler state
    return killed
