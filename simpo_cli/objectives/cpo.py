"""CPO: Contrastive Preference Optimization (Xu et al. 2024, arXiv 2401.08417); PAPER.md Table 3."""

from __future__ import annotations

from dataclasses import dataclass

from simpo_cli.objectives._common import bt_loss
from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class CPOParams:
    """Settings of ``conf/objective/cpo.yaml``."""

    name: str = "cpo"
    beta: float = 0.1
    sft_weight: float = 1.0  # λ, the weight of the chosen response's NLL (TRL: cpo_alpha)
    label_smoothing: float = 0.0


def cpo(
    logps: PreferenceLogps,
    *,
    beta: float,
    sft_weight: float = 1.0,
    label_smoothing: float = 0.0,
) -> ObjectiveOutput:
    """CPO loss, PAPER.md Table 3: ``−log σ(β log π_θ(y_w|x) − β log π_θ(y_l|x)) − λ log π_θ(y_w|x)``.

    Log-probs are **summed** over response tokens (nats, ``[B]``); no reference model.
    ``label_smoothing`` ε > 0 gives ``−(1−ε) log σ(z) − ε log σ(−z)`` as in TRL's ``CPOTrainer``.

    Departure from TRL 1.16 ``CPOTrainer``: its NLL term is the token-mean cross-entropy over the
    whole batch's chosen tokens; here it is Table 3's per-example summed ``−λ log π_θ(y_w|x)``, so a
    batch mean of the returned losses weighs every example equally. The preference term is the same.

    Returns losses ``[B]`` and rewards ``β log π_θ(y_w|x)``, ``β log π_θ(y_l|x)`` (detached).
    """
    z = beta * (logps.chosen - logps.rejected)
    losses = bt_loss(z, label_smoothing)
    if sft_weight:
        losses = losses - sft_weight * logps.chosen
    return ObjectiveOutput(losses, (beta * logps.chosen).detach(), (beta * logps.rejected).detach())


register(
    name="cpo",
    fn=cpo,
    params=CPOParams,
    needs_reference=False,
    logp_reduction="sum",
    summary="CPO: reference-free Bradley-Terry on summed log-probs plus the chosen NLL",
)
