"""Interruption and resume, end to end on the real CLI: SIGKILL mid-run + ``resume=auto`` gives the
uninterrupted loss trace exactly; SIGTERM writes a complete checkpoint and exits with one line."""

from __future__ import annotations

import json
import signal

import pytest

from tests.helpers import read_jsonl
from tests.e2e.reliability.conftest import start_simpo, wait_for

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


@pytest.mark.slow  # three training processes, ~40 s on 2 cores
def test_sigkill_then_resume_auto_matches_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = [*RUN, "trainer.save_steps=2"]
    reference = start_simpo([*args, f"run_dir={full}"], tmp_path)
    victim = start_simpo([*args, f"run_dir={killed}"], tmp_path, step_sleep=0.4)
    wait_for(killed / "checkpoints" / "checkpoint-4", victim)
    victim.send_signal(signal.SIGKILL)
    code, _ = finish(victim)
    assert code == -signal.SIGKILL
    assert json.loads((killed / "meta.json").read_text())["status"] == "running"  # died mid-run
    done = [r["step"] for r in read_jsonl(killed / "metrics.jsonl") if "loss" in r]
    assert max(done) < 10

    code, out = finish(start_simpo([*args, f"run_dir={killed}", "resume=auto"], tmp_path))
    assert code == 0, out[-4000:]
    meta = json.loads((killed / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["steps"] == 10
    resumed_from = int(meta["resumed_from"].rsplit("-", 1)[1])
    assert 4 <= resumed_from < 10

    code, out = finish(reference)
    assert code == 0, out[-4000:]
    expected = trace(full)
    assert [t[0] for t in expected] == list(range(1, 11))
    assert trace(killed) == expected  # exact: same data order, RNG, optimizer and scheduler state


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
