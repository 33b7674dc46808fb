"""Per-sequence log-probabilities of response tokens — the one unit every objective builds on.

Two paths give the same numbers (to float rounding):

- ``plain``: the model's full logits ``[N, L, V]``, log-softmax, gather. Works for any causal LM.
- ``chunked``: final hidden states of the response positions only, pushed through the LM head in
  chunks of ``chunk_size`` tokens with the log-sum-exp computed per chunk and recomputed in the
  backward pass (``_ChunkedHeadLogps``), so no ``[N, L, V]`` tensor ever exists and prompt or
  padding positions are never scored. Used for architectures whose head is a plain linear layer
  (optionally with Gemma-2's final-logit soft-capping); anything else falls back to ``plain``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Heads that are exactly ``hidden @ W.T`` (+ optional soft-capping) after the final norm.
CHUNKED_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "mixtral"}


@dataclass
class SequenceLogps:
    """``logps``: summed log-prob of each row's response tokens, ``[N]``, nats.
    ``lengths``: number of response tokens per row, ``[N]``.
    ``logits_mean``: mean logit over the vocabulary and the row's response positions, ``[N]``
    (detached; for the ``logits/chosen`` and ``logits/rejected`` metrics)."""

    logps: torch.Tensor
    lengths: torch.Tensor
    logits_mean: torch.Tensor


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def supports_chunked(model) -> bool:
    """True when the chunked path computes exactly what the model's own head would."""
    inner = _unwrap(model)
    config = getattr(inner, "config", None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if config is None or not isinstance(head, torch.nn.Linear):
        return False
    if getattr(config, "model_type", None) not in CHUNKED_MODEL_TYPES:
        return False
    # Sharded weights (DeepSpeed ZeRO-3 / FSDP) are not materialised outside the model's forward.
    return not hasattr(head.weight, "ds_id") and type(model).__name__ != "FullyShardedDataParallel"


class _ChunkedHeadLogps(torch.autograd.Function):
    """log softmax(h W^T + b)[target] for T rows, ``chunk`` rows at a time, in float32.

    Forward keeps only the inputs; backward recomputes each chunk's logits, so peak extra memory
    is one ``[chunk, V]`` block instead of ``[T, V]``."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, softcap):
        logps = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        logit_means = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        for s in range(0, hidden.shape[0], chunk):
            logits = _head(hidden[s : s + chunk], weight, bias, softcap)
            logps[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None])[:, 0] - logits.logsumexp(1)
            logit_means[s : s + chunk] = logits.mean(1)
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.chunk, ctx.softcap = chunk, softcap
        ctx.mark_non_differentiable(logit_means)
        return logps, logit_means

    @staticmethod
    def backward(ctx, grad_logps, _grad_means):
        hidden, weight, bias, targets = ctx.saved_tensors
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        grad_bias = (torch.zeros_like(bias, dtype=torch.float32)
                     if bias is not None and ctx.needs_input_grad[2] else None)
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s : s + ctx.chunk]
            raw = F.linear(h, weight, bias).float()
            logits = raw if ctx.softcap is None else torch.tanh(raw / ctx.softcap) * ctx.softcap
            # d logp[target] / d logits = onehot(target) - softmax(logits)
            grad = -torch.softmax(logits, dim=1)
            grad.scatter_add_(1, targets[s : s + ctx.chunk, None], torch.ones_like(grad[:, :1]))
            grad *= grad_logps[s : s + ctx.chunk, None]
            if ctx.softcap is not None:
                grad *= 1 - (logits / ctx.softcap) ** 2
            if grad_hidden is not None:
                grad_hidden[s : s + ctx.chunk] = (grad.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += grad.T @ h.float()
            if grad_bias is not None:
                grad_bias += grad.sum(0)
        grad_weight = grad_weight.to(weight.dtype) if grad_weight is not None else None
        grad_bias = grad_bias.to(bias.dtype) if grad_bias is not None else None
        return grad_hidden, grad_weight, grad_bias, None, None, None


def _head(h, weight, bias, softcap):
    logits = F.linear(h, weight, bias).float()
    return logits if softcap is None else torch.tanh(logits / softcap) * softcap


def _row_sums(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)


def sequence_logps(model, input_ids, attention_mask, response_mask, *, path: str = "auto",
                   chunk_size: int = 1024) -> SequenceLogps:
    """Summed response-token log-probs of each row of a ``[N, L]`` batch.

    ``response_mask[i, t] = 1`` marks token ``t`` of row ``i`` as scored: its log-prob
    ``log π(x_t | x_<t)`` comes from position ``t-1``. ``path`` is ``auto`` (chunked when
    ``supports_chunked``), ``chunked`` or ``plain``; asking for ``chunked`` on an unsupported model
    raises ``ValueError``. Source: the ``get_batch_logps`` of TRL / princeton-nlp/SimPO, minus the
    full-vocabulary logits.
    """
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].bool()
    lengths = mask.sum(1)
    n = input_ids.shape[0]
    rows = torch.arange(n, device=input_ids.device)[:, None].expand_as(mask)[mask]
    use_chunked = path == "chunked" or (path == "auto" and supports_chunked(model))
    if path == "chunked" and not supports_chunked(model):
        raise ValueError(f"the chunked log-prob path does not support {type(_unwrap(model)).__name__}")
    if use_chunked:
        inner = _unwrap(model)
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                    output_hidden_states=True, logits_to_keep=1)
        hidden = out.hidden_states[-1][:, :-1][mask]
        head = inner.get_output_embeddings()
        softcap = getattr(inner.config, "final_logit_softcapping", None)
        token_logps, token_means = _ChunkedHeadLogps.apply(
            hidden, head.weight, head.bias, targets[mask], chunk_size, softcap)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        logits = logits[:, :-1][mask].float()
        token_logps = logits.gather(1, targets[mask][:, None])[:, 0] - logits.logsumexp(1)
        token_means = logits.detach().mean(1)
    denom = lengths.clamp(min=1).float()
    return SequenceLogps(_row_sums(token_logps, rows, n), lengths,
                         _row_sums(token_means.detach(), rows, n) / denom)
