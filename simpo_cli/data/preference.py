"""Build the tokenised preference dataset (cached on disk) and batch it."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from simpo_cli.data.cache import cached_dataset, data_fingerprint, tokenizer_fingerprint
from simpo_cli.data.records import detect_format, normalise, read_records
from simpo_cli.data.sft import looks_like_sft
from simpo_cli.data.templates import uses_template
from simpo_cli.data.tokenize import encode_pair, truncate
from simpo_cli.errors import DataError, UserError

log = logging.getLogger(__name__)
CACHE_VERSION = "2"  # 2: duplicate and malformed records dropped, not fatal


@dataclass
class DataStats:
    """What happened to the records; logged and written to the run's meta.json."""

    records: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    prompt_truncated: int = 0
    response_truncated: int = 0
    prompt_longer_than_max_length: int = 0  # kept, truncated to max_prompt_length

    def as_dict(self) -> dict:
        return {"records": self.records, "kept": self.kept, "dropped": dict(self.dropped),
                "prompt_truncated": self.prompt_truncated,
                "response_truncated": self.response_truncated,
                "prompt_longer_than_max_length": self.prompt_longer_than_max_length}

    @classmethod
    def from_dict(cls, d: dict) -> "DataStats":
        return cls(d["records"], d["kept"], Counter(d["dropped"]), d["prompt_truncated"],
                   d["response_truncated"], d.get("prompt_longer_than_max_length", 0))


def _pair_problem(pair: dict, c, fmt: str) -> tuple[str, str] | None:
    """(field, problem) for a normalised pair that cannot train, before tokenisation."""
    prompt_field = c.conversations if fmt == "sharegpt" else c.prompt
    if not any(m["content"].strip() for m in pair["prompt"] if m["role"] == "user"):
        return prompt_field, "empty prompt"
    for key, name in (("chosen", c.chosen), ("rejected", c.rejected)):
        if not pair[key].strip():
            return name, "empty response"
    if pair["chosen"] == pair["rejected"]:
        return c.rejected, "chosen identical to rejected"
    return None


def _tokenize_all(records, source: str, data_cfg, tokenizer, hp) -> tuple[dict, DataStats]:
    """Normalise, check and tokenise every record. A record that cannot train is dropped and
    counted in ``stats.dropped`` by kind: a malformed record under ``"<field>: <problem>"``
    (missing field, non-string value, malformed message list), otherwise ``empty prompt``,
    ``empty response``, ``chosen identical to rejected``, ``duplicate pair`` or ``no response
    tokens left after truncation to max_length``. The first record of each kind is logged with its
    file, record index and field. A prompt longer than ``max_length`` is truncated to
    ``max_prompt_length`` (TRL's and the SimPO repo's behaviour) and counted in
    ``prompt_longer_than_max_length``. ``data.strict`` turns the first drop, or over-long prompt,
    into a ``DataError``. Raises ``UserError`` when nothing is left."""
    template = uses_template(tokenizer, data_cfg.chat_template)
    stats = DataStats()
    cols = {"prompt_input_ids": [], "chosen_input_ids": [], "rejected_input_ids": [], "index": []}
    fmt = data_cfg.format
    c = data_cfg.columns
    seen: dict[str, int] = {}
    first: dict[str, int] = {}

    def report(kind: str, index: int, field: str | None, text: str) -> None:
        if data_cfg.strict:
            raise DataError(source, index, field, f"{text} (data.strict=true)")
        if kind not in first:
            first[kind] = index
            log.warning("data: %s", DataError(source, index, field, text))

    for index, record in enumerate(records):
        if data_cfg.max_samples is not None and stats.records >= data_cfg.max_samples:
            break
        stats.records += 1
        problem, malformed = None, False
        try:
            if not isinstance(record, dict):
                raise DataError(source, index, None, f"expected a JSON object, got {type(record).__name__}")
            if index == 0 and looks_like_sft(record, c):
                raise UserError(f"{source}: records are SFT conversations, not preference pairs "
                                "('chosen'/'rejected'); run `simpo sft` on them, or give pairs to `simpo train`")
            rec_fmt = detect_format(record, c) if fmt == "auto" else fmt
            pair = normalise(record, rec_fmt, c, source, index)
        except DataError as e:
            problem, malformed = (e.field, e.problem), True
        if problem is None:
            fmt = rec_fmt  # the first well-formed record fixes an auto-detected format
            problem = _pair_problem(pair, c, fmt)
        if problem is None:
            key = json.dumps([pair["prompt"], pair["chosen"], pair["rejected"]])
            if key in seen:
                problem = (None, f"duplicate pair (same as record {seen[key]})")
            else:
                seen[key] = index
        if problem is None:
            try:
                tokens = encode_pair(pair, tokenizer, template)
            except ValueError as e:
                raise DataError(source, index, None, str(e)) from None
            if len(tokens.prompt) > hp.max_length:
                stats.prompt_longer_than_max_length += 1
                report("prompt longer than max_length", index, c.conversations if fmt == "sharegpt" else c.prompt,
                       f"prompt longer than max_length ({len(tokens.prompt)} > {hp.max_length} tokens); "
                       f"truncated to max_prompt_length")
            tokens = truncate(tokens, hp.max_length, hp.max_prompt_length, tokenizer.bos_token_id)
            if not tokens.chosen or not tokens.rejected:
                problem = (None, "no response tokens left after truncation to max_length")
        if problem is not None:
            field, text = problem
            kind = re.sub(r" \(.*\)$", "", text)
            if malformed and field:
                kind = f"{field}: {kind}"
            report(kind, index, field, f"{text}; record dropped" if not data_cfg.strict else text)
            stats.dropped[kind] += 1
            continue
        stats.prompt_truncated += tokens.prompt_truncated
        stats.response_truncated += tokens.response_truncated
        cols["prompt_input_ids"].append(tokens.prompt)
        cols["chosen_input_ids"].append(tokens.chosen)
        cols["rejected_input_ids"].append(tokens.rejected)
        cols["index"].append(index)
    stats.kept = len(cols["index"])
    if stats.kept == 0:
        detail = "; ".join(f"{n} x {kind} (first: record {first[kind]})"
                           for kind, n in stats.dropped.most_common(3))
        raise UserError(f"{source}: no usable preference pairs: {stats.records} records read, all "
                        f"dropped ({detail or 'the file is empty'})")
    return cols, stats


def check_preference_data(data_cfg, tokenizer, hp, split: str | None = None) -> tuple[str, DataStats]:
    """Read, check and tokenise the data without caching it (``simpo validate``): returns the
    source name and the stats; raises ``DataError``/``UserError`` like a run would."""
    records, source = read_records(data_cfg.path, split or data_cfg.split)
    _, stats = _tokenize_all(records, source, data_cfg, tokenizer, hp)
    return source, stats


def build_preference_dataset(data_cfg, tokenizer, hp, cache_dir: str | None, split: str | None = None):
    """Tokenised pairs as a ``datasets.Dataset`` with columns ``prompt_input_ids``,
    ``chosen_input_ids``, ``rejected_input_ids`` (lists of ints) and ``index`` (the source record).

    Cached under ``cache_dir/tokenized/<key>``, the key built from the data fingerprint, the
    tokenizer fingerprint and every setting that changes the tokens. Returns ``(dataset, stats)``.
    """
    split = split or data_cfg.split
    key = {
        "v": CACHE_VERSION, "data": data_fingerprint(data_cfg, split), "tok": tokenizer_fingerprint(tokenizer),
        "format": data_cfg.format, "columns": dict(data_cfg.columns), "template": data_cfg.chat_template,
        "max_samples": data_cfg.max_samples, "strict": data_cfg.strict,
        "max_length": hp.max_length, "max_prompt_length": hp.max_prompt_length,
    }

    def build():
        records, source = read_records(data_cfg.path, split)
        return _tokenize_all(records, source, data_cfg, tokenizer, hp)

    ds, stats = cached_dataset(cache_dir, "tokenized", key, build, DataStats.from_dict)
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
