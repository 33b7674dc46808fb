"""Multi-process runs: ``simpo <stage> distributed=ddp|fsdp|zero2|zero3 [distributed.num_processes=N]``
re-launches itself through ``accelerate launch``.

The command the user typed is composed once, in a parent process. The parent decides the run
directory (``${now:...}`` would differ between processes started a second apart), validates the
config, writes ``<run>/accelerate.yaml`` and runs::

    accelerate launch --config_file <run>/accelerate.yaml -m simpo_cli <stage> <the same overrides> \\
        hydra.run.dir=<run> hydra.output_subdir=null

Every launched process sees ``SIMPO_LAUNCHED=1`` (and the launcher's ``LOCAL_RANK``/``WORLD_SIZE``)
and runs the stage in place, so nothing re-launches twice. Started by ``torchrun`` or
``accelerate launch`` directly (``LOCAL_RANK`` set), ``simpo`` also runs in place.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from simpo_cli.files import write_atomic
from simpo_cli import optional
from simpo_cli.errors import UserError

log = logging.getLogger(__name__)

LAUNCHED_ENV = "SIMPO_LAUNCHED"


def inside_launcher() -> bool:
    """True in a process started by our re-launch, ``accelerate launch`` or ``torchrun``."""
    return bool(os.environ.get(LAUNCHED_ENV)) or "LOCAL_RANK" in os.environ


def world_size() -> int:
    """The number of training processes (``WORLD_SIZE`` as set by the launcher; 1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of the launch (or a plain single process): the one that writes run files. Read from
    ``RANK`` so it is known before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def mixed_precision(trainer_cfg) -> str:
    """accelerate's ``mixed_precision`` from ``trainer.bf16``/``trainer.fp16``: one source of truth, so
    DeepSpeed's ``bf16.enabled`` never disagrees with the Trainer's."""
    return "bf16" if trainer_cfg.bf16 else "fp16" if trainer_cfg.fp16 else "no"


def num_processes(cfg) -> int:
    """``distributed.num_processes``, or one per visible GPU (at least 1) when it is ``null``."""
    n = cfg.distributed.num_processes
    return n if n is not None else max(torch.cuda.device_count(), 1)


def accelerate_config(cfg) -> dict:
    """The accelerate config file's content for ``cfg.distributed``: its ``accelerate`` block plus
    ``num_processes`` (``null``: one per visible GPU, at least 1), ``mixed_precision``, ``use_cpu``
    (``trainer.use_cpu`` or no GPU) and ``main_process_port`` (0: a free one).

    Raises ``UserError`` when the option has no accelerate block (``distributed=none``)."""
    dist = cfg.distributed
    if dist.get("accelerate") is None:
        raise UserError(f"distributed={dist.name} has no accelerate config (distributed.accelerate is null)")
    acc = OmegaConf.to_container(dist.accelerate, resolve=True)
    if dist.num_processes is not None and dist.num_processes < 1:
        raise UserError(f"distributed.num_processes must be >= 1, got {dist.num_processes}")
    acc["num_processes"] = num_processes(cfg)
    acc["mixed_precision"] = mixed_precision(cfg.trainer)
    acc["use_cpu"] = bool(cfg.trainer.use_cpu or not torch.cuda.is_available())
    acc["main_process_port"] = dist.main_process_port
    return acc


def check_environment(cfg) -> None:
    """Refuse, in one line, what would otherwise fail later in every process: FSDP and DeepSpeed
    without a GPU (accelerate's plugins need a CUDA device; on CPU use ``distributed=ddp``), and
    DeepSpeed without the ``deepspeed`` package. Raises ``UserError``."""
    acc = cfg.distributed.get("accelerate") or {}
    kind = acc.get("distributed_type")
    if kind in ("FSDP", "DEEPSPEED") and (cfg.trainer.use_cpu or not torch.cuda.is_available()):
        raise UserError(f"distributed={cfg.distributed.name} needs CUDA GPUs (none visible or trainer.use_cpu=true); "
                        "on CPU use distributed=ddp")
    if kind == "DEEPSPEED" and not optional.installed("deepspeed"):
        raise UserError(f"distributed={cfg.distributed.name} needs DeepSpeed: pip install 'simpo-cli[deepspeed]'")


def write_accelerate_config(cfg, path: Path) -> dict:
    """Write ``accelerate_config(cfg)`` as YAML to ``path`` (atomically); returns the dict."""
    acc = accelerate_config(cfg)
    write_atomic(Path(path), yaml.safe_dump(acc, sort_keys=False))
    return acc


def _override_value(text: str) -> str:
    # Quoted, so a path with spaces or '=' is one Hydra value.
    if "'" in text or "\\" in text:
        raise UserError(f"the run directory may not contain quotes or backslashes: {text}")
    return f"'{text}'"


def launch_command(stage: str, config_file: Path, overrides: list[str], run_dir: Path) -> list[str]:
    """``python -m accelerate.commands.launch ... -m simpo_cli <stage> <overrides> hydra.run.dir=<run_dir>``.

    Same interpreter as the parent (no PATH lookup of ``accelerate``). The launched processes
    write no ``.hydra/`` of their own: the parent's records the command as typed."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file), "--quiet",
            "-m", "simpo_cli", stage, *overrides,
            f"hydra.run.dir={_override_value(str(run_dir))}", "hydra.output_subdir=null"]


def relaunch(stage: str, cfg) -> None:
    """Run ``stage`` on ``cfg.distributed``'s processes and wait; the current Hydra job's run
    directory and task overrides are handed to every process. Exits with the launcher's status if
    it fails (the processes print their own errors)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir).resolve()
    config_file = run_dir / "accelerate.yaml"
    acc = write_accelerate_config(cfg, config_file)
    cmd = launch_command(stage, config_file, list(hc.overrides.task), run_dir)
    env = {**os.environ, LAUNCHED_ENV: "1"}
    if acc["use_cpu"]:
        # Without it a CPU process group is never formed: every rank would train alone.
        env["ACCELERATE_USE_CPU"] = "true"
    log.info("distributed=%s: %d processes (%s) via accelerate launch; run directory %s", cfg.distributed.name,
             acc["num_processes"], acc["distributed_type"], run_dir)
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        print(f"simpo: error: distributed {stage} failed (accelerate launch exited {rc}); "
              f"see the processes' output above and {run_dir}", file=sys.stderr)
        raise SystemExit(rc)


def launches(stage: str, precheck: Callable | None = None) -> Callable:
    """Decorate a stage's Hydra task: with ``distributed`` other than ``none`` and outside a launcher,
    run ``precheck(cfg)`` (user errors surface here, once, before any process starts) and re-launch
    instead of running the task."""

    def decorate(task: Callable) -> Callable:
        @functools.wraps(task)
        def wrapped(cfg):
            dist = cfg.get("distributed")
            if inside_launcher() and not is_main_process():
                logging.getLogger("simpo_cli").setLevel(logging.WARNING)  # progress lines once, from rank 0
            if dist is None or dist.name == "none" or inside_launcher():
                return task(cfg)
            check_environment(cfg)
            if precheck is not None:
                precheck(cfg)
            return relaunch(stage, cfg)

        return wrapped

    return decorate
