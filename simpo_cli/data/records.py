"""Read preference records and normalise them to one shape.

Supported layouts (``data.format``, or ``auto`` = detected from the first record):

- ``plain``: ``prompt``, ``chosen``, ``rejected`` strings (TRL's standard, UltraFeedback sample);
- ``ultrafeedback``: HuggingFaceH4/ultrafeedback_binarized, ``chosen``/``rejected`` message lists
  ending with the assistant answer (the history before it is the prompt);
- ``sharegpt``: LLaMA-Factory's pairs, a ``conversations`` history of ``{from, value}`` turns and
  ``chosen``/``rejected`` as ``{from: gpt, value}``;
- ``implicit``: TRL's implicit-prompt pairs, Anthropic HH-RLHF style: no ``prompt`` field,
  ``chosen``/``rejected`` are whole ``"\n\nHuman: ...\n\nAssistant: ..."`` transcripts that share
  the conversation up to the last ``Assistant:`` turn. The shared part becomes the prompt's
  user/assistant messages (so the model's chat template applies); the rest is the response.

Every pair becomes ``{"prompt": [messages], "chosen": str, "rejected": str}``.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import datasets

from simpo_cli.errors import DataError, UserError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
TURN_RE = re.compile(r"\n\n(Human|Assistant):")


def resolve_path(path: str) -> str:
    """``pkg:<rel>`` → the bundled file under simpo_cli/assets; anything else unchanged."""
    return str(ASSETS / path[4:]) if path.startswith("pkg:") else path


def is_local(path: str) -> bool:
    p = resolve_path(path)
    return p.endswith(LOCAL_SUFFIXES) or Path(p).exists() or p.startswith(("/", "./", "../"))


def read_records(path: str, split: str) -> tuple[Iterable[dict], str]:
    """Yield raw records from a local file or a Hub dataset; also returns a display name.

    Raises ``UserError`` for a missing file or a malformed JSON/JSONL file (naming ``file:line``).
    """
    resolved = resolve_path(path)
    if not is_local(path):
        return datasets.load_dataset(resolved, split=split), f"{resolved}[{split}]"
    file = Path(resolved)
    if file.is_dir():
        return read_jsonl_dir(file), str(file)
    if not file.is_file():
        raise UserError(f"data file not found: {file}")
    if file.suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files=str(file), split="train"), str(file)
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".jsonl" or not text.lstrip().startswith("["):
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{file}:{lineno}: malformed JSON line ({e.msg})") from None
        return records, str(file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{file}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise UserError(f"{file}: expected a JSON list of records, got {type(data).__name__}")
    return data, str(file)


def jsonl_shards(directory: Path) -> list[Path]:
    """The ``*.jsonl`` files directly in ``directory``, sorted by name (``simpo generate-pairs``
    writes ``pairs-00000.jsonl``, ``pairs-00001.jsonl``, ...)."""
    return sorted(p for p in Path(directory).glob("*.jsonl") if p.is_file())


def read_jsonl_dir(directory: Path) -> list[dict]:
    """Records of every JSONL shard in ``directory``, in shard order. Raises ``UserError`` for a
    directory without shards or a malformed line (naming ``file:line``)."""
    shards = jsonl_shards(directory)
    if not shards:
        raise UserError(f"{directory}: a data directory must hold *.jsonl shards, found none")
    records = []
    for shard in shards:
        for lineno, line in enumerate(shard.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{shard}:{lineno}: malformed JSON line ({e.msg})") from None
    return records


def detect_format(record: dict, columns: Any) -> str:
    if columns.conversations in record:
        return "sharegpt"
    if isinstance(record.get(columns.chosen), list):
        return "ultrafeedback"
    chosen = record.get(columns.chosen)
    if columns.prompt not in record and isinstance(chosen, str) and chosen.lstrip("\n").startswith("Human:") \
            and ASSISTANT in chosen:
        return "implicit"
    return "plain"


def split_implicit(chosen: str, rejected: str, source: str, index: int, columns: Any) -> tuple[list[dict], str, str]:
    """An HH-RLHF transcript pair → ``(prompt messages, chosen answer, rejected answer)``.

    The prompt is the longest shared prefix cut back to its last ``"\n\nAssistant:"``; its
    ``Human:``/``Assistant:`` turns become user/assistant messages. Raises ``DataError`` when the
    pair diverges before its last assistant turn (one side carries more turns) or has no turns.
    """
    shared = os.path.commonprefix([chosen, rejected])
    cut = shared.rfind(ASSISTANT)
    if cut < 0 or not chosen.lstrip("\n").startswith("Human:"):
        raise DataError(source, index, columns.chosen,
                        "implicit-prompt pair without a shared '\\n\\nHuman: ... \\n\\nAssistant:' prefix")
    answers = [text[cut + len(ASSISTANT):].strip() for text in (chosen, rejected)]
    for name, text in zip((columns.chosen, columns.rejected), answers):
        if TURN_RE.search(text):
            raise DataError(source, index, name, "the pair diverges before its last Assistant turn")
    head = "\n\n" + chosen[:cut].lstrip("\n")
    pieces = TURN_RE.split(head)  # ["", role, text, role, text, ...]
    prompt = [{"role": "user" if role == "Human" else "assistant", "content": text.strip()}
              for role, text in zip(pieces[1::2], pieces[2::2])]
    return prompt, answers[0], answers[1]


def count_drop(dropped: Counter, reason: str, data_cfg, source: str, index: int) -> None:
    """Count a record that cannot train under ``reason``; with ``data.strict=true`` stop on it
    instead (``DataError`` naming the source and record)."""
    if data_cfg.strict:
        raise DataError(source, index, None, f"{reason} (data.strict=true)")
    dropped[reason] += 1


def as_text(value: Any, source: str, index: int, field: str) -> str:
    """``value`` if it is a string, else ``DataError`` naming the source, record and field."""
    if not isinstance(value, str):
        raise DataError(source, index, field, f"expected a string, got {type(value).__name__}")
    return value


def as_message(turn: Any, source: str, index: int, field: str) -> dict:
    """A ``{role, content}`` message from an OpenAI-style or ShareGPT (``from``/``value``) turn;
    ``DataError`` naming the source, record and field otherwise."""
    if not isinstance(turn, dict):
        raise DataError(source, index, field, "expected a message object")
    role = turn.get("role", SHAREGPT_ROLES.get(turn.get("from")))
    content = turn.get("content", turn.get("value"))
    if role not in ("system", "user", "assistant") or not isinstance(content, str):
        raise DataError(source, index, field, "malformed message (needs role/content or from/value)")
    return {"role": role, "content": content}


def _field(record: dict, name: str, source: str, index: int) -> Any:
    if name not in record or record[name] is None:
        raise DataError(source, index, name, "missing field")
    return record[name]


def normalise(record: dict, fmt: str, columns: Any, source: str, index: int) -> dict:
    """One raw record → ``{"prompt": [messages], "chosen": str, "rejected": str}``.

    Raises ``DataError`` naming the source, record index and field when the record is malformed.
    """
    c = columns
    if fmt == "plain":
        prompt = [{"role": "user", "content": as_text(_field(record, c.prompt, source, index),
                                                   source, index, c.prompt)}]
        chosen = as_text(_field(record, c.chosen, source, index), source, index, c.chosen)
        rejected = as_text(_field(record, c.rejected, source, index), source, index, c.rejected)
    elif fmt == "ultrafeedback":
        turns = {}
        for name in (c.chosen, c.rejected):
            value = _field(record, name, source, index)
            if not isinstance(value, list) or not value:
                raise DataError(source, index, name, "expected a non-empty message list")
            turns[name] = [as_message(t, source, index, name) for t in value]
            if turns[name][-1]["role"] != "assistant":
                raise DataError(source, index, name, "the last message must be the assistant's")
        prompt = turns[c.chosen][:-1]
        if not prompt and c.prompt in record:
            prompt = [{"role": "user", "content": as_text(record[c.prompt], source, index, c.prompt)}]
        chosen, rejected = turns[c.chosen][-1]["content"], turns[c.rejected][-1]["content"]
    elif fmt == "sharegpt":
        history = _field(record, c.conversations, source, index)
        if not isinstance(history, list) or not history:
            raise DataError(source, index, c.conversations, "expected a non-empty turn list")
        prompt = [as_message(t, source, index, c.conversations) for t in history]
        chosen = as_message(_field(record, c.chosen, source, index), source, index, c.chosen)["content"]
        rejected = as_message(_field(record, c.rejected, source, index), source, index,
                            c.rejected)["content"]
    elif fmt == "implicit":
        chosen = as_text(_field(record, c.chosen, source, index), source, index, c.chosen)
        rejected = as_text(_field(record, c.rejected, source, index), source, index, c.rejected)
        prompt, chosen, rejected = split_implicit(chosen, rejected, source, index, c)
    else:
        raise UserError(f"unknown data.format '{fmt}'; choose from: auto, plain, ultrafeedback, sharegpt, implicit")
    if not prompt or prompt[-1]["role"] != "user":
        raise DataError(source, index, c.conversations if fmt == "sharegpt" else c.prompt,
                        "the prompt must end with a user turn")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
