"""Checks that run before any model or data is loaded; every problem is reported at once."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

from simpo_cli.errors import ConfigError
from simpo_cli.objectives import OBJECTIVES

log = logging.getLogger(__name__)


def resolve_hparams(cfg) -> None:
    """Fold ``gamma_beta_ratio`` into ``gamma`` (γ = ratio × β) so the saved config states the γ used."""
    hp = cfg.hparams
    if hp.get("gamma_beta_ratio") is not None:
        hp.gamma = hp.gamma_beta_ratio * hp.beta


def validate_train(cfg) -> None:
    """Raise ``ConfigError`` listing every problem in a composed ``simpo train`` config."""
    problems: list[str] = []
    name = cfg.objective.get("name")
    spec = OBJECTIVES.get(name)
    if spec is None:
        problems.append(f"unknown objective '{name}'; choose from: {', '.join(sorted(OBJECTIVES))}")
    hp = cfg.hparams
    beta = hp.get("beta")
    if beta is None or beta <= 0:
        problems.append(f"hparams.beta must be > 0, got {beta}")
    if spec is not None and "gamma" in spec.uses:
        gamma = hp.get("gamma")
        if gamma is None or gamma < 0:
            problems.append(f"hparams.gamma must be >= 0, got {gamma}")
    if hp.learning_rate <= 0:
        problems.append(f"hparams.learning_rate must be > 0, got {hp.learning_rate}")
    elif hp.learning_rate > 1e-4 and cfg.model.name_or_path is not None:
        log.warning("hparams.learning_rate=%g is far above the paper's 3e-7..1e-6 for a pretrained "
                    "model; preference optimisation without a KL term can reward-hack", hp.learning_rate)
    if hp.max_prompt_length >= hp.max_length:
        problems.append(f"hparams.max_prompt_length ({hp.max_prompt_length}) must be < "
                        f"hparams.max_length ({hp.max_length})")
    if hp.per_device_train_batch_size < 1:
        problems.append("hparams.per_device_train_batch_size must be >= 1")
    if hp.get("global_batch_size") is not None and hp.global_batch_size % hp.per_device_train_batch_size:
        problems.append(f"hparams.global_batch_size ({hp.global_batch_size}) must be a multiple of "
                        f"per_device_train_batch_size ({hp.per_device_train_batch_size})")
    if OmegaConf.is_missing(cfg.data, "path"):
        problems.append(f"data '{cfg.data.name}' needs a path: data.path=/path/to/file.jsonl")
    if cfg.data.get("kind") == "sft":
        problems.append(f"data '{cfg.data.name}' holds SFT conversations, not preference pairs: run "
                        f"`simpo sft data={cfg.data.name}`, or pick pairs (data=demo-prefs|ultrafeedback|local)")
    path = cfg.model.name_or_path
    if path and path.startswith(("/", "./", "../")) and not Path(path).exists():
        problems.append(f"model.name_or_path: local path not found: {path}")
    out = Path(cfg.paths.output_root)
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        problems.append(f"paths.output_root is not writable: {out}")
    if problems:
        raise ConfigError(problems)


def validate_sft(cfg) -> None:
    """Raise ``ConfigError`` listing every problem in a composed ``simpo sft`` config."""
    problems: list[str] = []
    hp = cfg.hparams
    if cfg.data.get("kind") == "preference":
        problems.append(f"data '{cfg.data.name}' holds preference pairs, not conversations: run "
                        f"`simpo train data={cfg.data.name}`, or pick SFT data (data=alpaca-demo|ultrachat|local)")
    if hp.learning_rate <= 0:
        problems.append(f"hparams.learning_rate must be > 0, got {hp.learning_rate}")
    if hp.max_length < 2:
        problems.append(f"hparams.max_length must be >= 2, got {hp.max_length}")
    if hp.per_device_train_batch_size < 1:
        problems.append("hparams.per_device_train_batch_size must be >= 1")
    if hp.get("global_batch_size") is not None and hp.global_batch_size % hp.per_device_train_batch_size:
        problems.append(f"hparams.global_batch_size ({hp.global_batch_size}) must be a multiple of "
                        f"per_device_train_batch_size ({hp.per_device_train_batch_size})")
    if OmegaConf.is_missing(cfg.data, "path"):
        problems.append(f"data '{cfg.data.name}' needs a path: data.path=/path/to/file.jsonl")
    if cfg.data.get("eval_split") is None and not cfg.data.eval_size > 0:
        problems.append("set data.eval_size (> 0) or data.eval_split: the held-out loss needs records")
    path = cfg.model.name_or_path
    if path and path.startswith(("/", "./", "../")) and not Path(path).exists():
        problems.append(f"model.name_or_path: local path not found: {path}")
    out = Path(cfg.paths.output_root)
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        problems.append(f"paths.output_root is not writable: {out}")
    if problems:
        raise ConfigError(problems)
