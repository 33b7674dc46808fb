"""DiscoPOP: Discovering Preference Optimization Algorithms with and for Large Language Models
(Chris Lu et al. 2024, arXiv 2406.08414)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from simpo_cli.objectives._common import log_ratios
from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class DiscoPOPParams:
    """Settings of ``conf/objective/discopop.yaml``."""

    name: str = "discopop"
    beta: float = 0.05
    tau: float = 0.05  # the mixing temperature (TRL: discopop_tau)


def discopop(logps: PreferenceLogps, *, beta: float, tau: float = 0.05) -> ObjectiveOutput:
    """DiscoPOP's log-ratio modulated loss (LRML), the paper's Eq. 5: with
    ``z = β (ρ(y_w) − ρ(y_l))`` and ``m = σ(z/τ)``,

        ``(1 − m) · (−log σ(z)) + m · exp(−z)``,

    a blend of DPO's logistic loss (``z`` < 0) and the exponential loss (``z`` > 0).
    ``ρ(y) = log π_θ(y|x) − log π_ref(y|x)`` summed over response tokens (nats, ``[B]`` each).

    ``m · exp(−z)`` is computed as ``exp(log σ(z/τ) − z)`` and ``1 − m`` as ``σ(−z/τ)``: the same
    values, but finite where ``exp(−z)`` alone overflows (TRL 1.16 multiplies 0 by ``inf`` there
    and returns NaN). Otherwise equal to TRL 1.16's ``loss_type="discopop"`` (``discopop_tau`` =
    τ, default 0.05 as in the paper).

    Returns losses ``[B]`` and rewards ``β ρ(y_w)``, ``β ρ(y_l)`` (detached). Raises
    ``ValueError`` when the reference log-probs are missing.
    """
    chosen_ratio, rejected_ratio = log_ratios(logps, "discopop")
    z = beta * (chosen_ratio - rejected_ratio)
    losses = torch.sigmoid(-z / tau) * -F.logsigmoid(z) + torch.exp(F.logsigmoid(z / tau) - z)
    return ObjectiveOutput(losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


register(
    name="discopop",
    fn=discopop,
    params=DiscoPOPParams,
    needs_reference=True,
    logp_reduction="sum",
    summary="DiscoPOP: logistic/exponential loss blend on DPO's log-ratio margin (temperature tau)",
)
