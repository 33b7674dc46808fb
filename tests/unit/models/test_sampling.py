"""Reproducible sampling (counter-based Gumbel-max) and reward-model scoring on the tiny models."""

import pytest
import torch
from omegaconf import OmegaConf

from simpo_cli.config.schema import GenerationSettings, ScorerConfig, TinyModelConfig
from simpo_cli.data.tokenize import encode_pair
from simpo_cli.errors import UserError
from simpo_cli.models.generate import (MASK32, SeededGumbelNoise, TransformersBackend, _mix32, encode_prompt,
                                  row_key, split_keys, uniform_noise)
from simpo_cli.models.reward import RewardModelScorer, reward_values

PROMPTS = [
    [{"role": "user", "content": "Name three primary colours."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Write a haiku about autumn leaves falling slowly."}],
    [{"role": "user", "content": "2+2?"}],
]


def lowbias32(x: int) -> int:
    """C. Wellons' lowbias32 on Python ints: the reference for the tensor version."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def test_mix32_matches_the_reference_hash_without_int64_overflow():
    values = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, MASK32, *torch.randint(0, 2**32, (64,)).tolist()]
    got = _mix32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [lowbias32(v) for v in values]


def test_noise_of_a_row_depends_only_on_its_key_and_step():
    k1, k2 = row_key(42, 0, 0), row_key(42, 7, 3)
    alone = uniform_noise(split_keys([k1]), 3, 100)
    together = uniform_noise(split_keys([k2, k1]), 3, 100)
    assert torch.equal(alone[0], together[1])
    assert not torch.equal(uniform_noise(split_keys([k1]), 4, 100), alone)  # a new draw per step
    assert row_key(42, 0, 0) != row_key(42, 0, 1) != row_key(43, 0, 1)
    u = uniform_noise(split_keys([row_key(0, i, 0) for i in range(64)]), 0, 512)
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01  # 32768 uniforms: std of the mean 0.0016


@pytest.mark.parametrize("step", [0, 5])
def test_gumbel_max_samples_from_the_softmax(step):
    """argmax(log p + Gumbel) ~ Categorical(p). p = [1/2, 1/4, 1/8, 1/8] over 4000 keyed rows:
    expected counts 2000, 1000, 500, 500 (std <= sqrt(4000 * 1/4) = 31.6; we allow 4 std)."""
    n = 4000
    p = torch.tensor([0.5, 0.25, 0.125, 0.125])
    noise = SeededGumbelNoise([row_key(1, i, 0) for i in range(n)], prompt_length=10)
    scores = noise(torch.zeros(n, 10 + step, dtype=torch.long), p.log().expand(n, 4).clone())
    counts = torch.bincount(scores.argmax(-1), minlength=4).float()
    assert torch.all((counts - n * p).abs() < 4 * 31.6), counts


def test_masked_tokens_stay_masked():
    scores = torch.tensor([[0.0, -float("inf"), 1.0]])
    out = SeededGumbelNoise([row_key(0, 0, 0)], 1)(torch.zeros(1, 1, dtype=torch.long), scores)
    assert out[0, 1] == -float("inf") and torch.isfinite(out[0, [0, 2]]).all()


@pytest.fixture
def backend(tiny_model, tiny_tokenizer):
    gen = OmegaConf.structured(GenerationSettings(n=4, max_new_tokens=12, batch_invariant=True))
    return TransformersBackend(tiny_model, tiny_tokenizer, gen)


def _ids(tokenizer, prompts):
    return [encode_prompt(p, tokenizer, True) for p in prompts]


def test_samples_reproduce_and_do_not_depend_on_the_batch(backend, tiny_tokenizer):
    """Same keys -> same responses, whether a prompt is sampled alone or left-padded in a batch
    with longer and shorter prompts."""
    ids = _ids(tiny_tokenizer, PROMPTS)
    keys = [[row_key(42, i, j) for j in range(4)] for i in range(len(PROMPTS))]
    batched = backend.generate(ids, keys)
    alone = [backend.generate([ids[i]], [keys[i]])[0] for i in range(len(PROMPTS))]
    assert batched == alone
    assert backend.generate(ids, keys) == batched
    for samples in batched:
        assert len(samples) == 4 and len({s.text for s in samples}) > 1  # n different draws
        for s in samples:
            assert 0 <= s.num_tokens <= 12
            assert s.finish_reason == ("length" if s.num_tokens == 12 else "stop")
    other_seed = backend.generate(ids, [[row_key(7, i, j) for j in range(4)] for i in range(len(PROMPTS))])
    assert other_seed != batched


@pytest.mark.parametrize("template", [True, False])
def test_prompt_ids_are_those_simpo_train_uses(tiny_tokenizer, template):
    """On-policy: the policy samples from exactly the prompt tokens it is later trained on."""
    for messages in PROMPTS:
        pair = {"prompt": messages, "chosen": "a", "rejected": "b"}
        assert encode_prompt(messages, tiny_tokenizer, template) == encode_pair(pair, tiny_tokenizer, template).prompt


def _tiny_scorer(batch_size: int) -> RewardModelScorer:
    cfg = OmegaConf.structured(ScorerConfig(name="tiny", tokenizer="pkg:tiny-tokenizer", batch_size=batch_size,
                                            tiny=TinyModelConfig(seed=1)))
    return RewardModelScorer(cfg)


def test_reward_model_scores_batched_equal_one_at_a_time():
    candidates = [["Red, yellow, blue.", "Green", ""], ["Leaves drift down / slowly", "no"], ["4", "5", "four"]]
    prompts = PROMPTS
    batched = _tiny_scorer(batch_size=16).score_candidates(prompts, candidates)
    single = _tiny_scorer(batch_size=1).score_candidates(prompts, candidates)
    assert [len(s) for s in batched] == [3, 2, 3]
    assert batched == single  # exact: each prompt's candidates are one forward pass whatever the batch size
    assert len(set(sum(batched, []))) == 8  # a random head still tells different texts apart


def test_a_classifier_with_several_outputs_is_not_a_reward_model():
    class Out:
        logits = torch.zeros(2, 3)

    with pytest.raises(UserError, match="3 values per sequence"):
        reward_values(Out())
    Out.logits = torch.tensor([[0.5], [-1.0]])
    assert reward_values(Out()).tolist() == [0.5, -1.0]
