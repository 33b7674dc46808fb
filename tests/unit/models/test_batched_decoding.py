"""The default batched decoder (``models.generate.BatchedDecoder``) on the tiny model: it decodes what
the one-prompt-at-a-time ``Sampler`` decodes (same greedy tokens, same Gumbel draws per key), cuts
finished rows out of the batch without disturbing the others, and is reproducible."""

import pytest
import torch
from omegaconf import OmegaConf

from simpo_cli.config.schema import GenerationSettings
from simpo_cli.models.generate import (BatchedDecoder, Row, Sampler, TransformersBackend, encode_prompt, plan_batches,
                                      row_key)
from tests.unit.models.test_batch_invariance import PROMPTS

MAX_NEW = 12


@pytest.fixture
def ids(tiny_tokenizer):
    return [encode_prompt(p, tiny_tokenizer, True) for p in PROMPTS]


def _texts(sampler: Sampler, tokens: list[list[int]]) -> list[str]:
    return [sampler.to_sample(t, cut=False).text for t in tokens]


def test_plan_sorts_by_prompt_length_keeps_source_order_and_cuts_every_batch_size_rows():
    rows = [Row((1, 2, 3), 0, 0.0), Row((1,), 1, 0.0), Row((1, 2), 2, 0.0), Row((1,), 3, 0.0), Row((1, 2, 3), 4, 0.0)]
    assert plan_batches(rows, 2) == [[1, 3], [2, 0], [4]]
    assert plan_batches(rows, 10) == [[1, 3, 2, 0, 4]]


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_batched_answers_equal_those_decoded_one_prompt_at_a_time(tiny_model, tiny_tokenizer, ids, temperature):
    """Left-padded prompts of different lengths, 3 samples each (one prefill per prompt, the cache
    repeated), 2 prompts' rows per batch: the same answers as model.generate on each prompt alone
    with the same keys (the logits differ in the last bits only, no near tie on this model)."""
    sampler = Sampler(tiny_model, tiny_tokenizer)
    rows = [Row(tuple(p), row_key(42, i, j), temperature) for i, p in enumerate(ids) for j in range(3)]
    got = BatchedDecoder(tiny_model, sampler.eos, sampler.pad, batch_size=6).decode(rows, max_new_tokens=MAX_NEW)
    want = [sampler.sample(list(r.prompt), [r.key], temperature=temperature, max_new_tokens=MAX_NEW)[0].text
            for r in rows]
    assert _texts(sampler, got) == want
    assert all(len(t) == MAX_NEW for t in got)  # no end-of-sequence in 12 tokens: every row ran to the end
    if temperature:
        assert len({tuple(t) for t in got[:3]}) == 3  # three different draws of one prompt
    else:
        assert got[0] == got[1] == got[2]


def test_a_finished_row_leaves_the_batch_and_the_others_continue_unchanged(tiny_model, tiny_tokenizer, ids):
    """Make some rows end early by declaring a token they emit an end-of-sequence id: they stop
    before it, and every other row still decodes exactly what it decodes alone."""
    sampler = Sampler(tiny_model, tiny_tokenizer)
    rows = [Row(tuple(p), row_key(7, i, 0), 0.9) for i, p in enumerate(ids)]
    free = BatchedDecoder(tiny_model, sampler.eos, sampler.pad, len(rows)).decode(rows, max_new_tokens=MAX_NEW)
    stop = free[0][3]  # row 0 emits this at step 3
    stopper = BatchedDecoder(tiny_model, [stop], sampler.pad, len(rows))
    cut = stopper.decode(rows, max_new_tokens=MAX_NEW)
    assert cut[0] == free[0][:3]
    ended = [i for i, t in enumerate(free) if stop in t]
    assert len(ended) < len(rows)  # some rows never emit it and run to max_new_tokens
    for c, f in zip(cut, free):
        assert c == (f[:f.index(stop)] if stop in f else f)
    alone = Sampler(tiny_model, tiny_tokenizer, eos_ids=[stop])
    assert [alone.sample(list(r.prompt), [r.key], temperature=0.9, max_new_tokens=MAX_NEW)[0].num_tokens
            for r in rows] == [len(c) for c in cut]


def test_backend_batched_by_default_reproducible_and_finish_reasons(tiny_model, tiny_tokenizer, ids):
    gen = OmegaConf.structured(GenerationSettings(n=4, max_new_tokens=MAX_NEW))
    assert gen.batch_invariant is False
    backend = TransformersBackend(tiny_model, tiny_tokenizer, gen)
    keys = [[row_key(42, i, j) for j in range(4)] for i in range(len(ids))]
    first = backend.generate(ids, keys)
    assert backend.generate(ids, keys) == first
    invariant = TransformersBackend(tiny_model, tiny_tokenizer, OmegaConf.structured(
        GenerationSettings(n=4, max_new_tokens=MAX_NEW, batch_invariant=True)))
    assert invariant.generate(ids, keys) == first  # same draws (no near tie on the tiny model)
    for samples in first:
        assert len(samples) == 4
        for s in samples:
            assert s.finish_reason == ("length" if s.num_tokens == MAX_NEW else "stop")


def test_decoding_does_not_touch_the_global_rng(tiny_model, tiny_tokenizer, ids):
    sampler = Sampler(tiny_model, tiny_tokenizer)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    BatchedDecoder(tiny_model, sampler.eos, sampler.pad, 4).decode(
        [Row(tuple(p), row_key(1, i, 0), 0.8) for i, p in enumerate(ids)], max_new_tokens=4)
    assert torch.equal(torch.rand(3), expected)
