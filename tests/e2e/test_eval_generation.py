"""``simpo eval``'s benchmark answers, batched (default) and batch-invariant: the same command
writes the same answers; with eval.batch_invariant=true they also do not depend on
eval.generation_batch_size."""

import json
from pathlib import Path

import pytest

from tests.helpers import compose

# 5 AlpacaEval prompts and 5 two-turn MT-Bench questions (each sampled at its preset temperature),
# 6 new tokens, on a local copy of the tiny model.
ARGS = ["eval.pairs=false", "eval.benchmarks=[alpaca_eval,mt_bench]", "eval.limit=5", "eval.max_new_tokens=6",
        "eval.model_id=t"]


def _answers(out: Path) -> dict:
    """The answers of every file (MT-Bench's ``tstamp`` is the time of writing, as in FastChat)."""
    alpaca = json.loads((out / "alpaca_eval/model_outputs.json").read_text())
    mt = [json.loads(line) for line in (out / "mt_bench/model_answer/t.jsonl").read_text().splitlines()]
    return {"alpaca_eval": [r["output"] for r in alpaca],
            "mt_bench": [(r["question_id"], r["answer_id"], r["choices"]) for r in mt]}


@pytest.fixture(scope="module")
def local_model(tmp_path_factory, tiny_model_module):
    model, tok = tiny_model_module
    path = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_model_module():
    from omegaconf import OmegaConf

    from simpo_cli.config.schema import ModelConfig, TinyModelConfig
    from simpo_cli.models.loading import build_tiny_model, load_tokenizer

    tok = load_tokenizer(OmegaConf.structured(ModelConfig(name="tiny", tokenizer="pkg:tiny-tokenizer")))
    return build_tiny_model(TinyModelConfig(), tok), tok


def _eval(local_model: Path, out: Path, *extra: str) -> dict:
    from simpo_cli.stages.eval import run_eval

    cfg = compose([f"model.name_or_path={local_model}", "model.dtype=float32", *ARGS, *extra,
                   f"paths.cache_dir={out.parent / 'cache'}"], "eval")
    result = run_eval(cfg, out)
    return {"answers": _answers(out), "summary": result.summary["benchmarks"],
            "alpaca_bytes": (out / "alpaca_eval/model_outputs.json").read_bytes()}


def test_batched_answers_are_the_same_on_a_rerun(local_model, tmp_path):
    first = _eval(local_model, tmp_path / "a", "eval.generation_batch_size=3")
    again = _eval(local_model, tmp_path / "b", "eval.generation_batch_size=3")
    assert again["alpaca_bytes"] == first["alpaca_bytes"] and again["answers"] == first["answers"]
    b = first["summary"]["mt_bench"]
    assert b["batch_invariant"] is False and b["generation_batch_size"] == 3 and b["threads"] >= 1
    assert b["n_turns"] == 10 and len(set(first["answers"]["alpaca_eval"])) > 1


def test_batch_invariant_answers_do_not_depend_on_the_generation_batch_size(local_model, tmp_path):
    one = _eval(local_model, tmp_path / "a", "eval.batch_invariant=true", "eval.generation_batch_size=1")
    many = _eval(local_model, tmp_path / "b", "eval.batch_invariant=true", "eval.generation_batch_size=8")
    assert one["alpaca_bytes"] == many["alpaca_bytes"] and one["answers"] == many["answers"]
    assert one["summary"]["alpaca_eval"]["batch_invariant"] is True
    # No near tie on the tiny model: the batched decoder draws the same answers.
    assert _eval(local_model, tmp_path / "c")["answers"] == one["answers"]
