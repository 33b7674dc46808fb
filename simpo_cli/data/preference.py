"""Build the tokenised preference dataset (cached on disk) and batch it."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from simpo_cli.data.records import detect_format, is_local, normalise, read_records, resolve_path
from simpo_cli.data.tokenize import encode_pair, truncate, uses_template
from simpo_cli.errors import DataError, UserError

log = logging.getLogger(__name__)
CACHE_VERSION = "1"


@dataclass
class DataStats:
    """What happened to the records; logged and written to the run's meta.json."""

    records: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    prompt_truncated: int = 0
    response_truncated: int = 0

    def as_dict(self) -> dict:
        return {"records": self.records, "kept": self.kept, "dropped": dict(self.dropped),
                "prompt_truncated": self.prompt_truncated,
                "response_truncated": self.response_truncated}


def data_fingerprint(data_cfg, split: str) -> str:
    """Content hash of a local file, or ``id[split]`` for a Hub dataset."""
    if is_local(data_cfg.path):
        file = Path(resolve_path(data_cfg.path))
        if file.is_file():
            return "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()
        if file.is_dir():  # a directory of JSONL shards: hash names and contents in order
            from simpo_cli.data.records import jsonl_shards

            digest = hashlib.sha256()
            for shard in jsonl_shards(file):
                digest.update(shard.name.encode() + b"\0" + shard.read_bytes() + b"\0")
            return "sha256:" + digest.hexdigest()
    return f"hub:{data_cfg.path}[{split}]"


def tokenizer_fingerprint(tokenizer) -> str:
    from datasets.fingerprint import Hasher

    return Hasher.hash((tokenizer.get_vocab(), tokenizer.chat_template, tokenizer.bos_token_id,
                        tokenizer.eos_token_id))


def _tokenize_all(records, source: str, data_cfg, tokenizer, hp) -> tuple[dict, DataStats]:
    template = uses_template(tokenizer, data_cfg.chat_template)
    stats = DataStats()
    cols = {"prompt_input_ids": [], "chosen_input_ids": [], "rejected_input_ids": [], "index": []}
    fmt = data_cfg.format
    for index, record in enumerate(records):
        if data_cfg.max_samples is not None and stats.records >= data_cfg.max_samples:
            break
        stats.records += 1
        if not isinstance(record, dict):
            raise DataError(source, index, None, "expected a JSON object")
        if fmt == "auto":
            fmt = detect_format(record, data_cfg.columns)
        pair = normalise(record, fmt, data_cfg.columns, source, index)
        reason = None
        if not pair["chosen"].strip() or not pair["rejected"].strip():
            reason = "empty response"
        elif pair["chosen"] == pair["rejected"]:
            reason = "chosen identical to rejected"
        else:
            try:
                tokens = encode_pair(pair, tokenizer, template)
            except ValueError as e:
                raise DataError(source, index, None, str(e)) from None
            tokens = truncate(tokens, hp.max_length, hp.max_prompt_length, tokenizer.bos_token_id)
            stats.prompt_truncated += tokens.prompt_truncated
            stats.response_truncated += tokens.response_truncated
            if not tokens.chosen or not tokens.rejected:
                reason = "no response tokens left after truncation to max_length"
        if reason:
            if data_cfg.strict:
                raise DataError(source, index, None, f"{reason} (data.strict=true)")
            stats.dropped[reason] += 1
            continue
        cols["prompt_input_ids"].append(tokens.prompt)
        cols["chosen_input_ids"].append(tokens.chosen)
        cols["rejected_input_ids"].append(tokens.rejected)
        cols["index"].append(index)
    stats.kept = len(cols["index"])
    if stats.kept == 0:
        raise UserError(f"{source}: no usable preference pairs ({stats.records} read, dropped: "
                        f"{dict(stats.dropped) or 'none'})")
    return cols, stats


def build_preference_dataset(data_cfg, tokenizer, hp, cache_dir: str | None, split: str | None = None):
    """Tokenised pairs as a ``datasets.Dataset`` with columns ``prompt_input_ids``,
    ``chosen_input_ids``, ``rejected_input_ids`` (lists of ints) and ``index`` (the source record).

    Cached under ``cache_dir/tokenized/<key>``, the key built from the data fingerprint, the
    tokenizer fingerprint and every setting that changes the tokens. Returns ``(dataset, stats)``.
    """
    import datasets

    split = split or data_cfg.split
    key_src = json.dumps({
        "v": CACHE_VERSION, "data": data_fingerprint(data_cfg, split), "tok": tokenizer_fingerprint(tokenizer),
        "format": data_cfg.format, "columns": dict(data_cfg.columns), "template": data_cfg.chat_template,
        "max_samples": data_cfg.max_samples, "strict": data_cfg.strict,
        "max_length": hp.max_length, "max_prompt_length": hp.max_prompt_length,
    }, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    cache = Path(cache_dir) / "tokenized" / key if cache_dir else None
    if cache and (cache / "stats.json").is_file():
        stats_d = json.loads((cache / "stats.json").read_text())
        stats = DataStats(stats_d["records"], stats_d["kept"], Counter(stats_d["dropped"]),
                          stats_d["prompt_truncated"], stats_d["response_truncated"])
        ds = datasets.load_from_disk(str(cache / "dataset"))
    else:
        records, source = read_records(data_cfg.path, split)
        cols, stats = _tokenize_all(records, source, data_cfg, tokenizer, hp)
        ds = datasets.Dataset.from_dict(cols)
        if cache:
            tmp = cache.with_name(cache.name + ".tmp")
            ds.save_to_disk(str(tmp / "dataset"))
            (tmp / "stats.json").write_text(json.dumps(stats.as_dict()))
            if not cache.exists():
                tmp.rename(cache)
            ds = datasets.load_from_disk(str(cache / "dataset"))
    log.info("data %s[%s]: %d records, %d pairs kept, dropped %s, truncated prompts %d, responses %d",
             data_cfg.name, split, stats.records, stats.kept, dict(stats.dropped) or "none",
             stats.prompt_truncated, stats.response_truncated)
    return ds, stats


@dataclass
class PreferenceCollator:
    """Batch ``B`` pairs into one ``[2B, L]`` concatenation: rows ``0..B-1`` are prompt+chosen,
    rows ``B..2B-1`` prompt+rejected, right-padded with ``pad_token_id``.

    Returns ``input_ids``, ``attention_mask`` and ``response_mask`` (1 on response tokens: the
    tokens whose log-probs are scored), all ``[2B, L]`` long tensors, plus ``index`` ``[B]``.
    """

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows, resp = [], []
        for key in ("chosen_input_ids", "rejected_input_ids"):
            for f in features:
                rows.append(list(f["prompt_input_ids"]) + list(f[key]))
                resp.append([0] * len(f["prompt_input_ids"]) + [1] * len(f[key]))
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        response_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, m) in enumerate(zip(rows, resp)):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention_mask[i, : len(r)] = 1
            response_mask[i, : len(m)] = torch.tensor(m)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}
        if "index" in features[0]:
            batch["index"] = torch.tensor([f["index"] for f in features])
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.float32)
        return batch
