"""Helpers for the reliability tests: start the real CLI in the background and wait on its files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
