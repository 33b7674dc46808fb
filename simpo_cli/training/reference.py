"""The reference model π_ref for objectives whose spec says ``needs_reference`` (DPO, IPO, R-DPO, KTO).

Two modes (``reference.mode``):

- ``precompute`` (default): before training, one no-grad pass of the reference over the tokenised
  pairs adds ``ref_chosen_logps``/``ref_rejected_logps`` columns (summed nats, as
  ``simpo_cli.training.logps.sequence_logps`` computes them, chunked path included). No second model is in
  memory while training. The columns are cached under ``<paths.cache_dir>/reference/<key>``, the key
  built from the reference model's fingerprint, the data fingerprint and every tokenisation setting,
  so a rerun or a sweep over β/lr reuses them (TRL's ``precompute_ref_log_probs``, keyed like its
  ``(dataset fingerprint, model hash)``).
- ``live``: a frozen copy of the reference stays in memory and scores each batch in ``compute_loss``.

The reference is the starting policy unless ``reference.name_or_path`` names another checkpoint (it
must share the policy's tokenizer). With an adapter (``adapter=lora|qlora``) the starting policy's
reference is its base: the policy itself with the adapter disabled (``adapters_disabled``), in both
modes, so no second model exists; the cache key then also names the adapter kind (and QLoRA's
4-bit quantisation of the base, which changes its log-probs).

For objectives whose spec says ``needs_mismatched`` (KTO), each
example ``i`` also gets a mismatched row, prompt ``i`` + the response of example ``(i + 1) mod N``
(its chosen one; for unpaired records the one present), fixed before shuffling as TRL's
``KTOTrainer`` does; its reference log-prob is the ``ref_kl_logps`` column. The cache is written
atomically; every process of a multi-GPU run scores the whole dataset itself (no sharding).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from simpo_cli.data.cache import data_fingerprint, tokenizer_fingerprint
from simpo_cli.data.preference import PreferenceCollator
from simpo_cli.errors import UserError
from simpo_cli.models.adapters import adapters_disabled, enabled as adapter_enabled, has_adapter
from simpo_cli.models.loading import ModelSource, VocabularyMismatch, load_model, model_fingerprint, model_source
from simpo_cli.training.logps import sequence_logps

log = logging.getLogger(__name__)
MODES = ("precompute", "live")
CACHE_VERSION = "1"
KL_KEYS = ("kl_input_ids", "kl_attention_mask", "kl_response_mask")


@dataclass
class MismatchedCollator(PreferenceCollator):
    """``PreferenceCollator`` plus the mismatched rows of KTO's z_ref: ``kl_input_ids``,
    ``kl_attention_mask``, ``kl_response_mask`` ``[B, L']`` (prompt ``i`` + ``kl_response_input_ids``
    of example ``i``), and ``ref_kl_logps`` ``[B]`` when precomputed."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        rows = [list(f["prompt_input_ids"]) + list(f["kl_response_input_ids"]) for f in features]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        resp = torch.zeros_like(ids)
        for i, (f, r) in enumerate(zip(features, rows)):
            ids[i, : len(r)] = torch.tensor(r)
            attn[i, : len(r)] = 1
            resp[i, len(f["prompt_input_ids"]) : len(r)] = 1
        batch.update(zip(KL_KEYS, (ids, attn, resp)))
        if "ref_kl_logps" in features[0]:
            batch["ref_kl_logps"] = torch.tensor([f["ref_kl_logps"] for f in features], dtype=torch.float32)
        return batch


def make_collator(spec, pad_token_id: int) -> PreferenceCollator:
    """The collator the objective needs (mismatched rows only for ``needs_mismatched``)."""
    return MismatchedCollator(pad_token_id) if spec.needs_mismatched else PreferenceCollator(pad_token_id)


def add_mismatched_responses(ds):
    """Add ``kl_response_input_ids``: example ``i`` gets the response of example ``(i + 1) mod N``
    (its chosen one; for unpaired records, whichever side is present), as TRL's KTO rotates
    completions by one. With one example, its own other response (so the row is still not its
    own pair). The rotation is over the dataset, not the shuffled batch, so the reference
    log-probs of these rows can be precomputed and cached; z_ref is still a per-batch mean."""
    chosen, rejected = ds["chosen_input_ids"], ds["rejected_input_ids"]
    responses = [c if c else r for c, r in zip(chosen, rejected)]
    n = len(responses)
    column = [responses[(i + 1) % n] for i in range(n)] if n > 1 else [rejected[0] or chosen[0]]
    return ds.add_column("kl_response_input_ids", column)


def reference_model_config(cfg):
    """The model config of the reference: the policy's, with ``reference.name_or_path`` if set."""
    model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    if cfg.reference.name_or_path:
        model_cfg.name_or_path = cfg.reference.name_or_path
    return model_cfg


def reference_source(cfg, policy: ModelSource) -> ModelSource:
    """The reference's source: the policy's (its starting weights), or ``reference.name_or_path``
    resolved once (``models.loading.model_source``), in preflight through
    ``stages/train.model_sources``."""
    return model_source(reference_model_config(cfg)) if cfg.reference.name_or_path else policy


def load_reference(cfg, tokenizer, policy, source: ModelSource):
    """The reference model in eval mode with gradients off: the starting policy's weights (a copy)
    or ``reference.name_or_path``, loaded from ``source`` (``reference_source``). Raises
    ``UserError`` when its vocabulary differs from the policy's."""
    try:
        ref = load_model(reference_model_config(cfg), tokenizer, source=source)
    except VocabularyMismatch:  # the policy's tokenizer does not fit it: the same mistake, said for the reference
        ref = None
    if ref is None or ref.get_output_embeddings().weight.shape[0] != policy.get_output_embeddings().weight.shape[0]:
        raise UserError(f"reference.name_or_path '{cfg.reference.name_or_path}': vocabulary size differs "
                        "from the policy's; the reference must share the policy's tokenizer")
    ref.eval().requires_grad_(False)
    return ref


def reference_fingerprint(ref_cfg, model, source: ModelSource | None = None) -> str:
    """``model_fingerprint`` plus, for a local directory, its files' modification times: names and
    sizes alone do not change when a checkpoint is retrained into the same directory, and stale
    reference log-probs would silently bias every later run. ``source``: as for ``load_model``."""
    source = source if source is not None else model_source(ref_cfg)
    fingerprint = model_fingerprint(ref_cfg, model, source)
    path = Path(source.location) if source.kind in ("local", "run", "adapter") else None
    if path is not None and path.is_dir():
        stamps = sorted((p.name, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
        fingerprint += "+" + hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:12]
    return fingerprint


def cache_key(cfg, ref_fingerprint: str, tokenizer, split: str, mismatched: bool) -> str:
    """Reference model fingerprint + data fingerprint + tokenisation settings (+ mismatched rows)."""
    d, hp = cfg.data, cfg.hparams
    src = json.dumps({
        "v": CACHE_VERSION, "model": ref_fingerprint, "dtype": cfg.model.dtype,
        "autocast": "bf16" if cfg.trainer.bf16 else "fp16" if cfg.trainer.fp16 else None,
        "data": data_fingerprint(d, split), "tok": tokenizer_fingerprint(tokenizer),
        "format": d.format, "columns": OmegaConf.to_container(d.columns), "template": d.chat_template,
        "max_samples": d.max_samples, "strict": d.strict,
        "max_length": hp.max_length, "max_prompt_length": hp.max_prompt_length, "mismatched": mismatched,
        **_adapter_key(cfg),
    }, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:24]


def _adapter_key(cfg) -> dict:
    """The adapter's part of the cache key (nothing for full fine-tuning, so those keys are
    unchanged): the reference is then the adapter-disabled base, loaded 4-bit under QLoRA."""
    ad = cfg.get("adapter")
    if not adapter_enabled(ad) or cfg.reference.name_or_path:
        return {}
    key = {"adapter": ad.name, "reference": "base, adapter disabled"}
    if ad.name == "qlora":
        key["quantization"] = [ad.bnb_4bit_quant_type, ad.bnb_4bit_compute_dtype, ad.bnb_4bit_use_double_quant]
    return key


@torch.no_grad()
def compute_reference_logps(model, ds, collator, batch_size: int, device, path: str = "auto") -> dict:
    """One no-grad pass of ``model`` over ``ds`` in order: ``{"ref_chosen_logps": [N],
    "ref_rejected_logps": [N]}`` (summed nats, float lists), plus ``ref_kl_logps`` when the collator
    yields mismatched rows."""
    was_training = model.training
    model.eval()
    out: dict[str, list[float]] = {"ref_chosen_logps": [], "ref_rejected_logps": []}
    keys = ("input_ids", "attention_mask", "response_mask")
    for start in range(0, len(ds), batch_size):
        batch = collator([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
        b = batch["input_ids"].shape[0] // 2
        logps = sequence_logps(model, *(batch[k].to(device) for k in keys), path=path).logps.float().cpu()
        out["ref_chosen_logps"] += logps[:b].tolist()
        out["ref_rejected_logps"] += logps[b:].tolist()
        if KL_KEYS[0] in batch:
            kl = sequence_logps(model, *(batch[k].to(device) for k in KL_KEYS), path=path).logps
            out.setdefault("ref_kl_logps", []).extend(kl.float().cpu().tolist())
    model.train(was_training)
    return out


def _device(cfg) -> torch.device:
    if torch.cuda.is_available() and not cfg.trainer.use_cpu:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def precompute(cfg, spec, tokenizer, policy, ds, split: str, ref_fingerprint: str, ref_model=None):
    """``ds`` with the reference columns added, read from the cache when the key matches.

    ``ref_model`` ``None`` scores with ``policy`` itself (the starting policy is the reference),
    which is moved to the training device for the pass. Returns ``(dataset, info)``."""
    mismatched = spec.needs_mismatched
    key = cache_key(cfg, ref_fingerprint, tokenizer, split, mismatched)
    cache = Path(cfg.paths.cache_dir) / "reference" / key
    file = cache / "logps.json"
    columns = None
    if file.is_file():
        cached = json.loads(file.read_text())
        if cached.get("index") == list(ds["index"]):
            columns, hit = cached["columns"], True
    if columns is None:
        hit = False
        model = ref_model if ref_model is not None else policy
        device = _device(cfg)
        model.to(device)
        log.info("reference: scoring %d pairs (%s) before training", len(ds), split)
        # Same mixed precision as the training forward, so that at step 0 policy = reference
        # gives log-ratios of 0 up to rounding (TRL's precompute uses accelerator.autocast too).
        half = torch.bfloat16 if cfg.trainer.bf16 else torch.float16 if cfg.trainer.fp16 else None
        # ref_model None + an adapter: the base is the policy with its adapter disabled.
        with torch.autocast(device.type, dtype=half or torch.float32, enabled=half is not None), \
                adapters_disabled(model):
            columns = compute_reference_logps(model, ds, make_collator(spec, tokenizer.pad_token_id),
                                              cfg.hparams.per_device_train_batch_size, device)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"logps.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"index": list(ds["index"]), "columns": columns}))
        tmp.replace(file)  # atomic: a concurrent sweep job sees either nothing or the whole file
    else:
        log.info("reference: %d pairs (%s) from cache %s", len(ds), split, cache)
    for name, values in columns.items():
        ds = ds.add_column(name, values)
    return ds, {"key": key, "cache": str(cache), "cache_hit": hit}


def prepare_reference(cfg, spec, tokenizer, policy, datasets: dict, source: ModelSource | None = None):
    """Everything the reference needs before the Trainer exists.

    ``datasets`` maps split name → tokenised dataset (``None`` entries are passed through). Returns
    ``(datasets, ref_model, info)``: the datasets with mismatched rows (``needs_mismatched``) and, in
    ``precompute`` mode, the reference columns; ``ref_model`` is the live reference or ``None``;
    ``info`` goes to meta.json. ``source``: the reference's (``reference_source``; resolved here
    when omitted). Raises ``UserError`` for an unknown ``reference.mode``.
    """
    mode = cfg.reference.mode
    if mode not in MODES:
        raise UserError(f"reference.mode must be one of {', '.join(MODES)}, got '{mode}'")
    if spec.needs_mismatched:
        datasets = {k: ds if ds is None else add_mismatched_responses(ds) for k, ds in datasets.items()}
    # A policy with an adapter is its own reference (adapter disabled): no second model to load.
    second = cfg.reference.name_or_path or (mode == "live" and not has_adapter(policy))
    ref_cfg = reference_model_config(cfg)
    source = source if source is not None else model_source(ref_cfg)
    ref_model = load_reference(cfg, tokenizer, policy, source) if second else None
    fingerprint = reference_fingerprint(ref_cfg, ref_model if ref_model is not None else policy, source)
    info = {"mode": mode, "name_or_path": ref_cfg.name_or_path, "fingerprint": fingerprint,
            "adapter_disabled": ref_model is None and has_adapter(policy)}
    if mode == "live":
        return datasets, ref_model, info
    out = {}
    for split, ds in datasets.items():
        if ds is not None:
            ds, info[split] = precompute(cfg, spec, tokenizer, policy, ds, split, fingerprint, ref_model)
        out[split] = ds
    del ref_model  # precompute: no reference model in memory while training
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out, None, info
