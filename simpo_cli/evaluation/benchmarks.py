"""Benchmark prompt sets, decoding presets and the answer files of each external judge.

Three formats, each the judge tool's own input (checked against the tools' released files):

- ``alpaca_eval``: ``model_outputs.json``, a JSON list of ``{instruction, output, generator, dataset}``
  (tatsu-lab/alpaca_eval ``results/<model>/model_outputs.json``).
- ``arena_hard``: ``model_answer/<model_id>.jsonl``, one line per question: ``{question_id (str),
  answer_id, model_id, choices: [{index: 0, turns: [{content, token_len}]}], tstamp}``
  (lm-sys/arena-hard-auto ``data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl``).
- ``mt_bench``: ``model_answer/<model_id>.jsonl``: ``{question_id (int), answer_id, model_id,
  choices: [{index: 0, turns: [str, str]}], tstamp}`` (FastChat ``gen_model_answer.py``; its
  turns are plain strings, unlike Arena-Hard's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from simpo_cli.data.tokenize import plain_prompt
from simpo_cli.errors import DataError, UserError

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass
class BenchPrompt:
    """One benchmark item: ``turns`` are the user messages (MT-Bench: 2; the others: 1)."""

    id: str | int
    turns: list[str]
    category: str | None = None
    extra: dict = field(default_factory=dict)  # fields copied into the answer file (AlpacaEval dataset)


def resolve(path: str) -> Path:
    return ASSETS / path[4:] if path.startswith("pkg:") else Path(path)


def load_prompts(bench_cfg, limit: int | None = None) -> list[BenchPrompt]:
    """The first ``limit`` prompts (all when ``None``) of a benchmark's prompt file.

    Raises ``DataError`` naming the file, record and field for a malformed record."""
    path = resolve(bench_cfg.prompts)
    if not path.is_file():
        raise UserError(f"benchmark '{bench_cfg.name}': prompt file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text) if path.suffix == ".json" else [json.loads(l) for l in text.splitlines() if l.strip()]
    except json.JSONDecodeError as e:
        raise DataError(str(path), None, None, f"not valid JSON: {e}") from None
    prompts = []
    for i, rec in enumerate(records[:limit] if limit is not None else records):
        if bench_cfg.format == "alpaca_eval":
            if not isinstance(rec.get("instruction"), str):
                raise DataError(str(path), i, "instruction", "expected a string")
            prompts.append(BenchPrompt(i, [rec["instruction"]], rec.get("dataset"),
                                       {"dataset": rec.get("dataset")}))
            continue
        turns = rec.get("turns")
        if not isinstance(turns, list) or not turns:
            raise DataError(str(path), i, "turns", "expected a non-empty list")
        # Arena-Hard turns are {content}, MT-Bench turns are strings.
        turns = [t["content"] if isinstance(t, dict) else t for t in turns]
        if "question_id" not in rec:
            raise DataError(str(path), i, "question_id", "missing")
        prompts.append(BenchPrompt(rec["question_id"], turns, rec.get("category")))
    return prompts


def family_preset(bench_cfg, model_name: str) -> dict:
    """The ``families`` entry whose key is the longest prefix of ``model_name`` (``{}`` if none)."""
    best = ""
    for key in bench_cfg.families:
        if model_name.startswith(key) and len(key) > len(best):
            best = key
    return dict(bench_cfg.families[best]) if best else {}


def temperature_for(bench_cfg, prompt: BenchPrompt, model_name: str) -> float:
    """``temperature`` if set, else the category's (MT-Bench), else the model family's (AlpacaEval),
    else ``default_temperature``."""
    if bench_cfg.temperature is not None:
        return float(bench_cfg.temperature)
    if prompt.category in bench_cfg.category_temperature:
        return float(bench_cfg.category_temperature[prompt.category])
    fam = family_preset(bench_cfg, model_name)
    if fam.get("temperature") is not None:
        return float(fam["temperature"])
    return float(bench_cfg.default_temperature)


def max_new_tokens_for(bench_cfg, model_name: str, cap: int | None) -> int:
    n = family_preset(bench_cfg, model_name).get("max_new_tokens") or bench_cfg.max_new_tokens
    return min(n, cap) if cap else n


def render_prompt(tokenizer, messages: list[dict], template: bool = True) -> str:
    """The generation prompt, rendered as training rendered prompts (``simpo_cli.data.tokenize``):
    with ``template`` the tokenizer's chat template plus the assistant header, else the plain-text
    convention (``plain_prompt``) after BOS. ``template``: ``uses_template(tokenizer,
    data.chat_template)``."""
    if template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token or ""
    return bos + plain_prompt(messages)


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], temperatures: list[float], *, top_p: float,
             max_new_tokens: int, batch_size: int, stop_token_ids: list[int],
             template: bool = True) -> list[tuple[str, int]]:
    """Answer each conversation (its last message is the user's): returns ``(text, n_tokens)`` per
    conversation, in input order. Rows with the same temperature are batched together, left-padded;
    temperature 0 is greedy. ``n_tokens`` counts generated tokens up to (not including) the first
    stop token."""
    stops = sorted({tokenizer.eos_token_id, *stop_token_ids, *_config_eos(model)} - {None})
    order = sorted(range(len(conversations)), key=lambda i: temperatures[i])
    out: list[tuple[str, int] | None] = [None] * len(conversations)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            groups: dict[float, list[int]] = {}
            for i in chunk:
                groups.setdefault(temperatures[i], []).append(i)
            for temp, idx in groups.items():
                texts = [render_prompt(tokenizer, conversations[i], template) for i in idx]
                enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                sampling = {"do_sample": True, "temperature": temp, "top_p": top_p} if temp > 1e-4 else {"do_sample": False}
                seqs = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=stops,
                                      pad_token_id=tokenizer.pad_token_id, top_k=None, **sampling)
                for row, i in enumerate(idx):
                    new = seqs[row, enc.input_ids.shape[1]:].tolist()
                    cut = next((k for k, t in enumerate(new) if t in stops), len(new))
                    out[i] = (tokenizer.decode(new[:cut], skip_special_tokens=True).strip(), cut)
    finally:
        tokenizer.padding_side = side
    return out  # type: ignore[return-value]


def _config_eos(model) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def answer_benchmark(model, tokenizer, prompts: list[BenchPrompt], bench_cfg, model_name: str, *,
                     max_new_tokens: int, batch_size: int, stop_token_ids: list[int], template: bool = True):
    """Generate every turn of every prompt; turn k+1 sees the user turns and this model's answers
    1..k in its history (MT-Bench). Returns ``(answers, token_counts, temperatures)``: per prompt, a
    list with one entry per turn."""
    temps = [temperature_for(bench_cfg, p, model_name) for p in prompts]
    answers: list[list[str]] = [[] for _ in prompts]
    counts: list[list[int]] = [[] for _ in prompts]
    for turn in range(max(len(p.turns) for p in prompts)):
        active = [i for i, p in enumerate(prompts) if len(p.turns) > turn]
        convs = []
        for i in active:
            msgs = []
            for k in range(turn + 1):
                msgs.append({"role": "user", "content": prompts[i].turns[k]})
                if k < turn:
                    msgs.append({"role": "assistant", "content": answers[i][k]})
            convs.append(msgs)
        results = generate(model, tokenizer, convs, [temps[i] for i in active], top_p=bench_cfg.top_p,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, stop_token_ids=stop_token_ids,
                           template=template)
        for i, (text, n) in zip(active, results):
            answers[i].append(text)
            counts[i].append(n)
    return answers, counts, temps


def _answer_id(model_id: str, question_id, turns: list[str]) -> str:
    """Deterministic 22-character id (FastChat uses a random shortuuid; any unique string works)."""
    return hashlib.sha256(json.dumps([model_id, question_id, turns]).encode()).hexdigest()[:22]


def format_answers(fmt: str, prompts: list[BenchPrompt], answers: list[list[str]], counts: list[list[int]],
                   model_id: str, tstamp: float | None = None) -> tuple[str, str]:
    """``(relative path, file text)`` of the answer file in the judge tool's own format."""
    tstamp = time.time() if tstamp is None else tstamp
    if fmt == "alpaca_eval":
        rows = [{"instruction": p.turns[0], "output": a[0], "generator": model_id, "dataset": p.extra.get("dataset")}
                for p, a in zip(prompts, answers)]
        return "alpaca_eval/model_outputs.json", json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    lines = []
    for p, a, c in zip(prompts, answers, counts):
        if fmt == "arena_hard":
            turns = [{"content": t, "token_len": n} for t, n in zip(a, c)]
            folder = "arena-hard-v0.1"
        elif fmt == "mt_bench":
            turns, folder = list(a), "mt_bench"
        else:
            raise UserError(f"unknown benchmark format '{fmt}'; choose from: alpaca_eval, arena_hard, mt_bench")
        lines.append(json.dumps({"question_id": p.id, "answer_id": _answer_id(model_id, p.id, a),
                                 "model_id": model_id, "choices": [{"index": 0, "turns": turns}],
                                 "tstamp": tstamp}, ensure_ascii=False))
    return f"{folder}/model_answer/{model_id}.jsonl", "\n".join(lines) + "\n"
