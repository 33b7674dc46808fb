"""Shared test utilities: composing configs and running the real CLI on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Small enough for a 2-core CPU: 16 bundled pairs, 2 optimizer steps, short sequences.
FAST_TRAIN = [
    "trainer.max_steps=2",
    "data.max_samples=16",
    "hparams.max_length=128",
    "hparams.max_prompt_length=64",
    "hparams.per_device_train_batch_size=2",
    "trainer.logging_steps=1",
    "trainer.progress_bar=false",
]


def compose(overrides: list[str] | None = None, config_name: str = "config"):
    """Compose a stage config exactly as the CLI does (schemas registered, package conf dir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from simpo_cli.config.schema import CONF_DIR

    from simpo_cli.config.checks import group_overrides
    from simpo_cli.config.store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=group_overrides(config_name, overrides or []))


def run_simpo(args: list[str], tmp_path: Path, check: bool = True, timeout: int = 600,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m simpo_cli ARGS`` in ``tmp_path`` with a private cache; outputs land in
    ``tmp_path/outputs`` unless the args say otherwise."""
    full_env = {**os.environ, "SIMPO_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline",
                "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "simpo_cli", *args], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"simpo {' '.join(args)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_dirs(root: Path) -> list[Path]:
    """Every run directory (one holding meta.json) under ``root``."""
    return sorted(p.parent for p in Path(root).rglob("meta.json"))
