"""AlphaPO: Reward Shape Matters for LLM Alignment (Gupta et al. 2025, arXiv 2501.03884)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simpo_cli.objectives._common import bt_loss
from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class AlphaPOParams:
    """Settings of ``conf/objective/alphapo.yaml``: SimPO's β and γ plus the reward shape α."""

    name: str = "alphapo"
    alpha: float = 0.25
    beta: float = 2.5
    gamma: float = 0.1  # the target margin, absolute, as SimPO's (TRL: simpo_gamma)
    label_smoothing: float = 0.0


def alpha_reward(avg_logps: torch.Tensor, alpha: float) -> torch.Tensor:
    """AlphaPO's reward shape without β: ``(1 − exp(−α·ŝ))/α`` for the length-averaged log-prob
    ``ŝ = log π(y|x)/|y|`` (nats per token, ``[B]``), i.e. ``(1 − p^(−α/|y|))/α`` with
    ``p = π(y|x)``; α = 0 is its limit ``ŝ`` (SimPO's reward). ``−expm1(−α ŝ)/α`` keeps small α
    exact."""
    if alpha == 0:
        return avg_logps
    return -torch.expm1(-alpha * avg_logps) / alpha


def alphapo(
    logps: PreferenceLogps,
    *,
    alpha: float,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> ObjectiveOutput:
    """AlphaPO loss: SimPO (PAPER.md Eq. 6) on the α-shaped reward
    ``r_α(y) = β (1 − exp(−α ŝ(y)))/α``, ``ŝ(y) = log π_θ(y|x)/|y|``:

        ``−(1−ε)·log σ(z) − ε·log σ(−z)``,  ``z = r_α(y_w) − r_α(y_l) − γ``

    (ε = ``label_smoothing``; ε = 0 is the paper's loss). Built from ``logps.chosen``/``rejected``
    (summed, ``[B]``, nats) and the lengths; no reference model. α → 0 gives SimPO with the same β
    and γ; α > 0 flattens the reward for unlikely responses (the paper's Table 3 uses α = 0.25).

    Source: AlphaPO paper, the reward of §3 in the SimPO loss; the same as TRL 1.16's
    ``CPOTrainer(loss_type="alphapo")`` (``loss_type="simpo"``, ``cpo_alpha=0``, reward
    ``(1 − p^(−α))/α`` on length-averaged log-probs, ``simpo_gamma`` = γ).

    Returns losses ``[B]`` and rewards ``r_α(y_w)``, ``r_α(y_l)`` (detached).
    """
    chosen = beta * alpha_reward(logps.chosen_avg, alpha)
    rejected = beta * alpha_reward(logps.rejected_avg, alpha)
    losses = bt_loss(chosen - rejected - gamma, label_smoothing)
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


register(
    name="alphapo",
    fn=alphapo,
    params=AlphaPOParams,
    needs_reference=False,
    logp_reduction="mean",
    summary="AlphaPO: SimPO on an alpha-shaped length-normalised reward (alpha -> 0 is SimPO)",
)
