"""APO-zero: Anchored Preference Optimization (D'Oosterlinck et al. 2024, arXiv 2408.06266; TACL
2025)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simpo_cli.objectives._common import log_ratios
from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class APOZeroParams:
    """Settings of ``conf/objective/apo-zero.yaml``."""

    name: str = "apo-zero"
    beta: float = 0.1


def apo_zero(logps: PreferenceLogps, *, beta: float) -> ObjectiveOutput:
    """APO-zero loss, the paper's Eq. 7: ``−σ(β ρ(y_w)) + σ(β ρ(y_l))``.

    ``ρ(y) = log π_θ(y|x) − log π_ref(y|x)`` summed over response tokens (nats, ``[B]`` each).
    Unlike DPO, each side is anchored on its own: the chosen likelihood is pushed up and the
    rejected one down, whatever their difference (for data whose chosen answers beat the model).

    Departure from TRL 1.16 ``loss_type="apo_zero"``, followed here as the paper writes it: TRL
    returns ``(1 − σ(β ρ(y_w))) + σ(β ρ(y_l))``, the paper's loss plus the constant 1. Gradients
    are the same; this loss lies in ``(−1, 1)``, TRL's in ``(0, 2)``.

    Returns losses ``[B]`` and rewards ``β ρ(y_w)``, ``β ρ(y_l)`` (detached). Raises
    ``ValueError`` when the reference log-probs are missing.
    """
    chosen_ratio, rejected_ratio = log_ratios(logps, "apo-zero")
    chosen, rejected = beta * chosen_ratio, beta * rejected_ratio
    losses = torch.sigmoid(rejected) - torch.sigmoid(chosen)
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


register(
    name="apo-zero",
    fn=apo_zero,
    params=APOZeroParams,
    needs_reference=True,
    logp_reduction="sum",
    summary="APO-zero: raise the chosen and lower the rejected log-ratio, each anchored on its own",
)
