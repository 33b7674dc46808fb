"""Load tokenizers and causal LMs: from the Hub or a local directory (real runs), or a tiny model
built from a config in code (demo and tests, no network)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from simpo_cli.errors import UserError
from simpo_cli.files import META_FILE, MODEL_DIR

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parents[1] / "assets"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def run_model_dir(name_or_path: str | None) -> Path | None:
    """The saved model of a simpo run, when ``name_or_path`` points at one: a run directory (it
    holds ``meta.json`` and ``model/``) or that ``model/`` directory itself. ``None`` otherwise."""
    if not name_or_path:
        return None
    path = Path(name_or_path).expanduser()
    if (path / META_FILE).is_file() and (path / MODEL_DIR / "config.json").is_file():
        return path / MODEL_DIR
    if (path / "config.json").is_file() and (path.parent / META_FILE).is_file():
        return path
    return None


def model_location(model_cfg) -> str | None:
    """``model.name_or_path``, with a simpo run directory resolved to its ``model/``."""
    run_model = run_model_dir(model_cfg.name_or_path)
    return str(run_model) if run_model else model_cfg.name_or_path


def tokenizer_location(model_cfg) -> str:
    # A simpo run's model carries the tokenizer (and chat template) it was trained with: it wins
    # over the preset's model.tokenizer, so `simpo sft`'s template reaches train/eval unchanged.
    run_model = run_model_dir(model_cfg.name_or_path)
    if run_model is not None and (run_model / "tokenizer_config.json").is_file():
        if model_cfg.tokenizer and model_cfg.tokenizer != str(run_model):
            log.info("using the tokenizer saved with %s instead of model.tokenizer=%s",
                     run_model, model_cfg.tokenizer)
        return str(run_model)
    loc = model_cfg.tokenizer or model_cfg.name_or_path
    if loc is None:
        raise UserError(f"model '{model_cfg.name}': set model.tokenizer or model.name_or_path")
    return str(ASSETS / loc[4:]) if loc.startswith("pkg:") else loc


def load_tokenizer(model_cfg):
    """``AutoTokenizer`` from ``model.tokenizer`` (or ``model.name_or_path``); ``model.chat_template``
    replaces its template; a missing pad token becomes the EOS token (padding is always masked)."""
    loc = tokenizer_location(model_cfg)
    try:
        tok = AutoTokenizer.from_pretrained(loc, revision=model_cfg.revision,
                                            trust_remote_code=model_cfg.trust_remote_code)
    except OSError as e:
        raise UserError(f"cannot load tokenizer '{loc}': {str(e).splitlines()[0]}") from None
    if model_cfg.chat_template:
        tok.chat_template = model_cfg.chat_template
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tiny_model(tiny_cfg, tokenizer):
    """A randomly initialised model from ``model.tiny``; ``tiny.seed`` makes the weights identical
    on every call and machine (CPU float32)."""
    kwargs = dict(
        vocab_size=len(tokenizer), hidden_size=tiny_cfg.hidden_size,
        intermediate_size=tiny_cfg.intermediate_size, num_hidden_layers=tiny_cfg.num_hidden_layers,
        num_attention_heads=tiny_cfg.num_attention_heads, num_key_value_heads=tiny_cfg.num_key_value_heads,
        max_position_embeddings=tiny_cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    if tiny_cfg.architecture == "gemma2":
        kwargs.update(head_dim=tiny_cfg.hidden_size // tiny_cfg.num_attention_heads)
    config = AutoConfig.for_model(tiny_cfg.architecture, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny_cfg.seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model


def load_model(model_cfg, tokenizer):
    """The policy: ``AutoModelForCausalLM.from_pretrained(name_or_path)`` with the preset's dtype and
    attention implementation, or the tiny model when ``name_or_path`` is null."""
    if model_cfg.name_or_path is None:
        if model_cfg.tiny is None:
            raise UserError(f"model '{model_cfg.name}': set model.name_or_path or model.tiny")
        return build_tiny_model(model_cfg.tiny, tokenizer)
    if model_cfg.dtype not in DTYPES:
        raise UserError(f"model.dtype must be one of {', '.join(DTYPES)}, got '{model_cfg.dtype}'")
    kwargs = {"dtype": DTYPES[model_cfg.dtype], "revision": model_cfg.revision,
              "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(model_location(model_cfg), **kwargs)
    except OSError as e:
        raise UserError(f"cannot load model '{model_cfg.name_or_path}': {str(e).splitlines()[0]}") from None


def model_fingerprint(model_cfg, model) -> str:
    """Identifies the starting weights: the tiny config + seed, the Hub commit, or a local
    directory's file names and sizes (hashing 16 GB of weights on every run would be too slow)."""
    if model_cfg.name_or_path is None:
        return "tiny:" + hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str)
                                        .encode() + str(model_cfg.tiny.seed).encode()).hexdigest()[:16]
    path = Path(model_location(model_cfg))
    if path.is_dir():
        listing = sorted((p.name, p.stat().st_size) for p in path.iterdir() if p.is_file())
        return "local:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    commit = getattr(model.config, "_commit_hash", None)
    return f"hub:{model_cfg.name_or_path}@{commit or model_cfg.revision or 'main'}"
