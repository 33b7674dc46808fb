"""Scores, samples and evaluation log-probs depend only on their own inputs: bit-identical whatever
the batch size, the batch composition, the order and the thread count (issue: a resumed
generate-pairs run scored one candidate 4e-9 differently, because float results moved with the
batch shape and the number of threads)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from simpo_cli.config.schema import GenerationSettings, ModelConfig, ScorerConfig, TinyModelConfig
from simpo_cli.evaluation.judge import RewardModelJudge, conversation
from simpo_cli.models.generate import TransformersBackend, encode_prompt, row_key
from simpo_cli.models.loading import build_tiny_model, load_tokenizer
from simpo_cli.models.reward import RewardModelScorer, select_pair
from simpo_cli.stages.eval import score_pairs
from tests.unit.evaluation.test_benchmarks import make_reward_model

ROOT = Path(__file__).resolve().parents[3]
WORDS = "the a sky is blue because light scatters off air molecules and red waves pass through".split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


_rng = random.Random(0)
# 8 prompts (one multi-turn) with 5 candidates each, of very different lengths, so that any
# regrouping changes the padding width of a batch.
PROMPTS = [[{"role": "user", "content": _text(_rng, 2, 60)}] for _ in range(7)] + [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Why is the sky blue?"}]]
CANDIDATES = [[_text(_rng, 1, 40) for _ in range(5)] for _ in PROMPTS]


def tiny_scorer(batch_size: int) -> RewardModelScorer:
    """``conf/scorer/tiny.yaml``'s reward model with the given ``scorer.batch_size``."""
    cfg = OmegaConf.structured(ScorerConfig(
        name="tiny", tokenizer="pkg:tiny-tokenizer", batch_size=batch_size,
        tiny=TinyModelConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, seed=1)))
    return RewardModelScorer(cfg)


def _scores_in_calls(scorer, calls: list[list[int]]) -> list[list[float]]:
    """Scores of every prompt's candidates when ``score_candidates`` is called once per list of
    prompt indices in ``calls`` (as generate-pairs does once per generation batch)."""
    out: dict[int, list[float]] = {}
    for idx in calls:
        for i, s in zip(idx, scorer.score_candidates([PROMPTS[i] for i in idx], [CANDIDATES[i] for i in idx])):
            out[i] = s
    return [out[i] for i in range(len(PROMPTS))]


def _chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[s:s + size] for s in range(0, len(order), size)]


def test_scores_and_picks_are_bit_identical_for_batch_sizes_1_3_and_8():
    """Scorer batch sizes 1, 3 and 8, crossed with 1, 3 or 8 prompts per call in source or reversed
    order: every score is the same float (compared exactly), so chosen/rejected are the same."""
    reference = tiny_scorer(8).score_candidates(PROMPTS, CANDIDATES)
    picks = [select_pair(c, s) for c, s in zip(CANDIDATES, reference)]
    assert len({s for row in reference for s in row}) == 40  # the random head tells texts apart
    assert all(p.dropped is None for p in picks)
    forward, backward = list(range(len(PROMPTS))), list(reversed(range(len(PROMPTS))))
    for batch_size in (1, 3, 8):
        scorer = tiny_scorer(batch_size)
        for per_call in (1, 3, 8):
            for order in (forward, backward):
                scores = _scores_in_calls(scorer, _chunks(order, per_call))
                assert scores == reference, (batch_size, per_call, order[0])
                assert [select_pair(c, s) for c, s in zip(CANDIDATES, scores)] == picks


def sampler_outputs() -> list[list[str]]:
    """3 seeded samples of 12 tokens for each of 4 prompts, from the tiny policy (texts)."""
    tok = load_tokenizer(OmegaConf.structured(ModelConfig(name="tiny", tokenizer="pkg:tiny-tokenizer")))
    backend = TransformersBackend(build_tiny_model(TinyModelConfig(), tok), tok,
                                  OmegaConf.structured(GenerationSettings(n=3, max_new_tokens=12, batch_invariant=True)))
    ids = [encode_prompt(p, tok, True) for p in PROMPTS[:4]]
    keys = [[row_key(42, i, j) for j in range(3)] for i in range(4)]
    return [[s.text for s in samples] for samples in backend.generate(ids, keys)]


def test_samples_do_not_depend_on_which_prompts_share_a_call(tiny_model, tiny_tokenizer):
    gen = OmegaConf.structured(GenerationSettings(n=3, max_new_tokens=12, batch_invariant=True))
    backend = TransformersBackend(tiny_model, tiny_tokenizer, gen)
    ids = [encode_prompt(p, tiny_tokenizer, True) for p in PROMPTS[:4]]
    keys = [[row_key(42, i, j) for j in range(3)] for i in range(4)]
    together = backend.generate(ids, keys)
    alone = [backend.generate([ids[i]], [keys[i]])[0] for i in range(4)]
    backwards = backend.generate(ids[::-1], keys[::-1])[::-1]
    assert together == alone == backwards
    assert [[s.text for s in row] for row in together] == sampler_outputs()


def _pairs(tokenizer) -> list[dict]:
    rng = random.Random(1)
    return [{"prompt_input_ids": tokenizer(_text(rng, 2, 120)).input_ids,
             "chosen_input_ids": tokenizer(_text(rng, 1, 80), add_special_tokens=False).input_ids,
             "rejected_input_ids": tokenizer(_text(rng, 1, 80), add_special_tokens=False).input_ids,
             "index": i} for i in range(8)]


def eval_logps(reverse: bool = False) -> dict[str, list[float]]:
    """``simpo eval``'s per-pair summed log-probs of 8 pairs under the tiny policy, by pair index."""
    tok = load_tokenizer(OmegaConf.structured(ModelConfig(name="tiny", tokenizer="pkg:tiny-tokenizer")))
    pairs = _pairs(tok)
    res = score_pairs(build_tiny_model(TinyModelConfig(), tok), pairs[::-1] if reverse else pairs,
                      tok.pad_token_id)
    order = sorted(range(len(pairs)), key=lambda k: int(res["index"][k]))
    return {k: [float(res[k][i]) for i in order] for k in ("chosen", "rejected")}


def test_eval_logps_do_not_depend_on_the_other_pairs():
    assert eval_logps(reverse=True) == eval_logps()


def test_judge_scores_a_conversation_the_same_alone_or_among_others(tmp_path, tiny_tokenizer):
    judge = RewardModelJudge(str(make_reward_model(tmp_path / "rm", tiny_tokenizer)), max_length=256)
    convs = [conversation([p[-1]["content"]], [c[0]]) for p, c in zip(PROMPTS, CANDIDATES)]
    together = judge.score(convs)
    assert together == [judge.score([c])[0] for c in convs] == judge.score(convs[::-1])[::-1]


def test_results_do_not_depend_on_the_thread_count(tmp_path):
    """The same scores, samples and eval log-probs (exact bits) with OMP_NUM_THREADS=1 and 2."""
    runs = {}
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "SIMPO_CACHE": str(tmp_path / "cache")}
        proc = subprocess.run([sys.executable, "-m", "tests.unit.models.invariance_probe"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[threads] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs["1"] == runs["2"]
    here = tiny_scorer(8).score_candidates(PROMPTS, CANDIDATES)
    assert runs["1"]["scores"] == [[s.hex() for s in row] for row in here]
