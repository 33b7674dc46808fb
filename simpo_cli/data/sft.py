"""Supervised fine-tuning data: conversations → token ids with a loss mask on assistant tokens.

Supported layouts (``data.format``, or ``auto`` = detected from the first record):

- ``messages``: a list of ``{role, content}`` (HuggingFaceH4/ultrachat_200k, OpenAI style);
- ``alpaca``: ``instruction``, optional ``input`` (appended to the instruction after a blank line, as
  LLaMA-Factory does), ``output``, optional ``system``;
- ``sharegpt``: a ``conversations`` list of ``{from, value}`` turns (``human``/``gpt``/``system``).

Every record becomes a message list with at least one assistant turn. The loss covers every
assistant turn (its content and the template's end-of-turn token), never the user/system turns or
the template's role headers: the same rule as TRL's ``assistant_only_loss``. A conversation that
opens with an assistant turn keeps that turn as context only.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jinja2 import TemplateError

from simpo_cli.data.cache import cached_dataset, data_fingerprint, tokenizer_fingerprint
from simpo_cli.data.records import as_message, count_drop, read_records
from simpo_cli.errors import DataError, UserError

log = logging.getLogger(__name__)
SFT_FORMATS = ("auto", "messages", "alpaca", "sharegpt")
CACHE_VERSION = "1"
IGNORE_INDEX = -100

# Zephyr's layout (the alignment-handbook's DEFAULT_CHAT_TEMPLATE), for tokenizers without a chat
# template: "<s><|user|>\n...</s>\n<|assistant|>\n...</s>". Each turn ends with EOS, so an SFT model
# learns to stop, and a conversation renders as a prefix of its continuation. Unlike the handbook's,
# it writes BOS itself (rendered text is tokenised without special tokens, here and in train) and
# puts no newline after the last turn.
ZEPHYR_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}"
    "{% if not loop.last %}{{ '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n<|assistant|>\n' }}{% endif %}"
)
BUILTIN_TEMPLATES = {"zephyr": ZEPHYR_TEMPLATE}


def resolve_template(spec: str) -> str:
    """``zephyr`` (a built-in name), a path to a ``.jinja`` file, or a literal Jinja template."""
    if spec in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[spec]
    if "{{" in spec or "{%" in spec:
        return spec
    path = Path(spec).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise UserError(f"default_chat_template: '{spec}' is neither a built-in "
                    f"({', '.join(BUILTIN_TEMPLATES)}), a Jinja template nor a file")


def ensure_chat_template(tokenizer, default: str) -> bool:
    """Give ``tokenizer`` the ``default`` template if it has none. Returns True when it was set
    (``save_pretrained`` then writes it next to the tokenizer, so later stages inherit it)."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = resolve_template(default)
    return True


# --------------------------------------------------------------------------- records → messages

def looks_like_pairs(record: dict, columns: Any) -> bool:
    return columns.chosen in record and columns.rejected in record


def looks_like_sft(record: dict, columns: Any) -> bool:
    """An SFT record (used by ``simpo train`` to say "this is SFT data" instead of "missing field")."""
    if looks_like_pairs(record, columns):
        return False
    return (getattr(columns, "messages", "messages") in record or columns.conversations in record
            or getattr(columns, "output", "output") in record)


def detect_sft_format(record: dict, columns: Any, source: str) -> str:
    if looks_like_pairs(record, columns):
        raise UserError(f"{source}: records hold preference pairs ('{columns.chosen}'/'{columns.rejected}'), "
                        "not conversations; `simpo sft` needs SFT data (data=alpaca-demo|ultrachat or "
                        "messages/alpaca/sharegpt records); use `simpo train` for pairs")
    if columns.messages in record:
        return "messages"
    if columns.conversations in record:
        return "sharegpt"
    if columns.output in record:
        return "alpaca"
    raise DataError(source, 0, None, f"cannot tell the SFT format: expected a '{columns.messages}', "
                    f"'{columns.conversations}' or '{columns.instruction}'/'{columns.output}' field "
                    f"(keys: {', '.join(sorted(record)) or 'none'})")


def _str(record: dict, name: str, source: str, index: int, required: bool) -> str:
    value = record.get(name)
    if value is None:
        if required:
            raise DataError(source, index, name, "missing field")
        return ""
    if not isinstance(value, str):
        raise DataError(source, index, name, f"expected a string, got {type(value).__name__}")
    return value


def to_messages(record: dict, fmt: str, columns: Any, source: str, index: int) -> list[dict]:
    """One raw record → ``[{"role", "content"}, ...]`` with at least one assistant turn.

    Raises ``DataError`` naming the source, record index and field when the record is malformed.
    """
    c = columns
    if fmt == "alpaca":
        prompt = _str(record, c.instruction, source, index, True)
        extra = _str(record, c.input, source, index, False)
        if extra:
            prompt = f"{prompt}\n\n{extra}" if prompt else extra
        messages = [{"role": "user", "content": prompt},
                    {"role": "assistant", "content": _str(record, c.output, source, index, True)}]
        system = _str(record, "system", source, index, False)
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return messages
    if fmt in ("messages", "sharegpt"):
        name = c.messages if fmt == "messages" else c.conversations
        turns = record.get(name)
        if not isinstance(turns, list) or not turns:
            raise DataError(source, index, name, "expected a non-empty message list")
        messages = [as_message(t, source, index, name) for t in turns]
        system = record.get("system")  # LLaMA-Factory's ShareGPT layout keeps it beside the turns
        if isinstance(system, str) and system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(source, index, name, "no assistant turn to learn from")
        return messages
    raise UserError(f"unknown data.format '{fmt}' for SFT; choose from: {', '.join(SFT_FORMATS)}")


# --------------------------------------------------------------------------- messages → tokens

@dataclass
class SFTTokens:
    input_ids: list[int]
    labels: list[int]  # the token id where the loss applies (assistant tokens), IGNORE_INDEX elsewhere
    truncated: bool = False


def encode_conversation(messages: list[dict], tokenizer) -> SFTTokens:
    """Render ``messages`` with the tokenizer's chat template and mark the assistant tokens.

    The rendered text is cut at turn boundaries: for assistant turn ``i`` the span is
    ``render(messages[:i+1])`` minus ``render(messages[:i], add_generation_prompt=True)``, i.e. the
    reply and the template's end-of-turn token, without the role header. Each piece is tokenised on
    its own (as ``encode_pair`` does for preference pairs), so no token straddles a boundary and the
    mask is exact. Works for any template that renders a conversation as a prefix of its
    continuation (Zephyr, Llama-3, Mistral, Gemma, ChatML); raises ``ValueError`` otherwise.
    """
    def render(turns: list[dict], generation_prompt: bool = False) -> str:
        try:
            return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)
        except TemplateError as e:  # e.g. "Conversation roles must alternate" from the template itself
            raise ValueError(f"the chat template rejects this conversation: {e}") from None

    full = render(messages)
    cuts: list[tuple[int, int]] = []  # [start, end) character spans of assistant replies
    for i, message in enumerate(messages):
        # A conversation that opens with an assistant turn (a greeting) has no prompt before it to
        # locate the role header against, so that turn is context, not a target.
        if message["role"] != "assistant" or i == 0:
            continue
        before = render(messages[:i], generation_prompt=True)
        upto = render(messages[: i + 1])
        if not (upto.startswith(before) and full.startswith(upto)):
            raise ValueError("the chat template does not render a conversation as a prefix of its "
                             "continuation, so assistant turns cannot be located; set model.chat_template")
        cuts.append((len(before), len(upto)))
    input_ids: list[int] = []
    labels: list[int] = []
    pos = 0
    for start, end in cuts:
        for text, learn in ((full[pos:start], False), (full[start:end], True)):
            if text:
                ids = tokenizer(text, add_special_tokens=False).input_ids
                input_ids += ids
                labels += ids if learn else [IGNORE_INDEX] * len(ids)
        pos = end
    if full[pos:]:
        ids = tokenizer(full[pos:], add_special_tokens=False).input_ids
        input_ids += ids
        labels += [IGNORE_INDEX] * len(ids)
    return SFTTokens(input_ids, labels)


def truncate_sft(tokens: SFTTokens, max_length: int) -> SFTTokens:
    """Keep the first ``max_length`` tokens (later turns are dropped, as in TRL's SFTTrainer)."""
    if len(tokens.input_ids) > max_length:
        tokens.input_ids, tokens.labels = tokens.input_ids[:max_length], tokens.labels[:max_length]
        tokens.truncated = True
    return tokens


# --------------------------------------------------------------------------- dataset

@dataclass
class SFTStats:
    records: int = 0
    kept: int = 0
    truncated: int = 0
    assistant_tokens: int = 0
    tokens: int = 0
    dropped: Counter | None = None

    def as_dict(self) -> dict:
        return {"records": self.records, "kept": self.kept, "truncated": self.truncated,
                "tokens": self.tokens, "assistant_tokens": self.assistant_tokens,
                "dropped": dict(self.dropped or {})}


def _tokenize_all(records, source: str, data_cfg, tokenizer, max_length: int) -> tuple[dict, SFTStats]:
    stats = SFTStats(dropped=Counter())
    cols: dict[str, list] = {"input_ids": [], "labels": [], "index": []}
    fmt = data_cfg.format
    for index, record in enumerate(records):
        if data_cfg.max_samples is not None and stats.records >= data_cfg.max_samples:
            break
        stats.records += 1
        if not isinstance(record, dict):
            raise DataError(source, index, None, "expected a JSON object")
        if fmt == "auto":
            fmt = detect_sft_format(record, data_cfg.columns, source)
        messages = to_messages(record, fmt, data_cfg.columns, source, index)
        reason = None
        if not any(m["content"].strip() for m in messages if m["role"] == "assistant"):
            reason = "empty assistant reply"
        else:
            try:
                tokens = truncate_sft(encode_conversation(messages, tokenizer), max_length)
            except ValueError as e:
                raise DataError(source, index, None, str(e)) from None
            stats.truncated += tokens.truncated
            learn = sum(t != IGNORE_INDEX for t in tokens.labels[1:])
            if not learn:
                reason = "no assistant tokens left after truncation to max_length"
        if reason:
            count_drop(stats.dropped, reason, data_cfg, source, index)
            continue
        stats.tokens += len(tokens.input_ids)
        stats.assistant_tokens += learn
        cols["input_ids"].append(tokens.input_ids)
        cols["labels"].append(tokens.labels)
        cols["index"].append(index)
    stats.kept = len(cols["index"])
    if stats.kept == 0:
        raise UserError(f"{source}: no usable conversations ({stats.records} read, dropped: "
                        f"{dict(stats.dropped) or 'none'})")
    return cols, stats


def build_sft_dataset(data_cfg, tokenizer, max_length: int, cache_dir: str | None, split: str | None = None):
    """Tokenised conversations as a ``datasets.Dataset`` with ``input_ids``, ``labels`` (token ids
    on assistant tokens, -100 elsewhere; same length) and ``index`` (the source record).

    Cached under ``cache_dir/tokenized-sft/<key>`` (data + tokenizer/template fingerprint + every
    setting that changes the tokens). Returns ``(dataset, stats)``.
    """
    split = split or data_cfg.split
    key = {
        "v": CACHE_VERSION, "data": data_fingerprint(data_cfg, split), "tok": tokenizer_fingerprint(tokenizer),
        "format": data_cfg.format, "columns": dict(data_cfg.columns), "max_samples": data_cfg.max_samples,
        "strict": data_cfg.strict, "max_length": max_length,
    }

    def build():
        records, source = read_records(data_cfg.path, split)
        return _tokenize_all(records, source, data_cfg, tokenizer, max_length)

    def load_stats(s: dict) -> SFTStats:
        return SFTStats(s["records"], s["kept"], s["truncated"], s["assistant_tokens"], s["tokens"],
                        Counter(s["dropped"]))

    ds, stats = cached_dataset(cache_dir, "tokenized-sft", key, build, load_stats)
    log.info("sft data %s[%s]: %d records, %d kept, dropped %s, truncated %d, %d tokens (%d assistant)",
             data_cfg.name, split, stats.records, stats.kept, dict(stats.dropped) or "none",
             stats.truncated, stats.tokens, stats.assistant_tokens)
    return ds, stats


def split_heldout(ds, size: float, seed: int):
    """Carve a held-out set from ``ds``: ``size`` < 1 is a fraction, >= 1 a number of records.
    Seeded, so the same records are held out on every run. Returns ``(train, heldout)``."""
    n = len(ds)
    count = int(round(size * n)) if size < 1 else int(size)
    if not 1 <= count < n:
        raise UserError(f"data.eval_size={size} leaves no training or no held-out records ({n} in all)")
    parts = ds.train_test_split(test_size=count, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


@dataclass
class SFTCollator:
    """Right-pad ``input_ids``/``labels`` into ``[B, L]`` tensors: ``input_ids`` (pad token),
    ``attention_mask`` (1 on real tokens) and ``labels`` (-100 on padding and non-assistant
    tokens; the model shifts them, so ``labels[:, t]`` is scored from the logits at ``t-1``)."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.tensor(f["input_ids"])
            attention_mask[i, :n] = 1
            labels[i, :n] = torch.tensor(f["labels"])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
