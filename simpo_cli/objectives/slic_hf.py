"""SLiC-HF: Sequence Likelihood Calibration with Human Feedback (Zhao et al. 2023, arXiv 2305.10425);
PAPER.md Table 3. Registered as ``slic-hf``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class SLiCHFParams:
    """Settings of ``conf/objective/slic-hf.yaml``. SLiC-HF has no β."""

    name: str = "slic-hf"
    delta: float = 1.0  # δ, the calibration margin (nats)
    sft_weight: float = 0.1  # λ, the weight of the chosen response's (summed) NLL


def slic_hf(logps: PreferenceLogps, *, delta: float = 1.0, sft_weight: float = 0.1) -> ObjectiveOutput:
    """SLiC-HF loss, PAPER.md Table 3: ``max(0, δ − log π_θ(y_w|x) + log π_θ(y_l|x)) − λ log π_θ(y_w|x)``.

    Log-probs are **summed** over response tokens (nats, ``[B]``); no reference model. With λ = 0
    and δ = 1/β, β times this loss is TRL's DPO ``hinge`` loss ``relu(1 − β(ρ_w − ρ_l))`` with a
    zero reference (the parity test checks exactly that).

    Returns losses ``[B]`` and rewards = the summed log-probs (detached).
    """
    losses = torch.relu(delta - logps.chosen + logps.rejected)
    if sft_weight:
        losses = losses - sft_weight * logps.chosen
    return ObjectiveOutput(losses, logps.chosen.detach(), logps.rejected.detach())


register(
    name="slic-hf",
    fn=slic_hf,
    params=SLiCHFParams,
    needs_reference=False,
    logp_reduction="sum",
    summary="SLiC-HF: calibration hinge with margin δ on summed log-probs plus the chosen NLL",
)
