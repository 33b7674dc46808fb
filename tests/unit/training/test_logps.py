"""``sequence_logps``: the chunked LM head and the padding-free forward give the numbers (values
and gradients) of the plain full-logits computation on tiny Llama, Mistral, Qwen2 and Gemma-2
(with final-logit soft-capping), and anything unsupported falls back to the plain path."""

from __future__ import annotations

import pytest
import torch

from simpo_cli.training.logps import (
    _ChunkedHeadLogps,
    default_chunk_size,
    padding_free_default,
    sequence_logps,
    supports_chunked,
)
from tests.helpers import right_padded_rows, tiny_causal_lm

VOCAB = 97
ARCHS = ["llama", "mistral", "qwen2", "gemma2"]


def tiny(arch: str, dtype=torch.float64, attn="eager", **extra):
    # gemma2: a sliding window shorter than the rows so both attention kinds are exercised. (A
    # window of at most the longest padding run gives NaN rows in transformers' padded eager
    # forward: a padding query that sees only padding keys. Not ours; avoided here.)
    window = {"sliding_window": 6} if arch == "gemma2" else {}
    return tiny_causal_lm(arch, VOCAB, dtype, attn, **{**window, **extra})


def batch(seed: int = 0):
    """4 right-padded rows: prompts of 3-5 tokens, responses of 1-7, widths 6-11."""
    return right_padded_rows([(3, 7), (5, 1), (4, 4), (3, 3)], VOCAB, seed)


def values_and_grads(model, weights, **kw):
    model.zero_grad(set_to_none=True)
    ids, attn, resp = batch()
    out = sequence_logps(model, ids, attn, resp, **kw)
    (out.logps * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", [dict(path="chunked", chunk_size=5), dict(path="plain", padding_free=True),
                                     dict(path="chunked", chunk_size=5, padding_free=True)],
                         ids=["chunked", "padding-free", "chunked+padding-free"])
def test_matches_plain_values_and_gradients(arch, variant):
    """float64, chunk of 5 tokens over 15 scored ones (3 chunks): logps, logits means and every
    parameter's gradient of ``sum_i w_i * logps_i`` agree with the plain path to 1e-5 (they agree
    to ~1e-12; the tolerance is the issue's bar)."""
    model = tiny(arch)
    assert supports_chunked(model)
    weights = torch.tensor([0.7, -1.3, 0.4, 2.0], dtype=torch.float64)
    ref, ref_grads = values_and_grads(model, weights, path="plain")
    out, grads = values_and_grads(model, weights, **variant)
    assert out.lengths.tolist() == ref.lengths.tolist() == [7, 1, 4, 3]
    torch.testing.assert_close(out.logps, ref.logps, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits_mean, ref.logits_mean, atol=1e-5, rtol=0)
    assert set(grads) == set(ref_grads) and len(grads) == len(list(model.parameters()))
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_float32_matches_plain(arch):
    """float32 (what CPU runs use): chunked at the default chunk size equals plain to 1e-5
    relative (summed log-probs are ~ -30 nats, float32 rounding is ~1e-6 of that)."""
    model = tiny(arch, dtype=torch.float32)
    weights = torch.tensor([1.0, -1.0, 0.5, 0.25])
    ref, ref_grads = values_and_grads(model, weights, path="plain")
    out, grads = values_and_grads(model, weights, path="chunked")
    torch.testing.assert_close(out.logps, ref.logps, rtol=1e-5, atol=1e-5)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["", "gradient-checkpointing"])
def test_sdpa_padding_free_attends_per_sequence(monkeypatch, checkpointing):
    """sdpa + padding-free: the model switches to ``SEGMENT_SDPA``, which runs one causal sdpa call
    per packed sequence (4 rows x 2 layers, again in the recompute under gradient checkpointing)
    and builds no [T, T] mask; log-probs and every gradient equal the padded forward's (float64)."""
    import simpo_cli.models.packed_attention as packed

    model = tiny("llama", attn="sdpa")
    if checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    model.train()
    weights = torch.tensor([0.7, -1.3, 0.4, 2.0], dtype=torch.float64)
    ref, ref_grads = values_and_grads(model, weights, path="plain")
    assert model.config._attn_implementation == "sdpa"
    masks, segments = [], []
    monkeypatch.setattr(packed, "sdpa_mask", lambda *a, **k: masks.append(k["q_length"]))
    original = packed.sdpa_attention_forward
    monkeypatch.setattr(packed, "sdpa_attention_forward",
                        lambda m, q, *a, **k: (segments.append(q.shape[2]), original(m, q, *a, **k))[1])
    out, grads = values_and_grads(model, weights, path="plain", padding_free=True)
    assert model.config._attn_implementation == packed.SEGMENT_SDPA
    assert masks == []
    widths = [10, 6, 8, 6]  # prompt + response tokens of each row
    assert segments == widths * 2 * (2 if checkpointing else 1)
    torch.testing.assert_close(out.logps, ref.logps, atol=1e-10, rtol=0)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-10, rtol=0, msg=name)


def test_segment_sdpa_is_sdpa_on_padded_batches():
    """After the switch a padded batch still gets sdpa's padding mask: the same numbers as before."""
    model = tiny("llama", attn="sdpa")
    ids, attn, resp = batch(1)
    before = sequence_logps(model, ids, attn, resp, path="plain").logps
    sequence_logps(model, ids, attn, resp, padding_free=True)
    assert model.config._attn_implementation == "sdpa_segments"
    after = sequence_logps(model, ids, attn, resp, path="plain").logps
    assert torch.equal(before, after)


def test_sdpa_padding_free_under_lora():
    """A peft-wrapped sdpa model: padding-free is its default, the base model is switched, and the
    packed log-probs equal the padded ones."""
    peft = pytest.importorskip("peft")
    base = tiny("llama", attn="sdpa")
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    ids, attn, resp = batch(1)
    assert padding_free_default(model)
    ref = sequence_logps(model, ids, attn, resp, path="plain").logps
    out = sequence_logps(model, ids, attn, resp, padding_free=None).logps
    assert base.config._attn_implementation == "sdpa_segments"
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


def test_head_function_gradcheck_with_bias_and_softcap():
    """The custom autograd function against finite differences, including a head bias (no tiny
    config here has one) and soft-capping; 7 rows in chunks of 3."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 6, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(11, 6, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 11, (7,), generator=g)
    for cap in (None, 1.5):
        assert torch.autograd.gradcheck(
            lambda h, w, b: _ChunkedHeadLogps.apply(h, w, b, targets, 3, cap)[0], (hidden, weight, bias))


def test_head_function_hand_values():
    """V=2, logits (0, log 3) for one token → log-softmax = (log 1/4, log 3/4); target 1 gives
    log 0.75 = -0.28768 and a mean logit of log(3)/2 = 0.54931; WPO's log Σ p² =
    log(1/16 + 9/16) = log 0.625 = -0.4700036 (only when asked for)."""
    hidden = torch.tensor([[1.0]], dtype=torch.float64)
    weight = torch.tensor([[0.0], [float(torch.log(torch.tensor(3.0)))]], dtype=torch.float64)
    logps, means, sum_sq = _ChunkedHeadLogps.apply(hidden, weight, None, torch.tensor([1]), 1, None)
    assert logps.item() == pytest.approx(-0.2876821, abs=1e-7)
    assert means.item() == pytest.approx(0.5493061, abs=1e-7)
    assert sum_sq.numel() == 0
    _, _, sum_sq = _ChunkedHeadLogps.apply(hidden, weight, None, torch.tensor([1]), 1, None, True)
    assert sum_sq.item() == pytest.approx(-0.4700036, abs=1e-7)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_sum_sq_probs_same_on_both_paths(arch):
    """``sum_sq_probs=True``: Σ_t log Σ_v p_v² per row, equal on the chunked and plain paths
    (Gemma-2: of the soft-capped softmax), and the log-probs unchanged by asking for it."""
    model = tiny(arch)
    plain = sequence_logps(model, *batch(), path="plain", sum_sq_probs=True)
    chunked = sequence_logps(model, *batch(), path="chunked", chunk_size=3, sum_sq_probs=True)
    without = sequence_logps(model, *batch(), path="chunked", chunk_size=3)
    assert without.log_sum_sq is None
    torch.testing.assert_close(chunked.log_sum_sq, plain.log_sum_sq, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked.logps, without.logps)
    # log Σ p² ≤ 0 per token, so the sums are negative for rows with response tokens
    assert (plain.log_sum_sq[plain.lengths > 0] < 0).all() and not plain.log_sum_sq.requires_grad


def test_only_response_positions_reach_the_head(monkeypatch):
    """Prompt and padding positions are never scored: the head sees exactly 15 rows (7+1+4+3)."""
    seen = []
    original = _ChunkedHeadLogps.apply
    monkeypatch.setattr(_ChunkedHeadLogps, "apply", lambda h, *a: (seen.append(h.shape), original(h, *a))[1])
    sequence_logps(tiny("llama"), *batch(), path="chunked")
    assert seen == [torch.Size([15, 32])]


def test_unsupported_head_falls_back_to_plain():
    """A GPT-2 (not in CHUNKED_MODEL_TYPES) uses the plain path under ``auto``; asking for
    ``chunked`` is an error rather than a different computation."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                                bos_token_id=1, eos_token_id=2)).double().eval()
    assert not supports_chunked(model)
    ids, attn, resp = batch()
    auto = sequence_logps(model, ids, attn, resp)
    plain = sequence_logps(model, ids, attn, resp, path="plain")
    torch.testing.assert_close(auto.logps, plain.logps, atol=0, rtol=0)
    with pytest.raises(ValueError, match="does not support GPT2LMHeadModel"):
        sequence_logps(model, ids, attn, resp, path="chunked")


def test_defaults():
    """Chunk of 2**24 logits: 130 tokens at Llama-3's 128,256 vocabulary, 524 at 32,000; padding-free
    by default with sdpa (per-sequence calls) and flash-attention (varlen), not eager (dense mask)."""
    assert default_chunk_size(128_256) == 130
    assert default_chunk_size(32_000) == 524
    assert not padding_free_default(tiny("llama", attn="eager"))
    assert padding_free_default(tiny("llama", attn="sdpa"))
    model = tiny("llama")
    model.config._attn_implementation = "flash_attention_2"
    assert padding_free_default(model)
