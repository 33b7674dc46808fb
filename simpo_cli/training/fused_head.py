"""Fused LM head + objective: log-probs, loss and head gradients in one pass over the vocabulary.

The chunked path of ``simpo_cli.training.logps`` costs 4 matmul units per scored token (logits in
the forward; recomputed logits, grad wrt hidden and grad wrt weight in the backward). Here the
gradients are computed in the forward pass, 3 units per token, without ever holding more than one
``[chunk, V]`` block of logits:

    z_t = W h_t (+ b),  q_t = softmax(z_t),  d logp_t / d z_t = onehot(y_t) - q_t.

The loss reaches token ``t`` only through its sequence's log-prob ``logp_s``, so with the
per-sequence scalar ``c_s = d loss / d logp_s``

    grad h_t = c_s (W[y_t] - q_t W)         grad W = sum_s c_s (sum_{t in s} onehot(y_t) h_t^T - P_s),
                                            P_s = sum_{t in s} q_t h_t^T  ([V, H]).

``q_t W`` (unit 2) and ``P_s`` (unit 3) do not depend on ``c_s``, so both are computed chunk by
chunk right after the logits (unit 1), before ``c_s`` is known. Sequences are processed one group
at a time (a preference pair: its chosen and rejected row); once every token of the group has been
scored its log-probs are complete, the objective is evaluated on that group alone and autograd on
its ``[2]`` log-probs gives ``c_s``. The objective stays a pure function of per-sequence log-probs;
it must decompose over groups (``ObjectiveSpec.pairwise``). Extra memory: one ``[V, H]`` float32
accumulator per sequence of a group (two for a pair), ``[T, H]`` for the brackets, one or two
``[chunk, V]`` blocks. The one-hot terms are scatter-adds.

WPO's sampled alignment (``ObjectiveSpec.needs_sum_sq_probs``) also needs ``log Σ_v q_tv²`` per
token: one log-sum-exp over each ``[chunk, V]`` block, summed per row before the group's loss.

Gemma-2's soft-capping ``cap(x) = c tanh(x/c)``: ``q_t`` becomes ``softmax(cap(x_t)) ⊙ cap'(x_t)``
and the one-hot term is scaled by ``cap'`` at the target.

Used by ``PreferenceTrainer.compute_loss`` when gradients are needed, the model's head satisfies
``supports_fused`` and the accumulators fit ``FUSED_ACCUMULATOR_BYTES``; otherwise it falls back to
``sequence_logps`` (the recompute path) and the objective applied to the whole batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from simpo_cli.objectives import ObjectiveOutput, ObjectiveSpec, PreferenceLogps
from simpo_cli.training.logps import (
    compute_dtype,
    default_chunk_size,
    head_inputs,
    output_head,
    supports_chunked,
)

# The two [V, H] float32 accumulators of a pair may use at most this much memory; above it (an
# 8B model's head: 2 x 2.1 GB) the recompute path is used.
FUSED_ACCUMULATOR_BYTES = 2**31
# PreferenceLogps fields holding one value per pair (sliced per pair); every other tensor field
# must be a batch-level input of the objective (KTO's mismatched rows), passed whole.
PER_PAIR_FIELDS = ("chosen", "rejected", "chosen_lengths", "rejected_lengths", "ref_chosen", "ref_rejected",
                   "chosen_log_sum_sq", "rejected_log_sum_sq")
BATCH_FIELDS = ("kl", "ref_kl")


@dataclass
class FusedHeadOutput:
    """``loss``: scalar, differentiable wrt the hidden states and head parameters (its backward only
    scales the gradients computed in the forward). ``logps``: summed log-prob per row, ``[N]``,
    nats (detached). ``logits_mean``: mean logit per row, ``[N]`` (detached). ``log_sum_sq``: with
    ``sum_sq=True``, ``Σ_t log Σ_v p_v²`` per row, ``[N]``, nats (detached; WPO), else ``None``."""

    loss: torch.Tensor
    logps: torch.Tensor
    logits_mean: torch.Tensor
    log_sum_sq: torch.Tensor | None = None


def supports_fused(model) -> bool:
    """True when the fused head applies: a head ``supports_chunked`` accepts that is not
    ZeRO-3-partitioned (its full-size gradient would have to be produced outside DeepSpeed's
    hooks) and, when the head is trained, whose two accumulators fit ``FUSED_ACCUMULATOR_BYTES``
    (a frozen head, e.g. under LoRA, needs none)."""
    if not supports_chunked(model):
        return False
    weight = output_head(model).weight
    if hasattr(weight, "ds_id"):
        return False
    return not weight.requires_grad or 2 * weight.numel() * 4 <= FUSED_ACCUMULATOR_BYTES


def _matmul_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype autograd would run the head's matmuls in: autocast's when it is on."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return dtype


def _fused_pass(hidden, weight, bias, targets, lengths, groups, group_loss, chunk, softcap,
                need_h, need_w, need_b, sum_sq=False):
    acc = compute_dtype(weight.dtype)
    mm = _matmul_dtype(hidden.device, weight.dtype)
    w_mm = weight.detach().to(mm)
    b_mm = None if bias is None else bias.detach().to(mm)
    h_all = hidden.detach()
    vocab, width = weight.shape
    n = lengths.shape[0]
    offsets = (torch.cumsum(lengths, 0) - lengths).tolist()
    counts = lengths.tolist()

    token_logps = torch.empty(h_all.shape[0], dtype=acc, device=h_all.device)
    token_sum_sq = torch.empty(h_all.shape[0] if sum_sq else 0, dtype=acc, device=h_all.device)
    logit_sums = torch.zeros(n, dtype=acc, device=h_all.device)
    # d logp_t / d z_t at the target: 1, or cap'(z_t[y_t]) under soft-capping.
    target_slope = torch.ones(h_all.shape[0], dtype=acc, device=h_all.device)
    bracket = torch.empty(h_all.shape, dtype=acc, device=h_all.device) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
    grad_b = torch.zeros(vocab, dtype=acc, device=weight.device) if need_b else None
    width_max = max((len(g) for g in groups), default=0)
    partial_w = [torch.empty(vocab, width, dtype=acc, device=weight.device) for _ in range(width_max)] if need_w else []
    partial_b = [torch.empty(vocab, dtype=acc, device=weight.device) for _ in range(width_max)] if need_b else []
    loss = torch.zeros((), dtype=acc, device=h_all.device)

    # Reused [chunk, V] blocks: fresh ones per chunk would be page-faulted in every time.
    block_rows = max(1, min(chunk, max(counts, default=1)))
    z_buf = torch.empty(block_rows, vocab, dtype=acc, device=h_all.device)
    q_buf = torch.empty_like(z_buf)
    cap_buf = torch.empty_like(z_buf) if softcap is not None else None
    w_t = w_mm.T
    for g, group in enumerate(groups):
        for k, row in enumerate(group):
            start, count = offsets[row], counts[row]
            for s in range(start, start + count, chunk):
                e = min(s + chunk, start + count)
                h, y = h_all[s:e], targets[s:e]
                z, q = z_buf[:e - s], q_buf[:e - s]
                if mm == acc:
                    if b_mm is None:
                        torch.mm(h.to(mm), w_t, out=z)
                    else:
                        torch.addmm(b_mm, h.to(mm), w_t, out=z)
                else:
                    z.copy_(F.linear(h.to(mm), w_mm, b_mm))
                if softcap is not None:
                    tanh = z.div_(softcap).tanh_()
                    z = torch.mul(tanh, softcap, out=cap_buf[:e - s])
                    logit_sums[row] += z.sum()
                # log_softmax is one vectorised kernel; exp of it in place is the softmax.
                torch.log_softmax(z, 1, out=q)
                token_logps[s:e] = q.gather(1, y[:, None])[:, 0]
                if sum_sq:  # log Σ_v q_v² = logsumexp(2 log q), for WPO's alignment
                    torch.logsumexp(2 * q, 1, out=token_sum_sq[s:e])
                q.exp_()
                if softcap is not None:
                    slope = tanh.square_().neg_().add_(1)  # cap'(x) = 1 - tanh(x/c)^2
                    target_slope[s:e] = slope.gather(1, y[:, None])[:, 0]
                    q.mul_(slope)
                if need_h:
                    bracket[s:e] = -(q.to(mm) @ w_mm).to(acc)
                if need_w:
                    if s == start:
                        torch.mm(q.T, h.to(acc), out=partial_w[k])
                    else:
                        partial_w[k].addmm_(q.T, h.to(acc))
                if need_b:
                    if s == start:
                        torch.sum(q, 0, out=partial_b[k])
                    else:
                        partial_b[k] += q.sum(0)
        # Every token of the group is scored: evaluate the objective on the group alone.
        seq_logps = torch.stack([token_logps[offsets[r]:offsets[r] + counts[r]].sum() for r in group])
        with torch.enable_grad():
            x = seq_logps.detach().requires_grad_()
            if sum_sq:
                value = group_loss(g, x, torch.stack([token_sum_sq[offsets[r]:offsets[r] + counts[r]].sum()
                                                      for r in group]))
            else:
                value = group_loss(g, x)
            coeff = torch.autograd.grad(value, x)[0] if value.requires_grad else torch.zeros_like(x)
        loss += value.detach().to(acc)
        coeff = coeff.detach().to(acc)
        for k, row in enumerate(group):
            start, count = offsets[row], counts[row]
            if count == 0:
                continue
            s, e = start, start + count
            y, c = targets[s:e], coeff[k]
            scale = c * target_slope[s:e]
            if need_h:
                bracket[s:e].mul_(c).add_(scale[:, None] * weight.detach()[y].to(acc))
            if need_w:
                grad_w.addcmul_(partial_w[k], -c)
                grad_w.index_add_(0, y, h_all[s:e].to(acc) * scale[:, None])
            if need_b:
                grad_b.addcmul_(partial_b[k], -c)
                grad_b.index_add_(0, y, scale)
    seq_logps = torch.zeros(n, dtype=acc, device=h_all.device)
    seq_sum_sq = torch.zeros(n if sum_sq else 0, dtype=acc, device=h_all.device)
    for r in range(n):
        seq_logps[r] = token_logps[offsets[r]:offsets[r] + counts[r]].sum()
        if sum_sq:
            seq_sum_sq[r] = token_sum_sq[offsets[r]:offsets[r] + counts[r]].sum()
    if softcap is None:
        # Without capping a token's mean logit is linear in h: h . mean_v(W) (+ mean(b)), no pass
        # over the [chunk, V] blocks needed.
        token_means = h_all.to(acc) @ weight.detach().to(acc).mean(0)
        if bias is not None:
            token_means += bias.detach().to(acc).mean()
        rows = torch.repeat_interleave(torch.arange(n, device=h_all.device), lengths)
        logit_sums.index_add_(0, rows, token_means)
    logits_mean = logit_sums / (lengths.clamp(min=1).to(acc) * (1 if softcap is None else vocab))
    return loss, seq_logps, logits_mean, seq_sum_sq, bracket, grad_w, grad_b


class _FusedHeadLoss(torch.autograd.Function):
    """Forward: ``_fused_pass`` (loss, log-probs and head gradients); backward: those gradients
    times the incoming scalar. Not twice differentiable."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, lengths, groups, group_loss, chunk, softcap, sum_sq):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and bias is not None
        loss, logps, means, sums_sq, grad_h, grad_w, grad_b = _fused_pass(
            hidden, weight, bias, targets, lengths, groups, group_loss, chunk, softcap, need_h, need_w, need_b,
            sum_sq)
        ctx.grads = (
            None if grad_h is None else grad_h.to(hidden.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
        )
        ctx.mark_non_differentiable(logps, means, sums_sq)
        return loss, logps, means, sums_sq

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_logps, _grad_means, _grad_sums_sq):
        grads = [None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in ctx.grads]
        ctx.grads = None
        return (*grads, None, None, None, None, None, None, None)


def fused_head_loss(hidden, weight, bias, targets, lengths, groups: Sequence[Sequence[int]],
                    group_loss: Callable[..., torch.Tensor], *,
                    chunk_size: int | None = None, softcap: float | None = None,
                    sum_sq: bool = False) -> FusedHeadOutput:
    """Loss ``sum_g group_loss(g, logps[groups[g]])`` of sequences scored by a linear LM head, with
    the head's gradients computed in the same pass (3 matmul units per token).

    ``hidden`` ``[T, H]`` and ``targets`` ``[T]`` hold the scored tokens row after row
    (``HeadInputs`` order); ``lengths`` ``[N]`` counts each row's tokens; ``groups`` partitions
    the rows (every row in exactly one group); ``group_loss(g, x)`` maps group ``g``'s summed
    log-probs ``x`` (``[len(groups[g])]``, nats) to a differentiable scalar and must not depend on
    other groups' log-probs. ``chunk_size`` tokens per ``[chunk, V]`` logits block (default
    ``default_chunk_size(V)``); ``softcap`` as Gemma-2's ``final_logit_softcapping``.
    ``sum_sq=True``: ``group_loss(g, x, s)`` also gets the group's ``Σ_t log Σ_v p_v²`` per row
    (``s``, detached; WPO's alignment) and the output its ``log_sum_sq``. Softmax and accumulators
    run in float32 (float64 for float64 weights)."""
    chunk = chunk_size or default_chunk_size(weight.shape[0])
    loss, logps, means, sums_sq = _FusedHeadLoss.apply(hidden, weight, bias, targets, lengths, groups, group_loss,
                                                       chunk, softcap, sum_sq)
    return FusedHeadOutput(loss, logps, means, sums_sq if sum_sq else None)


def pair_logps(template: PreferenceLogps, i: int, chosen: torch.Tensor, rejected: torch.Tensor) -> PreferenceLogps:
    """Pair ``i`` of ``template`` as a batch of one, with ``chosen``/``rejected`` (``[1]``) in
    place of its policy log-probs; batch-level fields (``BATCH_FIELDS``) are kept whole."""
    values = {}
    for f in dataclasses.fields(template):
        value = getattr(template, f.name)
        if f.name == "chosen":
            value = chosen
        elif f.name == "rejected":
            value = rejected
        elif f.name in PER_PAIR_FIELDS and value is not None:
            value = value[i:i + 1]
        elif f.name not in BATCH_FIELDS and isinstance(value, torch.Tensor):
            raise ValueError(f"fused head: PreferenceLogps field '{f.name}' is neither per pair nor batch-level")
        values[f.name] = value
    return PreferenceLogps(**values)


def fused_preference_loss(model, inputs: dict, objective: ObjectiveSpec, objective_kwargs: dict,
                          fill_reference: Callable[[PreferenceLogps], None], *,
                          padding_free: bool | None = False, chunk_size: int | None = None,
                          ) -> tuple[torch.Tensor, PreferenceLogps, ObjectiveOutput, torch.Tensor]:
    """``objective``'s batch-mean loss on a ``[2B, L]`` chosen-then-rejected batch (keys
    ``input_ids``, ``attention_mask``, ``response_mask``), its head gradients computed in the
    forward by ``fused_head_loss`` with one group per pair. ``fill_reference(logps)`` fills the
    reference fields of a ``PreferenceLogps`` before the objective runs (it must not read the
    policy's ``chosen``/``rejected``, which are placeholders then).

    Returns ``(loss, logps, result, logits_mean)``: the differentiable scalar loss (the mean of
    ``result.losses``), the batch's ``PreferenceLogps`` (policy log-probs detached),
    ``objective.fn`` on it (for metrics) and the per-row mean logits ``[2B]``. Raises
    ``ValueError`` for an objective that does not decompose over pairs."""
    if not objective.pairwise:
        raise ValueError(f"objective '{objective.name}' does not decompose over pairs")
    head = head_inputs(model, inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"],
                       padding_free=padding_free)
    b = inputs["input_ids"].shape[0] // 2
    lengths = head.lengths
    placeholder = torch.zeros(b, dtype=compute_dtype(head.weight.dtype), device=lengths.device)
    template = PreferenceLogps(chosen=placeholder, rejected=placeholder,
                               chosen_lengths=lengths[:b], rejected_lengths=lengths[b:],
                               ref_chosen=inputs.get("ref_chosen_logps"),
                               ref_rejected=inputs.get("ref_rejected_logps"))
    fill_reference(template)

    sum_sq = objective.needs_sum_sq_probs

    def group_loss(i, x, sums_sq=None):
        pair = pair_logps(template, i, x[:1], x[1:])
        if sums_sq is not None:
            pair.chosen_log_sum_sq, pair.rejected_log_sum_sq = sums_sq[:1], sums_sq[1:]
        return objective.fn(pair, **objective_kwargs).losses.sum() / b

    out = fused_head_loss(head.hidden, head.weight, head.bias, head.targets, lengths,
                          [(i, b + i) for i in range(b)], group_loss, chunk_size=chunk_size,
                          softcap=head.softcap, sum_sq=sum_sq)
    logps = dataclasses.replace(template, chosen=out.logps[:b], rejected=out.logps[b:])
    if sum_sq:
        logps.chosen_log_sum_sq, logps.rejected_log_sum_sq = out.log_sum_sq[:b], out.log_sum_sq[b:]
    result = objective.fn(logps, **objective_kwargs)
    return out.loss, logps, result, out.logits_mean
