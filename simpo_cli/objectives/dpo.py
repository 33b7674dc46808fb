"""DPO: Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290); PAPER.md Table 3."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simpo_cli.objectives._common import bt_loss, log_ratios
from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class DPOParams:
    """Settings of ``conf/objective/dpo.yaml``."""

    name: str = "dpo"
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid | hinge
    label_smoothing: float = 0.0  # conservative DPO (cDPO); 0 is the paper's loss


def dpo(
    logps: PreferenceLogps,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> ObjectiveOutput:
    """DPO loss, PAPER.md Table 3: ``−log σ(β ρ(y_w) − β ρ(y_l))``.

    ``ρ(y) = log π_θ(y|x) − log π_ref(y|x)`` uses **summed** response log-probs (nats; ``[B]``
    each: ``logps.chosen``, ``logps.rejected``, ``logps.ref_chosen``, ``logps.ref_rejected``).
    With ``z = β (ρ(y_w) − ρ(y_l))``:

    - ``sigmoid``: ``−(1−ε)·log σ(z) − ε·log σ(−z)`` (ε = ``label_smoothing``; ε = 0 is the paper);
    - ``hinge``: ``relu(1 − z)`` (SLiC's calibration loss on log-ratios, TRL's ``loss_type="hinge"``).

    Departure from TRL 1.16: its ``sigmoid`` loss ignores ``label_smoothing``; here ε > 0 gives the
    conservative-DPO loss above (TRL ≤ 0.x and torchtune's ``DPOLoss``). With ε = 0 the two agree.

    Returns losses ``[B]`` and rewards ``β ρ(y_w)``, ``β ρ(y_l)`` (detached). Raises ``ValueError``
    for an unknown ``loss_type`` or missing reference log-probs.
    """
    chosen_ratio, rejected_ratio = log_ratios(logps, "dpo")
    z = beta * (chosen_ratio - rejected_ratio)
    if loss_type == "sigmoid":
        losses = bt_loss(z, label_smoothing)
    elif loss_type == "hinge":
        losses = torch.relu(1 - z)
    else:
        raise ValueError(f"dpo: unknown loss_type '{loss_type}'; choose from: sigmoid, hinge")
    return ObjectiveOutput(losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


register(
    name="dpo",
    fn=dpo,
    params=DPOParams,
    needs_reference=True,
    logp_reduction="sum",
    summary="DPO: Bradley-Terry on β-scaled log-ratios to a reference model",
)
