"""Sweeps: many ``simpo train`` jobs from one command (``simpo train -m``), where a failed job does
not stop the sweep and a rerun into the same sweep directory skips the jobs already completed.

The grid itself is config: ``conf/sweep/<name>.yaml`` sets ``hydra.sweeper.params`` (Hydra's basic
sweeper, or Optuna with ``override /hydra/sweeper: optuna``) and runs through Hydra's launcher
(local, or Slurm with ``hydra/launcher=slurm``). This module adds what Hydra leaves to the task:

- ``sweep_job`` wraps the training task. In a multirun it
  1. skips the job when a run with the same overrides already completed in the sweep directory
     (``sweep.skip_completed``; the key is the job's override list, order-insensitive);
  2. catches any ``Exception`` of the job, records it in the run's ``meta.json``
     (``status: failed``, ``error``) and returns ``None``, so the launcher goes on to the next job;
  3. stamps ``overrides`` into ``meta.json`` and writes ``sweep.json`` (what this attempt did with
     the job: completed | failed | skipped) next to it.
- ``SweepSummary`` (a Hydra callback, registered in conf/config.yaml) prints the attempt's
  failures when the sweep ends; ``failed_jobs()`` lets the CLI exit non-zero.

Files in a job directory ``<hydra.sweep.dir>/<hydra.job.num>/``: ``meta.json`` (the run record,
written by ``RunDir``), ``sweep.json`` (this attempt), ``.previous/`` (the record of an earlier
attempt in the same directory, moved aside before a job is run again).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from simpo_cli.errors import UserError
from simpo_cli.files import CONFIG_FILE, META_FILE, METRICS_FILE
from simpo_cli.files import write_json
from simpo_cli.run.rundir import RunRecord, now

log = logging.getLogger(__name__)

ATTEMPT_FILE = ".simpo_sweep.json"  # in the sweep directory: the id of the running attempt
JOB_FILE = "sweep.json"  # in each job directory
RUN_RECORD = (META_FILE, METRICS_FILE, CONFIG_FILE)  # moved aside before a job reruns

_last_failures: list[dict] | None = None  # set by SweepSummary.on_multirun_end (main process)


def override_key(overrides) -> tuple[str, ...]:
    """Jobs are the same job when their override lists are equal up to order and spaces."""
    return tuple(sorted(str(o).replace(" ", "") for o in overrides))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def job_overrides(job_dir: Path, meta: dict | None = None) -> list[str] | None:
    """The overrides of the run recorded in ``job_dir``: stamped in ``meta.json`` by ``sweep_job``,
    else Hydra's ``.hydra/overrides.yaml``."""
    meta = meta if meta is not None else (RunRecord.read(job_dir).meta or None)
    if meta and meta.get("overrides") is not None:
        return list(meta["overrides"])
    path = job_dir / ".hydra" / "overrides.yaml"
    if path.is_file():
        return [str(o) for o in OmegaConf.load(path)]
    return None


def find_completed(sweep_dir: Path, overrides, own_dir: Path | None = None) -> Path | None:
    """The directory of a completed run under ``sweep_dir`` whose overrides equal ``overrides``.

    ``own_dir`` (the job's own directory, whose ``.hydra/overrides.yaml`` Hydra has already
    rewritten for the new job) only counts when its ``meta.json`` carries stamped overrides.
    """
    key = override_key(overrides)
    own = Path(own_dir).resolve() if own_dir else None
    candidates = run_records(sweep_dir)
    if own is not None:  # prefer the job's own directory: the usual case on a rerun
        candidates.sort(key=lambda p: p.parent.resolve() != own)
    for path in candidates:
        meta = _read_json(path)
        if not meta or meta.get("status") != "completed":
            continue
        if path.parent.resolve() == own and meta.get("overrides") is None:
            continue
        found = job_overrides(path.parent, meta)
        if found is not None and override_key(found) == key:
            return path.parent
    return None


def run_records(sweep_dir: Path) -> list[Path]:
    """Every ``meta.json`` under ``sweep_dir``, leaving out records moved to ``.previous/``."""
    return sorted(p for p in Path(sweep_dir).rglob(META_FILE) if ".previous" not in p.parts)


def metric_value(meta_or_result: Any, metric: str) -> float | None:
    """``metric`` from a finished run: ``final_loss``, or a pair metric after training
    (``rewards/accuracies`` ...). Takes a ``TrainResult`` or a ``meta.json`` dict."""
    if isinstance(meta_or_result, dict):
        final_loss, after = meta_or_result.get("final_loss"), meta_or_result.get("pairs_after") or {}
    else:
        final_loss, after = meta_or_result.final_loss, meta_or_result.after or {}
    value = final_loss if metric == "final_loss" else after.get(metric)
    if value is None and _in_multirun():
        log.warning("sweep.metric=%s is not among this run's metrics (final_loss, %s)", metric,
                    ", ".join(after) or "no pair metrics: trainer.evaluate=false?")
    return None if value is None else float(value)


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _export_slurm_distributed_env() -> None:
    """One process per GPU under hydra-submitit-launcher (``tasks_per_node`` = GPUs): export
    MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from Slurm for torch.distributed/accelerate."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def _move_previous_attempt(job_dir: Path, overrides) -> None:
    """Move an earlier run record in ``job_dir`` to ``.previous/`` so the new attempt starts clean
    (``metrics.jsonl`` is appended to, and a half-written ``meta.json`` would outlive a failure
    that happens before training starts)."""
    meta = RunRecord.read(job_dir).meta or None
    if meta is None and not (job_dir / METRICS_FILE).exists():
        return
    old = job_overrides(job_dir, meta) if meta and meta.get("overrides") is not None else None
    if meta and meta.get("status") == "completed" and old is not None and override_key(old) != override_key(overrides):
        log.warning("%s held a completed run with other overrides (%s); it is moved to .previous/. "
                    "Use a new hydra.sweep.dir when the grid changes.", job_dir, " ".join(old))
    previous = job_dir / ".previous"
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir()
    for name in RUN_RECORD:
        if (job_dir / name).exists():
            os.replace(job_dir / name, previous / name)


def _record(job_dir: Path, attempt: str | None, job_num, overrides, status: str, **fields) -> None:
    """Stamp ``meta.json`` with the overrides (and, for a failure before the run started, create
    it) and write this attempt's ``sweep.json``."""
    meta_path = job_dir / META_FILE
    if status != "skipped":
        meta = _read_json(meta_path) or {"stage": "train", "started": now(), "command": " ".join(sys.argv)}
        meta["overrides"] = list(overrides)
        if status == "failed" and meta.get("status") != "failed":
            meta.update(status="failed", ended=now(), error=fields.get("error"))
        write_json(meta_path, meta)
    write_json(job_dir / JOB_FILE, {"attempt": attempt, "job": job_num, "status": status,
                                    "overrides": list(overrides), "time": now(), **fields})


def sweep_job(task: Callable) -> Callable:
    """Decorate the ``@hydra.main`` training task: in a multirun, skip completed jobs and turn a
    failure into a record instead of an exception (see the module docstring). Single runs pass
    straight through."""

    @functools.wraps(task)
    def wrapped(cfg):
        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return task(cfg)
        hc = HydraConfig.get()
        job_dir, sweep_dir = Path(hc.runtime.output_dir), Path(hc.sweep.dir)
        overrides, num = list(hc.overrides.task), hc.job.num
        attempt = (_read_json(sweep_dir / ATTEMPT_FILE) or {}).get("attempt")
        label = f"job #{num} ({' '.join(overrides)})"
        _export_slurm_distributed_env()
        rank_zero = _is_rank_zero()

        if cfg.sweep.skip_completed:
            done = find_completed(sweep_dir, overrides, own_dir=job_dir)
            if done is not None:
                log.info("%s: skipped, already completed in %s", label, done)
                if rank_zero:
                    _record(job_dir, attempt, num, overrides, "skipped", completed_in=str(done))
                return metric_value(RunRecord.read(done).meta, cfg.sweep.metric)
        if rank_zero:
            _move_previous_attempt(job_dir, overrides)
        try:
            value = task(cfg)
        except Exception as e:
            if os.environ.get("SIMPO_DEBUG"):
                raise
            error = f"{type(e).__name__}: {e}"
            # A user mistake is one line; anything else keeps its traceback (in the job's log too).
            log.error("%s failed: %s", label, error, exc_info=not isinstance(e, UserError))
            if rank_zero:
                _record(job_dir, attempt, num, overrides, "failed", error=error)
            return None
        if rank_zero:
            _record(job_dir, attempt, num, overrides, "completed")
        return value

    return wrapped


class SweepSummary(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): gives each multirun an attempt id
    and, when it ends, lists the jobs of this attempt that failed. Runs in the process that
    launched the sweep, so it also sees jobs that ran elsewhere (Slurm) through their files."""

    def __init__(self) -> None:
        self.attempt: str | None = None

    def on_multirun_start(self, config, **kwargs) -> None:
        global _last_failures
        _last_failures = None
        self.attempt = uuid.uuid4().hex[:12]
        sweep_dir = Path(str(config.hydra.sweep.dir))
        write_json(sweep_dir / ATTEMPT_FILE, {"attempt": self.attempt, "started": now()})

    def on_multirun_end(self, config, **kwargs) -> None:
        global _last_failures
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = [j for j in (_read_json(p) for p in sorted(sweep_dir.rglob(JOB_FILE)))
                if j and j.get("attempt") == self.attempt]
        jobs.sort(key=lambda j: (j.get("job") is None, j.get("job")))
        counts = {s: sum(j.get("status") == s for j in jobs) for s in ("completed", "skipped", "failed")}
        _last_failures = [j for j in jobs if j.get("status") == "failed"]
        log.info("sweep %s: %d completed, %d skipped (already completed), %d failed. "
                 "Report: simpo report %s", sweep_dir, counts["completed"], counts["skipped"],
                 counts["failed"], sweep_dir)
        for j in _last_failures:
            log.error("failed: job #%s (%s): %s", j.get("job"), " ".join(j.get("overrides", [])), j.get("error"))


def failed_jobs() -> list[dict]:
    """The failed jobs of the last multirun in this process (empty after a single run)."""
    return list(_last_failures or [])
