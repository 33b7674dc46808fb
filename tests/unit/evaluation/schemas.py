"""Schemas of the external judges' answer files, written from the formats documented in
/work/shared/data/README.md ("Benchmarks") and checked against the real released files there.

Each ``check_*`` raises ``AssertionError`` naming the record and field that does not fit.
"""

from __future__ import annotations

import json
from pathlib import Path


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise AssertionError(f"{where}: {msg}")


def check_alpaca_eval(path: Path) -> list[dict]:
    """AlpacaEval ``model_outputs.json``: a JSON list of {instruction: str, output: str,
    generator: str, dataset: str (optional)}; one generator per file."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    _need(isinstance(rows, list) and rows, str(path), "expected a non-empty JSON list")
    for i, r in enumerate(rows):
        for key in ("instruction", "output", "generator"):
            _need(isinstance(r.get(key), str), f"{path}[{i}].{key}", "expected a string")
        _need(r.get("dataset") is None or isinstance(r["dataset"], str), f"{path}[{i}].dataset", "expected a string")
    _need(len({r["generator"] for r in rows}) == 1, str(path), "more than one generator in one file")
    return rows


def _check_model_answer(path: Path, qid_type: type, turn_check) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    _need(bool(rows), str(path), "no answers")
    for i, r in enumerate(rows):
        where = f"{path}:{i + 1}"
        _need(isinstance(r.get("question_id"), qid_type), f"{where}.question_id", f"expected {qid_type.__name__}")
        for key in ("answer_id", "model_id"):
            _need(isinstance(r.get(key), str) and r[key], f"{where}.{key}", "expected a non-empty string")
        _need(isinstance(r.get("tstamp"), (int, float)), f"{where}.tstamp", "expected a number")
        choices = r.get("choices")
        _need(isinstance(choices, list) and choices, f"{where}.choices", "expected a non-empty list")
        for c in choices:
            _need(isinstance(c.get("index"), int), f"{where}.choices.index", "expected an int")
            _need(isinstance(c.get("turns"), list) and c["turns"], f"{where}.choices.turns", "expected a non-empty list")
            for t in c["turns"]:
                turn_check(t, f"{where}.choices.turns")
    _need(len({r["question_id"] for r in rows}) == len(rows), str(path), "duplicate question_id")
    _need(len({r["model_id"] for r in rows}) == 1, str(path), "more than one model_id in one file")
    return rows


def check_arena_hard(path: Path) -> list[dict]:
    """Arena-Hard ``model_answer/<model>.jsonl``: {question_id: str, answer_id, model_id,
    choices: [{index, turns: [{content: str, ...}]}], tstamp}."""
    def turn(t, where):
        _need(isinstance(t, dict) and isinstance(t.get("content"), str), where, "expected {content: str, ...}")
        _need("token_len" not in t or isinstance(t["token_len"], int), where, "token_len must be an int")

    return _check_model_answer(path, str, turn)


def check_mt_bench(path: Path) -> list[dict]:
    """MT-Bench ``model_answer/<model>.jsonl``: {question_id: int, answer_id, model_id,
    choices: [{index, turns: [str, str]}], tstamp}."""
    def turn(t, where):
        _need(isinstance(t, str), where, "expected a string (MT-Bench turns are plain strings)")

    rows = _check_model_answer(path, int, turn)
    for r in rows:
        _need(len(r["choices"][0]["turns"]) == 2, f"{path} question {r['question_id']}", "expected 2 turns")
    return rows
