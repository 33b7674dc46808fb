"""Experiment bookkeeping: one directory per run with its resolved config and ``meta.json``."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterator

from omegaconf import OmegaConf

from simpo_cli.errors import Interrupted
from simpo_cli.files import (CHECKPOINTS_DIR, CONFIG_FILE, META_FILE, METRICS_FILE, MODEL_DIR, write_atomic, write_json)
from simpo_cli.run.launch import is_main_process

PACKAGES = ("simpo-cli", "torch", "transformers", "datasets", "accelerate", "hydra-core", "omegaconf",
            "wandb", "typer", "trl", "deepspeed")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_sha() -> str | None:
    """The commit of the code being run, if it runs from a git checkout."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


class RunPaths:
    """Where each file of a run directory is (``simpo_cli/files.py`` names them)."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def meta_path(self) -> Path:
        return self.path / META_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR


class RunDir(RunPaths):
    """``config.yaml`` (resolved), ``meta.json``, ``metrics.jsonl``, ``model/``, ``checkpoints/``."""

    def __init__(self, path: str | Path, main: bool | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta: dict = {}
        # In a multi-process run only rank 0 writes; the others keep ``meta`` in memory only.
        if main is None:
            main = is_main_process()
        self.main = main

    def start(self, cfg, stage: str) -> None:
        if self.main:
            write_atomic(self.config_path, OmegaConf.to_yaml(cfg, resolve=True))
        self.meta = {"stage": stage, "status": "running", "started": now(), "ended": None,
                     "command": " ".join(sys.argv), "git_sha": git_sha(), "seed": cfg.get("seed"),
                     "versions": package_versions()}
        self.save_meta()

    def update(self, **fields) -> None:
        self.meta.update(fields)
        self.save_meta()

    def finish(self, status: str, **fields) -> None:
        self.update(status=status, ended=now(), **fields)

    def save_meta(self) -> None:
        if self.main:
            write_json(self.meta_path, self.meta)


@contextmanager
def open_run(run: RunDir, cfg, stage: str) -> Iterator[RunDir]:
    """The one skeleton of a stage's run: write ``config.yaml`` and ``meta.json`` (status
    ``running``), run the body, and on any exception record ``interrupted`` (``Interrupted``: resume
    it) or ``failed`` with the error before re-raising. The body records success itself, with its
    results: ``run.finish("completed", ...)``."""
    run.start(cfg, stage)
    try:
        yield run
    except BaseException as e:
        run.finish("interrupted" if isinstance(e, Interrupted) else "failed", error=f"{type(e).__name__}: {e}")
        raise


@dataclass
class RunRecord(RunPaths):
    """A finished or running stage's directory as a reader sees it (eval, report, sweeps): its
    ``meta.json`` (empty if absent or unreadable) and, on demand, its resolved config."""

    path: Path
    meta: dict

    @classmethod
    def read(cls, path: str | Path) -> "RunRecord":
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text())
        except (OSError, ValueError):
            meta = {}
        return cls(path, meta if isinstance(meta, dict) else {})

    @property
    def status(self) -> str | None:
        return self.meta.get("status")

    def config(self):
        """The run's resolved config (``None`` without ``config.yaml``)."""
        return OmegaConf.load(self.config_path) if self.config_path.is_file() else None
