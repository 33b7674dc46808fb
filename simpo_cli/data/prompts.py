"""Read prompts (message histories ending with a user turn) for ``simpo generate-pairs`` from any
source ``simpo train`` reads: a preference dataset's replies are ignored, its history kept.

Layouts (``data.format``; ``auto`` detects from the first record): ``sharegpt`` (``conversations``),
``ultrafeedback`` (``chosen`` message list minus its answer, else the ``prompt`` string) and
``plain`` (``prompt``: a string or a message list).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from simpo_cli.data.records import as_message, read_records
from simpo_cli.errors import DataError


@dataclass(frozen=True)
class PromptRecord:
    index: int  # position in the source: keys the sampling seed and orders the output
    messages: list  # [{"role", "content"}], last one from the user
    prompt_id: str  # the source's prompt_id if it has one, else sha256 of the messages
    # the source record as read: its columns reach verifiable scorers (scorer=ifeval|function)
    record: dict = field(default_factory=dict, compare=False, hash=False, repr=False)


def detect_prompt_format(record: dict, columns) -> str:
    if columns.conversations in record:
        return "sharegpt"
    if isinstance(record.get(columns.chosen), list):
        return "ultrafeedback"
    return "plain"


def prompt_messages(record: dict, fmt: str, columns, source: str, index: int) -> list[dict]:
    """The prompt of one raw record as messages. Raises ``DataError`` naming source, record, field."""
    if fmt == "sharegpt":
        field, turns = columns.conversations, record.get(columns.conversations)
    elif fmt == "ultrafeedback" and isinstance(record.get(columns.chosen), list):
        field, turns = columns.chosen, record[columns.chosen][:-1]
        if not turns:  # a bare [assistant] list: fall back to the prompt string
            field, turns = columns.prompt, record.get(columns.prompt)
    elif fmt in ("plain", "ultrafeedback"):
        field, turns = columns.prompt, record.get(columns.prompt)
    else:
        raise DataError(source, None, None, f"unknown data.format '{fmt}' for prompts; choose from: "
                        "auto, plain, ultrafeedback, sharegpt")
    if isinstance(turns, str):
        turns = [{"role": "user", "content": turns}]
    if not isinstance(turns, list) or not turns:
        raise DataError(source, index, field, "missing prompt (expected a string or a non-empty message list)")
    messages = [as_message(t, source, index, field) for t in turns]
    if messages[-1]["role"] != "user":
        raise DataError(source, index, field, "the prompt must end with a user turn")
    return messages


def read_prompts(data_cfg) -> list[PromptRecord]:
    """Every prompt of ``data_cfg`` (``data.max_samples`` caps the count), in source order."""
    records, source = read_records(data_cfg.path, data_cfg.split)
    fmt, out = data_cfg.format, []
    for index, record in enumerate(records):
        if data_cfg.max_samples is not None and len(out) >= data_cfg.max_samples:
            break
        if not isinstance(record, dict):
            raise DataError(source, index, None, "expected a JSON object")
        if fmt == "auto":
            fmt = detect_prompt_format(record, data_cfg.columns)
        messages = prompt_messages(record, fmt, data_cfg.columns, source, index)
        pid = record.get("prompt_id")
        if not isinstance(pid, str):
            pid = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
        out.append(PromptRecord(index, messages, pid, record))
    if not out:
        raise DataError(source, None, None, "no prompts")
    return out
