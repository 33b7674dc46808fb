"""Small helpers shared by several objectives (not objectives themselves)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simpo_cli.objectives.base import PreferenceLogps


def log_ratios(logps: PreferenceLogps, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ(y_w), ρ(y_l) = log π_θ(y|x) − log π_ref(y|x), summed over response tokens, ``[B]`` each.

    Raises ``ValueError`` naming the objective when the reference log-probs are missing."""
    if logps.ref_chosen is None or logps.ref_rejected is None:
        raise ValueError(f"{name}: needs reference log-probs (logps.ref_chosen/ref_rejected)")
    return logps.chosen - logps.ref_chosen, logps.rejected - logps.ref_rejected


def bt_loss(z: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Bradley–Terry loss ``−(1−ε)·log σ(z) − ε·log σ(−z)`` (ε = 0: ``−log σ(z)``), elementwise."""
    losses = -F.logsigmoid(z)
    if label_smoothing:
        losses = losses * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing
    return losses
