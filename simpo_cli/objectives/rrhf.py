"""RRHF: Rank Responses to align Human Feedback (Yuan et al. 2023, arXiv 2304.05302); PAPER.md Table 3."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class RRHFParams:
    """Settings of ``conf/objective/rrhf.yaml``. RRHF has no β."""

    name: str = "rrhf"
    sft_weight: float = 1.0  # λ, the weight of the chosen response's (summed) NLL


def rrhf(logps: PreferenceLogps, *, sft_weight: float = 1.0) -> ObjectiveOutput:
    """RRHF loss for a pair, PAPER.md Table 3:
    ``max(0, −(1/|y_w|) log π_θ(y_w|x) + (1/|y_l|) log π_θ(y_l|x)) − λ log π_θ(y_w|x)``.

    The ranking term compares **length-averaged** log-probs (``logps.chosen_avg``/``rejected_avg``,
    nats per token); the NLL term uses the **summed** chosen log-prob (RRHF paper: ``L_ft`` is the
    summed cross-entropy of the best response). No reference model.

    Returns losses ``[B]`` and rewards = the length-averaged log-probs (detached; RRHF's ``p_i``).
    """
    chosen_avg, rejected_avg = logps.chosen_avg, logps.rejected_avg
    losses = torch.relu(rejected_avg - chosen_avg)
    if sft_weight:
        losses = losses - sft_weight * logps.chosen
    return ObjectiveOutput(losses, chosen_avg.detach(), rejected_avg.detach())


register(
    name="rrhf",
    fn=rrhf,
    params=RRHFParams,
    needs_reference=False,
    logp_reduction="mean",
    summary="RRHF: ranking hinge on length-averaged log-probs plus the chosen NLL",
)
