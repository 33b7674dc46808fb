"""Benchmark prompt sets, decoding presets and the answer files of each external judge.

Three formats, each the judge tool's own input (checked against the tools' released files):

- ``alpaca_eval``: ``model_outputs.json``, a JSON list of ``{instruction, output, generator, dataset}``
  (tatsu-lab/alpaca_eval ``results/<model>/model_outputs.json``).
- ``arena_hard``: ``model_answer/<model_id>.jsonl``, one line per question: ``{question_id (str),
  answer_id, model_id, choices: [{index: 0, turns: [{content, token_len}]}], tstamp}``
  (lm-sys/arena-hard-auto ``data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl``).
- ``ifeval``: ``ifeval/input_response_data.jsonl`` (``{prompt, response}``), scored by ``simpo eval``
  itself (``simpo_cli.evaluation.ifeval``).
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

from simpo_cli.data.ifeval import load_prompts as load_ifeval_prompts
from simpo_cli.data.templates import prompt_ids
from simpo_cli.errors import DataError, UserError
from simpo_cli.evaluation.ifeval import response_lines
from simpo_cli.models.generate import BatchedDecoder, Row, Sampler, row_key

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
    if bench_cfg.format == "ifeval":  # records with instruction_id_list / kwargs, scored by simpo eval itself
        return [BenchPrompt(p.key, [p.prompt], None, {"ifeval": p}) for p in load_ifeval_prompts(path, limit)]
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


def generate(model, tokenizer, conversations: list[list[dict]], temperatures: list[float], *, top_p: float,
             max_new_tokens: int, batch_size: int, stop_token_ids: list[int],
             template: bool = True, keys: list[int] | None = None, seed: int = 0,
             batch_invariant: bool = False) -> list[tuple[str, int]]:
    """Answer each conversation (its last message is the user's): returns ``(text, n_tokens)`` per
    conversation, in input order. ``n_tokens`` counts generated tokens up to (not including) the
    first stop token; temperature 0 is greedy. Conversation ``i`` samples with Gumbel noise keyed
    by ``keys[i]`` (default ``row_key(seed, i, 0)``), never a global RNG.

    Default: ``batch_size`` conversations per decoding batch, ordered by prompt length, finished
    answers leaving the batch (``simpo_cli.models.generate.BatchedDecoder``): the answers are the
    same for the same conversations, ``batch_size`` and thread count on the same machine.
    ``batch_invariant=True``: each conversation decoded on its own on one CPU thread
    (``Sampler``), so an answer depends only on its prompt, temperature and key."""
    stops = sorted({tokenizer.eos_token_id, *stop_token_ids, *_config_eos(model)} - {None})
    keys = keys if keys is not None else [row_key(seed, i, 0) for i in range(len(conversations))]
    sampler = Sampler(model, tokenizer, eos_ids=stops)
    ids = [prompt_ids(messages, tokenizer, template) for messages in conversations]
    temps = [temp if temp > 1e-4 else 0.0 for temp in temperatures]
    if batch_invariant:
        samples = [sampler.sample(p, [key], temperature=t, top_p=top_p, max_new_tokens=max_new_tokens)[0]
                   for p, t, key in zip(ids, temps, keys)]
    else:
        decoder = BatchedDecoder(sampler.model, sampler.eos, sampler.pad, batch_size)
        tokens = decoder.decode([Row(tuple(p), key, t) for p, t, key in zip(ids, temps, keys)],
                                max_new_tokens=max_new_tokens, top_p=top_p)
        samples = [sampler.to_sample(t, cut=False, max_new_tokens=max_new_tokens) for t in tokens]
    return [(s.text.strip(), s.num_tokens) for s in samples]


def _config_eos(model) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def answer_benchmark(model, tokenizer, prompts: list[BenchPrompt], bench_cfg, model_name: str, *,
                     max_new_tokens: int, batch_size: int, stop_token_ids: list[int], template: bool = True,
                     seed: int = 0, batch_invariant: bool = False):
    """Generate every turn of every prompt; turn k+1 sees the user turns and this model's answers
    1..k in its history (MT-Bench). Turn ``k`` of prompt ``i`` samples with key
    ``row_key(seed, i, k)``; ``batch_size``/``batch_invariant``: see ``generate``. Returns
    ``(answers, token_counts, temperatures)``: per prompt, a list with one entry per turn."""
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
                           template=template, keys=[row_key(seed, i, turn) for i in active],
                           batch_invariant=batch_invariant)
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
    if fmt == "ifeval":  # the reference evaluation_main.py's --input_response_data
        return "ifeval/input_response_data.jsonl", response_lines([p.extra["ifeval"] for p in prompts],
                                                                  [a[0] for a in answers])
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
            raise UserError(f"unknown benchmark format '{fmt}'; choose from: alpaca_eval, arena_hard, ifeval, mt_bench")
        lines.append(json.dumps({"question_id": p.id, "answer_id": _answer_id(model_id, p.id, a),
                                 "model_id": model_id, "choices": [{"index": 0, "turns": turns}],
                                 "tstamp": tstamp}, ensure_ascii=False))
    return f"{folder}/model_answer/{model_id}.jsonl", "\n".join(lines) + "\n"
