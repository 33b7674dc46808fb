"""Padding-free attention for sdpa models: each packed sequence attends to itself alone, with no
``[T, T]`` mask.

A padding-free batch is one ``[1, T]`` row holding every sequence's real tokens back to back
(``simpo_cli.training.logps``). With flash-attention transformers runs it through variable-length
kernels; with sdpa it builds a dense block-diagonal ``[T, T]`` mask, and sdpa's kernels then do
the work of a ``T``-long sequence for every query: more than the padding saved (T = 2,500 real
tokens of an 8 x 512 batch: 2.9x the attention FLOPs of the padded batch).

``SEGMENT_SDPA`` is registered with transformers' ``AttentionInterface`` and
``AttentionMaskInterface``. Given ``cu_seq_lens_q`` (the packed sequences' boundaries, ``[S + 1]``,
which ``packed_forward`` callers pass to the model) it runs causal sdpa on each sequence
separately, with no mask (sdpa's fused causal kernel); for anything else (padded batches,
generation with a cache) it is transformers' sdpa, unchanged, with sdpa's mask. Inside
``packed_forward`` the mask function builds nothing, since the boundaries replace the mask. The
numbers equal the padded batch's (same per-sequence attention; the body's matmuls see other
shapes, so float rounding may differ). The attention implementation is not saved with a model.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from simpo_cli.models.adapters import unwrap

SEGMENT_SDPA = "sdpa_segments"
_packed = contextvars.ContextVar("simpo_packed_forward", default=False)


def segment_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                         scaling: float | None = None, cu_seq_lens_q: torch.Tensor | None = None, **kwargs):
    """transformers' attention-function signature: ``query`` ``[1, heads, T, d]``, ``key``/``value``
    ``[1, kv_heads, T, d]`` → (``[1, T, heads, d]``, None). With ``cu_seq_lens_q`` and one packed row
    the mask is ignored and every sequence ``[s, e)`` gets causal attention over itself; otherwise
    ``sdpa_attention_forward`` as is."""
    bounds = None if cu_seq_lens_q is None or query.shape[0] != 1 else cu_seq_lens_q.tolist()
    if bounds is None or query.shape[2] != key.shape[2] or bounds[-1] != query.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    kwargs.pop("is_causal", None)
    sizes = [e - s for s, e in zip(bounds, bounds[1:]) if e > s]
    # split, not slicing: each slice's backward would zero-fill a full [1, heads, T, d] gradient.
    parts = [sdpa_attention_forward(module, q, k, v, None, dropout=dropout, scaling=scaling, is_causal=True,
                                    **kwargs)[0]
             for q, k, v in zip(query.split(sizes, 2), key.split(sizes, 2), value.split(sizes, 2))]
    return torch.cat(parts, 1), None


def segment_sdpa_mask(*args, **kwargs):
    """sdpa's mask, except inside ``packed_forward``, where the sequence boundaries replace it."""
    return None if _packed.get() else sdpa_mask(*args, **kwargs)


AttentionInterface.register(SEGMENT_SDPA, segment_sdpa_forward)
AttentionMaskInterface.register(SEGMENT_SDPA, segment_sdpa_mask)


def _base(model):
    model = unwrap(model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft


def use_segment_attention(model) -> bool:
    """Switch an sdpa model to ``SEGMENT_SDPA`` (idempotent; same results on padded input). True
    when the model now runs packed batches per sequence: ``SEGMENT_SDPA`` or flash-attention."""
    base = _base(model)
    impl = getattr(getattr(base, "config", None), "_attn_implementation", None) or ""
    if impl == "sdpa" and hasattr(base, "set_attn_implementation"):
        base.set_attn_implementation(SEGMENT_SDPA)
        impl = SEGMENT_SDPA
    return impl == SEGMENT_SDPA or impl.startswith("flash_attention")


def sequence_bounds(lengths: torch.Tensor) -> dict:
    """The model kwargs describing packed sequences of ``lengths`` tokens (``[S]``): transformers'
    ``cu_seq_lens_q/k`` (``[S + 1]`` int32 offsets) and ``max_length_q/k``, as flash-attention's
    variable-length kernels and ``segment_sdpa_forward`` read them."""
    cu = torch.zeros(lengths.shape[0] + 1, dtype=torch.int32, device=lengths.device)
    cu[1:] = lengths.cumsum(0)
    longest = int(lengths.max()) if lengths.numel() else 0
    return dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)


@contextlib.contextmanager
def packed_forward():
    """Around a model call on a packed ``[1, T]`` row with ``sequence_bounds`` kwargs: no mask is
    built for ``SEGMENT_SDPA``."""
    token = _packed.set(True)
    try:
        yield
    finally:
        _packed.reset(token)
