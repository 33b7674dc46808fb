"""Per-sequence log-probabilities of response tokens — the one unit every objective builds on.

Two paths give the same numbers (to float rounding):

- ``plain``: the model's full logits ``[N, L, V]``, log-softmax, gather. Works for any causal LM.
- ``chunked``: final hidden states of the response positions only, pushed through the LM head in
  chunks of ``chunk_size`` tokens with the log-sum-exp computed per chunk and recomputed in the
  backward pass (``_ChunkedHeadLogps``), so no ``[N, L, V]`` tensor ever exists and prompt or
  padding positions are never scored. Used for architectures whose head is a plain linear layer
  (optionally with Gemma-2's final-logit soft-capping); anything else falls back to ``plain``.

Training uses a third, fused path where it can (``simpo_cli.training.fused_head``): the same
chunked head with the objective evaluated pair by pair and the head's gradients computed in the
forward, 3 matmul units per token instead of the chunked path's 4. It starts from ``head_inputs``.

Sharded heads: under DeepSpeed ZeRO-3 the head's weight is all-gathered with
``deepspeed.zero.GatheredParameters`` for the chunked forward and again for its backward (the
gradient is full-sized, as ZeRO-3's own gradient hooks expect). FSDP-wrapped models and DTensor
(FSDP2) weights use ``plain``: their parameters may only be unsharded inside FSDP's own forward.
The ZeRO-3 branch is untested here (no DeepSpeed in the test environment).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from simpo_cli.models.adapters import unwrap
from simpo_cli.models.packed_attention import SEGMENT_SDPA, packed_forward, sequence_bounds, use_segment_attention

# Heads that are exactly ``hidden @ W.T`` (+ optional soft-capping) after the final norm.
CHUNKED_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "mixtral"}
# Logits per chunk (elements): 2**24 floats = 64 MiB in float32, i.e. ~130 tokens at a 128k
# vocabulary and the whole batch at a small one. Bounds the head's extra memory.
CHUNK_ELEMENTS = 2**24


@dataclass
class SequenceLogps:
    """``logps``: summed log-prob of each row's response tokens, ``[N]``, nats.
    ``lengths``: number of response tokens per row, ``[N]``.
    ``logits_mean``: mean logit over the vocabulary and the row's response positions, ``[N]``
    (detached; for the ``logits/chosen`` and ``logits/rejected`` metrics).
    ``log_sum_sq``: with ``sum_sq_probs=True``, ``Σ_t log Σ_v π(v | x_<t)²`` over each row's
    response positions, ``[N]``, nats (detached; WPO's sampled alignment), else ``None``."""

    logps: torch.Tensor
    lengths: torch.Tensor
    logits_mean: torch.Tensor
    log_sum_sq: torch.Tensor | None = None


def output_head(model):
    """The model's LM head module (``get_output_embeddings()``), looked up through wrappers."""
    return unwrap(model).get_output_embeddings()


def _is_zero3(param) -> bool:
    return hasattr(param, "ds_id")


def _is_fsdp(model, param) -> bool:
    if any(type(m).__name__ == "FullyShardedDataParallel" for m in (model, unwrap(model))):
        return True
    return type(param).__name__ == "DTensor" or type(param.data).__name__ == "DTensor"


def supports_chunked(model) -> bool:
    """True when the chunked path computes exactly what the model's own head would: a plain
    ``nn.Linear`` head of an architecture in ``CHUNKED_MODEL_TYPES``, not sharded by FSDP, and (for
    a ZeRO-3-partitioned head) DeepSpeed importable so the weight can be gathered."""
    inner = unwrap(model)
    config = getattr(inner, "config", None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if config is None or type(head) is not torch.nn.Linear:
        return False
    if getattr(config, "model_type", None) not in CHUNKED_MODEL_TYPES:
        return False
    if _is_fsdp(model, head.weight):
        return False
    if _is_zero3(head.weight):
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            return False
    return True


def _gathered(weight, bias):
    """All-gather ZeRO-3-partitioned head parameters for the duration of the block; a no-op for
    ordinary tensors. ``modifier_rank=None``: read-only, every rank gets the full weight."""
    params = [p for p in (weight, bias) if p is not None and _is_zero3(p)]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax dtype: half precisions are upcast to float32; float32/float64 are kept (no copy)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _head(h, weight, bias, softcap):
    logits = F.linear(h, weight, bias)
    logits = logits.to(compute_dtype(logits.dtype))
    if softcap is None:
        return logits
    return logits.div_(softcap).tanh_().mul_(softcap)


class _ChunkedHeadLogps(torch.autograd.Function):
    """``log softmax(cap(h W^T + b))[target]`` for ``T`` rows, ``chunk`` rows at a time.

    Forward keeps the inputs and the per-token log-sum-exp ``[T]``; backward recomputes each
    chunk's logits and turns them in place into the gradient, so the peak extra memory is about
    two ``[chunk, V]`` blocks instead of ``[T, V]``. Softmax runs in float32 for half-precision
    models (float64 for float64 models). ``cap(x) = c·tanh(x/c)`` is Gemma-2's final-logit
    soft-capping (``softcap`` = c, or ``None``). ``sum_sq``: also return each token's
    ``log Σ_v softmax(·)_v²`` (detached; an empty tensor otherwise)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, softcap, sum_sq=False):
        dtype = compute_dtype(hidden.dtype)
        n = hidden.shape[0]
        logps = hidden.new_empty(n, dtype=dtype)
        lse = hidden.new_empty(n, dtype=dtype)
        logit_means = hidden.new_empty(n, dtype=dtype)
        log_sum_sq = hidden.new_empty(n if sum_sq else 0, dtype=dtype)
        with _gathered(weight, bias):
            for s in range(0, n, chunk):
                logits = _head(hidden[s : s + chunk], weight, bias, softcap)
                torch.logsumexp(logits, 1, out=lse[s : s + chunk])
                logps[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None])[:, 0] - lse[s : s + chunk]
                torch.mean(logits, 1, out=logit_means[s : s + chunk])
                if sum_sq:  # log Σ_v p_v² = logsumexp(2 log p)
                    log_sum_sq[s : s + chunk] = _log_sum_sq(logits, lse[s : s + chunk])
        if _is_zero3(weight):
            # Saving a partitioned parameter would save its empty shard; keep the objects instead.
            ctx.save_for_backward(hidden, targets, lse)
            ctx.params = (weight, bias)
        else:
            ctx.save_for_backward(hidden, targets, lse, weight, bias)
            ctx.params = None
        ctx.chunk, ctx.softcap = chunk, softcap
        ctx.mark_non_differentiable(logit_means, log_sum_sq)
        return logps, logit_means, log_sum_sq

    @staticmethod
    def backward(ctx, grad_logps, _grad_means, _grad_sum_sq):
        if ctx.params is None:
            hidden, targets, lse, weight, bias = ctx.saved_tensors
        else:
            hidden, targets, lse = ctx.saved_tensors
            weight, bias = ctx.params
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and bias is not None
        cap = ctx.softcap
        with _gathered(weight, bias):
            # Every row of grad_hidden is written below, so no zero fill is needed.
            grad_hidden = torch.empty_like(hidden) if need_h else None
            acc = compute_dtype(weight.dtype)
            grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
            grad_bias = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
            for s in range(0, hidden.shape[0], ctx.chunk):
                h, t, e = hidden[s : s + ctx.chunk], targets[s : s + ctx.chunk], slice(s, s + ctx.chunk)
                grad = F.linear(h, weight, bias)
                grad = grad.to(compute_dtype(grad.dtype))
                if cap is not None:
                    tanh = grad.div_(cap).tanh_()  # in place: the [chunk, V] block now holds tanh
                    grad = tanh.mul(cap)  # the capped logits
                # d logp[t]/d logits = onehot(t) - softmax(logits), built in place
                grad.sub_(lse[e, None]).exp_().neg_()
                grad.scatter_add_(1, t[:, None], torch.ones_like(grad[:, :1]))
                grad.mul_(grad_logps[e, None].to(grad.dtype))
                if cap is not None:
                    # d cap(x)/dx = 1 - tanh(x/c)^2
                    grad.mul_(tanh.square_().neg_().add_(1))
                    del tanh
                if need_h:
                    grad_hidden[e] = grad.to(weight.dtype) @ weight
                if need_w:
                    grad_weight.addmm_(grad.T, h.to(acc))
                if need_b:
                    grad_bias += grad.sum(0)
        grad_weight = grad_weight.to(weight.dtype) if need_w else None
        grad_bias = grad_bias.to(bias.dtype) if need_b else None
        return grad_hidden, grad_weight, grad_bias, None, None, None, None


def _log_sum_sq(logits: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """``log Σ_v p_v²`` per row of ``[T, V]`` logits whose log-sum-exp is ``lse`` ``[T]``."""
    return torch.logsumexp(2 * (logits.detach() - lse.detach()[:, None]), 1)


def chunked_head_logps(hidden, weight, bias, targets, *, chunk_size: int | None = None,
                       softcap: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The recompute path on its own: log-probs of ``targets`` ``[T]`` under the head applied to
    ``hidden`` ``[T, H]``, and each token's mean logit ``[T]`` (detached), ``chunk_size`` tokens
    at a time (default ``default_chunk_size(V)``); see ``_ChunkedHeadLogps``."""
    chunk = chunk_size or default_chunk_size(weight.shape[0])
    return _ChunkedHeadLogps.apply(hidden, weight, bias, targets, chunk, softcap)[:2]


def _row_sums(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per head chunk so one ``[chunk, V]`` logits block holds ``CHUNK_ELEMENTS`` values."""
    return max(1, CHUNK_ELEMENTS // max(vocab_size, 1))


def _pack(input_ids, attention_mask):
    """Padding-free layout of a ``[N, L]`` batch: its real tokens as one ``[1, T]`` row with
    ``position_ids`` restarting at 0 for every sequence, and ``flat [N, L]`` giving each kept
    token's index in that row. transformers reads restarting positions with no attention mask as
    packed sequences (varlen kernels for flash-attention, a block-diagonal mask otherwise)."""
    keep = attention_mask.bool()
    positions = keep.long().cumsum(1) - 1
    flat = keep.flatten().long().cumsum(0).view_as(keep) - 1
    return input_ids[keep][None], positions[keep][None], flat


def padding_free_default(model) -> bool:
    """Padding-free is the default where packed sequences attend to themselves alone: with
    flash-attention's variable-length kernels, and with sdpa (``SEGMENT_SDPA``, one causal sdpa call
    per sequence) for the architectures of ``CHUNKED_MODEL_TYPES``, whose packed forward is tested
    here. Eager attention would build a dense ``[T, T]`` block-diagonal mask, which costs more than
    the padding it saves."""
    config = getattr(unwrap(model), "config", None)
    impl = getattr(config, "_attn_implementation", None) or ""
    if impl in ("sdpa", SEGMENT_SDPA):
        return getattr(config, "model_type", None) in CHUNKED_MODEL_TYPES
    return impl.startswith("flash_attention")


@dataclass
class HeadInputs:
    """What the LM head sees for the scored tokens of a ``[N, L]`` batch, in row order (row 0's
    scored tokens first, each row's in position order).

    ``hidden``: final hidden states at the positions that predict the scored tokens, ``[T, H]``
    (differentiable). ``targets``: the scored token ids, ``[T]``. ``rows``: each token's row,
    ``[T]``. ``lengths``: scored tokens per row, ``[N]``. ``weight``/``bias``: the head's
    parameters (``bias`` may be ``None``); ``softcap``: the final-logit soft-capping constant or
    ``None``."""

    hidden: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor
    lengths: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    softcap: float | None


def _scored_positions(model, input_ids, attention_mask, response_mask, padding_free):
    """Model inputs and the scored tokens' bookkeeping shared by every path."""
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].bool()
    lengths = mask.sum(1)
    n = input_ids.shape[0]
    rows = torch.arange(n, device=input_ids.device)[:, None].expand_as(mask)[mask]
    if padding_free is None:
        padding_free = padding_free_default(model)
    if padding_free:
        # Scored token t of row i is predicted at position t-1 of that row.
        packed_ids, position_ids, flat = _pack(input_ids, attention_mask)
        use_segment_attention(model)
        inputs = dict(input_ids=packed_ids, position_ids=position_ids,
                      **sequence_bounds(attention_mask.sum(1)))
        source = flat[:, :-1][mask]
    else:
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask)

    def scored(states):  # [N, L, ...] (or packed [1, T, ...]) -> [tokens scored, ...]
        return states[0, source] if padding_free else states[:, :-1][mask]

    return inputs, scored, targets[mask], rows, lengths


def head_inputs(model, input_ids, attention_mask, response_mask, *,
                padding_free: bool | None = False) -> HeadInputs:
    """Run the model body once and return the scored tokens' final hidden states with the head's
    parameters (``HeadInputs``), for a caller that applies the LM head itself. The model must
    satisfy ``supports_chunked``; arguments as for ``sequence_logps``."""
    inputs, scored, targets, rows, lengths = _scored_positions(
        model, input_ids, attention_mask, response_mask, padding_free)
    inner = unwrap(model)
    with packed_forward() if "cu_seq_lens_q" in inputs else contextlib.nullcontext():
        out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
    head = inner.get_output_embeddings()
    return HeadInputs(scored(out.hidden_states[-1]), targets, rows, lengths, head.weight, head.bias,
                      getattr(inner.config, "final_logit_softcapping", None))


def sequence_logps(model, input_ids, attention_mask, response_mask, *, path: str = "auto",
                   chunk_size: int | None = None, padding_free: bool | None = False,
                   sum_sq_probs: bool = False) -> SequenceLogps:
    """Summed response-token log-probs of each row of a ``[N, L]`` batch.

    ``response_mask[i, t] = 1`` marks token ``t`` of row ``i`` as scored: its log-prob
    ``log π(x_t | x_<t)`` comes from position ``t-1``. ``path`` is ``auto`` (chunked when
    ``supports_chunked``), ``chunked`` or ``plain``; asking for ``chunked`` on an unsupported model
    raises ``ValueError``. ``chunk_size`` (tokens per head chunk) defaults to
    ``default_chunk_size(V)``. ``padding_free=True`` drops padding and runs the forward on one
    packed ``[1, T]`` row (rows must be contiguous runs of ``attention_mask == 1``, as
    ``PreferenceCollator`` makes them); ``None`` = ``padding_free_default(model)``. Same numbers
    as the padded forward. ``sum_sq_probs=True`` also fills ``log_sum_sq`` (WPO's alignment term).
    Log-probs are float32 (float64 for a float64 model). Source: the
    ``get_batch_logps`` of TRL / princeton-nlp/SimPO, minus the full-vocabulary logits.
    """
    if path not in ("auto", "chunked", "plain"):
        raise ValueError(f"path must be auto, chunked or plain, got '{path}'")
    n = input_ids.shape[0]
    supported = supports_chunked(model)
    if path == "chunked" and not supported:
        raise ValueError(f"the chunked log-prob path does not support {type(unwrap(model)).__name__}")
    if path != "plain" and supported:
        head = head_inputs(model, input_ids, attention_mask, response_mask, padding_free=padding_free)
        rows, lengths = head.rows, head.lengths
        vocab = head.weight.ds_shape[0] if _is_zero3(head.weight) else head.weight.shape[0]
        token_logps, token_means, token_sum_sq = _ChunkedHeadLogps.apply(
            head.hidden, head.weight, head.bias, head.targets, chunk_size or default_chunk_size(vocab),
            head.softcap, sum_sq_probs)
    else:
        inputs, scored, targets, rows, lengths = _scored_positions(
            model, input_ids, attention_mask, response_mask, padding_free)
        with packed_forward() if "cu_seq_lens_q" in inputs else contextlib.nullcontext():
            logits = scored(model(**inputs, use_cache=False).logits)
        logits = logits.to(compute_dtype(logits.dtype))
        lse = logits.logsumexp(1)
        token_logps = logits.gather(1, targets[:, None])[:, 0] - lse
        token_means = logits.detach().mean(1)
        token_sum_sq = _log_sum_sq(logits, lse) if sum_sq_probs else None
    denom = lengths.clamp(min=1).to(token_means.dtype)
    return SequenceLogps(_row_sums(token_logps, rows, n), lengths,
                         _row_sums(token_means.detach(), rows, n) / denom,
                         _row_sums(token_sum_sq, rows, n) if sum_sq_probs else None)
