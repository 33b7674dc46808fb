"""Interruption and resume, end to end on the real CLI: SIGKILL mid-run + ``resume=auto`` gives the
uninterrupted loss trace exactly; SIGTERM writes a complete checkpoint and exits with one line."""

from __future__ import annotations

import json
import signal

import pytest

from tests.helpers import read_jsonl
from tests.e2e.reliability.procs import RUN, finish, sigkill_then_resume, start_simpo, wait_for


@pytest.mark.slow  # three training processes, ~40 s on 2 cores
def test_sigkill_then_resume_auto_matches_uninterrupted_run(tmp_path):
    def died_mid_run(killed):
        assert json.loads((killed / "meta.json").read_text())["status"] == "running"
        done = [r["step"] for r in read_jsonl(killed / "metrics.jsonl") if "loss" in r]
        assert max(done) < 10

    sigkill_then_resume([*RUN, "trainer.save_steps=2"], tmp_path, died_mid_run)


@pytest.mark.parametrize("sig", [signal.SIGTERM,
                                 pytest.param(signal.SIGINT, marks=pytest.mark.slow)],  # same code path
                         ids=lambda s: s.name)
def test_signal_writes_checkpoint_and_exits_with_one_line(sig, tmp_path):
    """Slurm preemption (SIGTERM) or Ctrl-C: checkpoint at the end of the step, one line, resumable."""
    run_dir = tmp_path / "run"
    proc = start_simpo([*RUN, "trainer.save_steps=0", f"run_dir={run_dir}"], tmp_path, step_sleep=0.4)
    wait_for(run_dir / "metrics.jsonl", proc)  # training has started (step 1 logged)
    proc.send_signal(sig)
    code, out = finish(proc)
    assert code == 128 + sig, out[-4000:]
    assert "Traceback" not in out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"simpo: error: interrupted by {sig.name} at step ")
    step = int(last.split("at step ")[1].split(":")[0])
    assert 1 <= step < 10
    ckpt = run_dir / "checkpoints" / f"checkpoint-{step}"
    assert str(ckpt) in last and "resume=auto" in last and f"run_dir={run_dir}" in last
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == step
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [ckpt.name]  # no .staging
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"

    code, out = finish(start_simpo([*RUN, "trainer.save_steps=0", f"run_dir={run_dir}", "resume=auto"],
                                   tmp_path))
    assert code == 0, out[-4000:]
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 11))  # the log continues where the checkpoint was taken
