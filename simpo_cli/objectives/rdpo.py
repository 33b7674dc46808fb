"""R-DPO: length-regularised DPO (Park et al. 2024, arXiv 2403.19159); PAPER.md Table 3."""

from __future__ import annotations

from dataclasses import dataclass

from simpo_cli.objectives._common import bt_loss, log_ratios
from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class RDPOParams:
    """Settings of ``conf/objective/rdpo.yaml``."""

    name: str = "rdpo"
    beta: float = 0.1
    alpha: float = 0.05  # length penalty α, per response token


def rdpo(logps: PreferenceLogps, *, beta: float, alpha: float = 0.05) -> ObjectiveOutput:
    """R-DPO loss, PAPER.md Table 3: ``−log σ(β ρ(y_w) − β ρ(y_l) − (α|y_w| − α|y_l|))``.

    ``ρ`` uses **summed** response log-probs (nats, ``[B]``); ``|y|`` are ``logps.chosen_lengths``
    and ``logps.rejected_lengths`` (response tokens). α = 0 is DPO. The length term enters the loss
    only; rewards are DPO's ``β ρ(y_w)``, ``β ρ(y_l)`` (detached). Raises ``ValueError`` when the
    reference log-probs are missing.
    """
    chosen_ratio, rejected_ratio = log_ratios(logps, "rdpo")
    length_gap = alpha * (logps.chosen_lengths.to(chosen_ratio.dtype) - logps.rejected_lengths.to(chosen_ratio.dtype))
    losses = bt_loss(beta * (chosen_ratio - rejected_ratio) - length_gap)
    return ObjectiveOutput(losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


register(
    name="rdpo",
    fn=rdpo,
    params=RDPOParams,
    needs_reference=True,
    logp_reduction="sum",
    summary="R-DPO: DPO with a response-length penalty α(|y_w| - |y_l|)",
)
