"""Experiment bookkeeping: one directory per run with its resolved config and ``meta.json``."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf

from simpo_cli.atomic import write_atomic, write_json  # noqa: F401 (re-exported)
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


class RunDir:
    """``config.yaml`` (resolved), ``meta.json``, ``metrics.jsonl``, ``model/``, ``checkpoints/``."""

    def __init__(self, path: str | Path, main: bool | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta: dict = {}
        # In a multi-process run only rank 0 writes; the others keep ``meta`` in memory only.
        if main is None:
            main = is_main_process()
        self.main = main

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def start(self, cfg, stage: str) -> None:
        if self.main:
            write_atomic(self.path / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
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
            write_json(self.path / "meta.json", self.meta)
