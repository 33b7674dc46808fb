"""SimPO: Simple Preference Optimization with a Reference-Free Reward (arXiv 2405.14734)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class SimPOParams:
    """Settings of ``conf/objective/simpo.yaml``: β, γ (or γ/β) and the loss options."""

    name: str = "simpo"
    beta: float = 2.0
    gamma: Optional[float] = 1.0  # the target margin, absolute (Eq. 6)
    # γ/β as in the official SimPO configs; when set it takes precedence: γ = ratio × β.
    gamma_beta_ratio: Optional[float] = None
    loss_type: str = "sigmoid"  # sigmoid | hinge
    label_smoothing: float = 0.0
    sft_weight: float = 0.0


def simpo(
    logps: PreferenceLogps,
    *,
    beta: float,
    gamma: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    sft_weight: float = 0.0,
) -> ObjectiveOutput:
    """SimPO loss, PAPER.md Eq. 6, with the options of the official code (princeton-nlp/SimPO).

    With ``a_w = log π(y_w|x)/|y_w|`` and ``a_l = log π(y_l|x)/|y_l|`` (length-averaged log-probs,
    nats per token, built from ``logps.chosen``/``logps.rejected`` (summed, ``[B]``) and the
    lengths) and ``z = β·(a_w − a_l) − γ``:

    - ``sigmoid``: ``−(1−ε)·log σ(z) − ε·log σ(−z)`` (ε = ``label_smoothing``; ε = 0 is Eq. 6);
    - ``hinge``:   ``relu(1 − z)`` (the official ``relu(1 − β·logits)`` with logits = a_w − a_l − γ/β);
    - ``sft_weight`` λ adds ``λ·(−a_w)``, the chosen response's per-token NLL. The official code uses
      the token-level mean over the whole batch; here it is per example, so a batch mean of the
      returned losses weighs each example equally.

    Returns losses ``[B]`` and rewards ``β·a_w``, ``β·a_l`` (Eq. 4, detached). γ enters the loss
    only, as in the official code. Raises ``ValueError`` for an unknown ``loss_type``.
    """
    chosen_avg, rejected_avg = logps.chosen_avg, logps.rejected_avg
    z = beta * (chosen_avg - rejected_avg) - gamma
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(z) * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1 - z)
    else:
        raise ValueError(f"simpo: unknown loss_type '{loss_type}'; choose from: sigmoid, hinge")
    if sft_weight:
        losses = losses - sft_weight * chosen_avg
    return ObjectiveOutput(losses, (beta * chosen_avg).detach(), (beta * rejected_avg).detach())


register(
    name="simpo",
    fn=simpo,
    params=SimPOParams,
    needs_reference=False,
    logp_reduction="mean",
    summary="SimPO: length-normalised reward with a target margin γ, no reference model (Eq. 6)",
)
