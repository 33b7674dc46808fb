"""Benchmark prompt sets, the paper's decoding presets, answer-file formats and the local judge."""

import json
from pathlib import Path

import pytest
import torch

from simpo_cli.data.templates import prompt_ids, prompt_text
from simpo_cli.evaluation import benchmarks as B
from tests.unit.evaluation import schemas
from tests.helpers import compose

SHARED = Path("/work/shared/data/benchmarks")
shared = pytest.mark.skipif(not SHARED.is_dir(), reason="the shared real-data folder is not on this machine")


@pytest.fixture(scope="module")
def cfg():
    return compose([], "eval")


def test_bundled_prompt_sets_are_complete(cfg):
    alpaca = B.load_prompts(cfg.benchmarks.alpaca_eval)
    arena = B.load_prompts(cfg.benchmarks.arena_hard)
    mt = B.load_prompts(cfg.benchmarks.mt_bench)
    assert (len(alpaca), len(arena), len(mt)) == (805, 500, 80)
    assert all(len(p.turns) == 1 for p in alpaca + arena) and all(len(p.turns) == 2 for p in mt)
    assert all(isinstance(p.id, str) for p in arena) and all(isinstance(p.id, int) for p in mt)
    assert {p.category for p in mt} == {"writing", "roleplay", "reasoning", "math", "coding", "extraction",
                                        "stem", "humanities"}
    assert len(B.load_prompts(cfg.benchmarks.mt_bench, limit=3)) == 3


@shared
def test_bundled_prompts_are_the_shared_files_unchanged(cfg):
    for name, rel in (("alpaca_eval", "alpaca-eval/eval_instructions.json"),
                      ("arena_hard", "arena-hard-v0.1/question.jsonl"), ("mt_bench", "mt-bench/question.jsonl")):
        assert B.resolve(cfg.benchmarks[name].prompts).read_bytes() == (SHARED / rel).read_bytes()


@pytest.mark.parametrize("model, temperature, max_new", [
    ("llama3-instruct", 0.9, 4096), ("llama3-base", 0.9, 4096), ("mistral-instruct", 0.5, 2048),
    ("mistral-base", 0.7, 2048)])
def test_alpaca_eval_presets_follow_the_paper(cfg, model, temperature, max_new):
    """PAPER.md: AlpacaEval 2 sampling 0.9 for Llama 3, 0.5 Mistral-Instruct, 0.7 Mistral-Base;
    max_new_tokens 4096 / 2048 from the SimPO repo's configs; eval.max_new_tokens caps it."""
    bc = cfg.benchmarks.alpaca_eval
    p = B.load_prompts(bc, limit=1)[0]
    assert B.temperature_for(bc, p, model) == temperature and bc.top_p == 1.0
    assert B.max_new_tokens_for(bc, model, None) == max_new and B.max_new_tokens_for(bc, model, 16) == 16


def test_arena_hard_is_greedy_and_mt_bench_uses_category_temperatures(cfg):
    arena = cfg.benchmarks.arena_hard
    assert {B.temperature_for(arena, p, "llama3-instruct") for p in B.load_prompts(arena)} == {0.0}
    mt = cfg.benchmarks.mt_bench
    temps = {p.category: B.temperature_for(mt, p, "llama3-instruct") for p in B.load_prompts(mt)}
    assert temps == {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                     "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
    assert B.max_new_tokens_for(mt, "llama3-instruct", None) == 1024


@shared
def test_schemas_accept_the_real_released_files():
    """The schema checks are faithful: the tools' own released answer files pass them."""
    for f in sorted((SHARED / "alpaca-eval/model_outputs").glob("*.json")):
        assert len(schemas.check_alpaca_eval(f)) == 805
    assert len(schemas.check_arena_hard(SHARED / "arena-hard-v0.1/model_answer/gpt-4-0314.jsonl")) == 500
    assert len(schemas.check_mt_bench(SHARED / "mt-bench/reference_answer_gpt-4.jsonl")) == 30


@pytest.fixture(scope="module")
def answered(cfg, tmp_path_factory):
    """Every benchmark answered by the tiny model: 2 prompts, 3 new tokens, files written."""
    from simpo_cli.config.schema import TinyModelConfig
    from simpo_cli.models.loading import build_tiny_model, load_tokenizer

    tok = load_tokenizer(cfg.model)
    model = build_tiny_model(TinyModelConfig(), tok).eval()
    out = tmp_path_factory.mktemp("answers")
    result = {}
    for name in ("alpaca_eval", "arena_hard", "mt_bench"):
        bc = cfg.benchmarks[name]
        prompts = B.load_prompts(bc, limit=2)
        answers, counts, temps = B.answer_benchmark(model, tok, prompts, bc, "tiny-llama", max_new_tokens=3,
                                                    batch_size=2, stop_token_ids=[], template=False)
        rel, text = B.format_answers(bc.format, prompts, answers, counts, "tiny-test")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
        result[name] = (out / rel, prompts, answers, counts)
    return model, tok, result


def test_answer_files_pass_the_judges_schemas(answered):
    _, _, res = answered
    path, prompts, answers, _ = res["alpaca_eval"]
    assert path.as_posix().endswith("alpaca_eval/model_outputs.json")
    rows = schemas.check_alpaca_eval(path)
    assert [r["instruction"] for r in rows] == [p.turns[0] for p in prompts]
    assert [r["output"] for r in rows] == [a[0] for a in answers] and rows[0]["generator"] == "tiny-test"
    assert rows[0]["dataset"] == "helpful_base"

    path, prompts, _, counts = res["arena_hard"]
    assert path.as_posix().endswith("arena-hard-v0.1/model_answer/tiny-test.jsonl")
    rows = schemas.check_arena_hard(path)
    assert [r["question_id"] for r in rows] == [p.id for p in prompts]
    assert [r["choices"][0]["turns"][0]["token_len"] for r in rows] == [c[0] for c in counts]

    path, prompts, answers, _ = res["mt_bench"]
    assert path.as_posix().endswith("mt_bench/model_answer/tiny-test.jsonl")
    rows = schemas.check_mt_bench(path)
    assert [r["question_id"] for r in rows] == [81, 82]
    assert [r["choices"][0]["turns"] for r in rows] == answers


def test_generation_lengths_and_greedy_decoding(answered):
    """Token counts never exceed max_new_tokens; Arena-Hard (temperature 0) equals a direct greedy
    ``generate`` on the same rendered prompt."""
    model, tok, res = answered
    for _, _, _, counts in res.values():
        assert all(0 <= n <= 3 for c in counts for n in c)
    _, prompts, answers, counts = res["arena_hard"]
    messages = [{"role": "user", "content": prompts[0].turns[0]}]
    assert prompt_text(messages, tok, template=False) == prompts[0].turns[0]
    prompt = prompt_ids(messages, tok, template=False)  # the renderer training uses: one BOS id
    assert prompt[0] == tok.bos_token_id and prompt.count(tok.bos_token_id) == 1
    ids = torch.tensor([prompt])
    with torch.no_grad():
        seq = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = seq[0, ids.shape[1]:].tolist()
    cut = next((k for k, t in enumerate(new) if t == tok.eos_token_id), len(new))
    assert answers[0][0] == tok.decode(new[:cut], skip_special_tokens=True).strip() and counts[0][0] == cut


def test_mt_bench_second_turn_sees_the_first_answer(cfg, monkeypatch):
    seen = []

    def fake_generate(model, tokenizer, conversations, temperatures, **kw):
        seen.append(conversations)
        return [(f"answer{len(seen)}-{i}", 2) for i in range(len(conversations))]

    monkeypatch.setattr(B, "generate", fake_generate)
    prompts = B.load_prompts(cfg.benchmarks.mt_bench, limit=2)
    answers, counts, temps = B.answer_benchmark(None, None, prompts, cfg.benchmarks.mt_bench, "x",
                                                max_new_tokens=2, batch_size=2, stop_token_ids=[])
    assert answers == [["answer1-0", "answer2-0"], ["answer1-1", "answer2-1"]] and temps == [0.7, 0.7]
    assert seen[1][0] == [{"role": "user", "content": prompts[0].turns[0]},
                          {"role": "assistant", "content": "answer1-0"},
                          {"role": "user", "content": prompts[0].turns[1]}]


def make_reward_model(path: Path, tokenizer):
    """A tiny LlamaForSequenceClassification with one output (a reward model) saved to ``path``."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_local_judge_win_rate(answered, tmp_path):
    """Against itself every prompt is a tie → win rate 0.5 with a zero-width interval; against a
    baseline the scores decide each prompt (checked against the judge's own scores)."""
    from simpo_cli.evaluation.judge import RewardModelJudge, judge_answers, read_answers

    model, tok, res = answered
    judge = RewardModelJudge(str(make_reward_model(tmp_path / "rm", tok)), max_length=256)
    path, prompts, answers, _ = res["alpaca_eval"]
    same = judge_answers(judge, prompts, answers, read_answers(path), key="instruction", n_resamples=200,
                         confidence=0.95, seed=0)
    assert (same["n"], same["win_rate"], same["ci"], same["ties"]) == (2, 0.5, [0.5, 0.5], 2)

    baseline = {p.turns[0]: ["A much longer and different baseline answer. " * (i + 1)] for i, p in enumerate(prompts)}
    res_ = judge_answers(judge, prompts, answers, baseline, key="instruction", n_resamples=200, confidence=0.95, seed=0)
    from simpo_cli.evaluation.judge import conversation

    ours = judge.score([conversation(p.turns, a) for p, a in zip(prompts, answers)])
    theirs = judge.score([conversation(p.turns, baseline[p.turns[0]]) for p in prompts])
    expected = sum(1.0 if o > t else 0.5 if o == t else 0.0 for o, t in zip(ours, theirs)) / 2
    assert res_["win_rate"] == expected and res_["ci"][0] <= expected <= res_["ci"][1]

    mt_path, mt_prompts, mt_answers, _ = res["mt_bench"]
    by_id = read_answers(mt_path)
    assert by_id["81"] == mt_answers[0]  # keyed by question_id, the assistant turns only
    r = judge_answers(judge, mt_prompts, mt_answers, by_id, key="question_id", n_resamples=50, confidence=0.9, seed=0)
    assert r["win_rate"] == 0.5


@shared
def test_judge_reads_the_real_baseline_files():
    from simpo_cli.evaluation.judge import read_answers

    alpaca = read_answers(SHARED / "alpaca-eval/model_outputs/gpt4_1106_preview.json")
    arena = read_answers(SHARED / "arena-hard-v0.1/model_answer/gpt-4-0314.jsonl")
    assert len(alpaca) == 805 and len(arena) == 500 and all(len(v) == 1 for v in arena.values())


def test_malformed_prompt_file_names_file_record_and_field(cfg, tmp_path):
    from omegaconf import OmegaConf

    from simpo_cli.errors import DataError

    bad = tmp_path / "q.jsonl"
    bad.write_text(json.dumps({"question_id": 1, "turns": ["hi"]}) + "\n" + json.dumps({"question_id": 2}) + "\n")
    bc = OmegaConf.merge(cfg.benchmarks.mt_bench, {"prompts": str(bad)})
    with pytest.raises(DataError) as e:
        B.load_prompts(bc)
    assert str(bad) in str(e.value) and "turns" in str(e.value)
