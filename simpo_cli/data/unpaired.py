"""Unpaired (KTO-style) records: one completion per record with a desirable/undesirable ``label``.

Accepted layouts (``data.format=unpaired``, or ``auto`` when the first record has a ``label``):

- ``prompt`` (string or message list) + ``completion`` (string) + ``label`` (bool): TRL's
  unpaired preference format;
- ``messages`` (a conversation ending with the assistant's answer) + ``label``: LLaMA-Factory's
  ``kto_en_demo.json`` (bundled as ``pkg:data/kto_en_demo.json``).

Each record becomes one example of the usual preference dataset with one side empty: a
desirable record has its completion in ``chosen_input_ids`` and ``rejected_input_ids == []``, an
undesirable one the reverse. The collator, log-prob and reference code are unchanged (an empty
side scores 0 nats over 0 tokens); objectives that accept this (``ObjectiveSpec.accepts_unpaired``,
KTO) weigh only the side present. Paired data for KTO needs no conversion: each pair already is a
desirable and an undesirable record.
"""

from __future__ import annotations

import logging

from simpo_cli.data.cache import cached_dataset
from simpo_cli.data.cache import data_fingerprint, tokenizer_fingerprint
from simpo_cli.data.preference import DataStats, build_preference_dataset
from simpo_cli.data.records import as_message, as_text, count_drop, read_records
from simpo_cli.data.templates import uses_template
from simpo_cli.data.tokenize import encode_pair, truncate
from simpo_cli.errors import DataError, UserError
from simpo_cli.objectives import OBJECTIVES

log = logging.getLogger(__name__)
CACHE_VERSION = "1"
LABEL = "label"
COMPLETION = "completion"
MESSAGES = "messages"


def is_unpaired(data_cfg, split: str | None = None) -> bool:
    """``data.format == "unpaired"``, or ``auto`` and the first record has a ``label`` field."""
    if data_cfg.format == "unpaired":
        return True
    if data_cfg.format != "auto":
        return False
    records, _ = read_records(data_cfg.path, split or data_cfg.split)
    first = next(iter(records), None)
    return isinstance(first, dict) and LABEL in first and data_cfg.columns.chosen not in first


def normalise_unpaired(record: dict, columns, source: str, index: int) -> dict:
    """One raw record → ``{"prompt": [messages], "completion": str, "label": bool}``.

    Raises ``DataError`` naming the source, record index and field when the record is malformed."""
    if not isinstance(record, dict):
        raise DataError(source, index, None, "expected a JSON object")
    label = record.get(LABEL)
    if not isinstance(label, bool):
        raise DataError(source, index, LABEL, "expected true (desirable) or false (undesirable)")
    if COMPLETION in record:
        prompt = record.get(columns.prompt)
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list) and prompt:
            prompt = [as_message(t, source, index, columns.prompt) for t in prompt]
        else:
            raise DataError(source, index, columns.prompt, "expected a string or a non-empty message list")
        completion = as_text(record[COMPLETION], source, index, COMPLETION)
    elif MESSAGES in record:
        turns = record[MESSAGES]
        if not isinstance(turns, list) or len(turns) < 2:
            raise DataError(source, index, MESSAGES, "expected a conversation of at least two messages")
        turns = [as_message(t, source, index, MESSAGES) for t in turns]
        if turns[-1]["role"] != "assistant":
            raise DataError(source, index, MESSAGES, "the last message must be the assistant's")
        prompt, completion = turns[:-1], turns[-1]["content"]
    else:
        raise DataError(source, index, COMPLETION, f"missing field (or '{MESSAGES}')")
    if prompt[-1]["role"] != "user":
        raise DataError(source, index, columns.prompt, "the prompt must end with a user turn")
    return {"prompt": prompt, "completion": completion, "label": label}


def _tokenize_all(records, source, data_cfg, tokenizer, hp):
    template = uses_template(tokenizer, data_cfg.chat_template)
    stats = DataStats()
    cols = {"prompt_input_ids": [], "chosen_input_ids": [], "rejected_input_ids": [], "index": []}
    for index, record in enumerate(records):
        if data_cfg.max_samples is not None and stats.records >= data_cfg.max_samples:
            break
        stats.records += 1
        rec = normalise_unpaired(record, data_cfg.columns, source, index)
        reason = None
        if not rec["completion"].strip():
            reason = "empty response"
        else:
            pair = {"prompt": rec["prompt"], "chosen": rec["completion"], "rejected": rec["completion"]}
            try:
                tokens = encode_pair(pair, tokenizer, template)
            except ValueError as e:
                raise DataError(source, index, None, str(e)) from None
            tokens = truncate(tokens, hp.max_length, hp.max_prompt_length, tokenizer.bos_token_id)
            stats.prompt_truncated += tokens.prompt_truncated
            stats.response_truncated += tokens.response_truncated
            if not tokens.chosen:
                reason = "no response tokens left after truncation to max_length"
        if reason:
            count_drop(stats.dropped, reason, data_cfg, source, index)
            continue
        cols["prompt_input_ids"].append(tokens.prompt)
        cols["chosen_input_ids"].append(tokens.chosen if rec["label"] else [])
        cols["rejected_input_ids"].append([] if rec["label"] else tokens.chosen)
        cols["index"].append(index)
    stats.kept = len(cols["index"])
    if stats.kept == 0:
        raise UserError(f"{source}: no usable records ({stats.records} read, dropped: "
                        f"{dict(stats.dropped) or 'none'})")
    return cols, stats


def build_unpaired_dataset(data_cfg, tokenizer, hp, cache_dir: str | None, split: str | None = None):
    """Unpaired records as the preference dataset layout (one side empty per example), cached like
    ``build_preference_dataset``. Returns ``(dataset, stats)``."""
    split = split or data_cfg.split
    key = {
        "v": CACHE_VERSION, "unpaired": True, "data": data_fingerprint(data_cfg, split),
        "tok": tokenizer_fingerprint(tokenizer), "columns": dict(data_cfg.columns),
        "template": data_cfg.chat_template, "max_samples": data_cfg.max_samples, "strict": data_cfg.strict,
        "max_length": hp.max_length, "max_prompt_length": hp.max_prompt_length,
    }

    def build():
        records, source = read_records(data_cfg.path, split)
        return _tokenize_all(records, source, data_cfg, tokenizer, hp)

    ds, stats = cached_dataset(cache_dir, "tokenized", key, build, DataStats.from_dict)
    desirable = sum(1 for c in ds["chosen_input_ids"] if c)
    log.info("data %s[%s]: %d unpaired records, %d kept (%d desirable, %d undesirable), dropped %s",
             data_cfg.name, split, stats.records, stats.kept, desirable, stats.kept - desirable,
             dict(stats.dropped) or "none")
    return ds, stats


def build_dataset(data_cfg, tokenizer, hp, cache_dir: str | None, spec, split: str | None = None):
    """The training dataset for objective ``spec``: pairs, or unpaired records when the data is
    unpaired and the objective accepts them. Raises ``UserError`` for unpaired data with an
    objective that needs pairs."""
    if not is_unpaired(data_cfg, split):
        return build_preference_dataset(data_cfg, tokenizer, hp, cache_dir, split=split)
    if not spec.accepts_unpaired:
        ok = ", ".join(sorted(n for n, s in OBJECTIVES.items() if s.accepts_unpaired))
        raise UserError(f"{data_cfg.path}: unpaired records (completion + label) train only with "
                        f"objective={ok}; objective '{spec.name}' needs chosen/rejected pairs")
    return build_unpaired_dataset(data_cfg, tokenizer, hp, cache_dir, split=split)
