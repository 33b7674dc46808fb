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
    from simpo_cli.config.recipes import finish
    from simpo_cli.config.store import register_configs

    register_configs()
    overrides = group_overrides(config_name, overrides or [])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return finish(hydra_compose(config_name=config_name, overrides=overrides), config_name, overrides)


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


def tiny_causal_lm(arch: str, vocab: int, dtype=None, attn: str = "eager", **extra):
    """A seeded 2-layer ``arch`` model (llama, mistral, qwen2, gemma2, ...) with ``vocab`` ids; for
    gemma2 a final-logit soft-cap of 2 (the real one is 30) so tanh is far from linear on these
    logits. ``extra`` overrides any config field (e.g. ``sliding_window``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    if arch == "gemma2":
        kwargs.update(head_dim=8, final_logit_softcapping=2.0, sliding_window=16)
    kwargs.update(extra)
    config = AutoConfig.for_model(arch, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    return model.to(dtype) if dtype is not None else model


def right_padded_rows(shapes, vocab: int, seed: int = 0):
    """``(input_ids, attention_mask, response_mask)``, one right-padded row per ``(prompt length,
    response length)`` in ``shapes``, random ids in ``[3, vocab)`` (0-2 are pad/BOS/EOS)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    width = max(p + r for p, r in shapes)
    ids = torch.zeros(len(shapes), width, dtype=torch.long)
    attn, resp = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (p, r) in enumerate(shapes):
        ids[i, : p + r] = torch.randint(3, vocab, (p + r,), generator=g)
        attn[i, : p + r] = 1
        resp[i, p : p + r] = 1
    return ids, attn, resp
