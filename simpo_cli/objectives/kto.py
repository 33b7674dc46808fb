"""KTO: Kahneman-Tversky Optimization (Ethayarajh et al. 2024, arXiv 2402.01306); PAPER.md Table 3."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simpo_cli.objectives._common import log_ratios
from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class KTOParams:
    """Settings of ``conf/objective/kto.yaml``."""

    name: str = "kto"
    beta: float = 0.1
    lambda_d: float = 1.0  # λ_D (Table 3's λ_w): weight of desirable (chosen) responses
    lambda_u: float = 1.0  # λ_U (Table 3's λ_l): weight of undesirable (rejected) responses


def kto_z_ref(logps: PreferenceLogps) -> torch.Tensor:
    """KTO's reference point ``z_0 = max(0, mean(log π_θ(y'|x) − log π_ref(y'|x)))`` over the batch's
    mismatched rows (``logps.kl``/``logps.ref_kl``, summed, ``[K]``): a per-batch estimate of
    KL(π_θ‖π_ref), detached (KTO paper §4.1; TRL ``KTOTrainer``). Scalar tensor, nats."""
    if logps.kl is None or logps.ref_kl is None:
        raise ValueError("kto: needs the log-probs of mismatched prompt/response rows (logps.kl/ref_kl)")
    return (logps.kl - logps.ref_kl).mean().clamp(min=0).detach()


def kto(
    logps: PreferenceLogps,
    *,
    beta: float,
    lambda_d: float = 1.0,
    lambda_u: float = 1.0,
) -> ObjectiveOutput:
    """KTO loss on a pair split into a desirable (chosen) and an undesirable (rejected) record:

        ``[λ_D (1 − σ(β(ρ(y_w) − z_0))) + λ_U (1 − σ(β(z_0 − ρ(y_l))))] / 2``

    with ``ρ`` the summed log-ratio to the reference (nats, ``[B]``) and ``z_0`` from ``kto_z_ref``
    (``β z_0`` is Table 3's ``z_ref = E[β KL]``). Dividing by 2 makes the batch mean equal the mean
    over the 2B records, TRL's ``KTOTrainer`` convention.

    Unpaired data (``prompt``/``completion``/``label`` records, see ``simpo_cli/data/unpaired.py``)
    arrives as examples with one side empty (``chosen_lengths`` or ``rejected_lengths`` 0): the
    example's loss is then its one term, ``λ_D (1 − σ(β(ρ − z_0)))`` for a desirable record or
    ``λ_U (1 − σ(β(z_0 − ρ)))`` for an undesirable one, so the batch mean is again the mean over
    records. Rewards of an absent side are 0.

    Departure from PAPER.md Table 3, which prints ``... + λ_l σ(z_ref − β ρ(y_l))``: minimising that
    term would push ρ(y_l) up; the KTO paper (Eq. 8) and TRL use
    ``λ_U (1 − σ(β(z_0 − ρ(y_l))))``, followed here (the constants λ only shift the loss).
    TRL also all-gathers the mismatched rows across processes before averaging; here z_0 is the
    mean over this process's batch.

    Returns losses ``[B]`` and rewards ``β ρ(y_w)``, ``β ρ(y_l)`` (detached). Raises ``ValueError``
    when reference or mismatched log-probs are missing.
    """
    chosen_ratio, rejected_ratio = log_ratios(logps, "kto")
    z0 = kto_z_ref(logps)
    desirable = 1 - torch.sigmoid(beta * (chosen_ratio - z0))
    undesirable = 1 - torch.sigmoid(beta * (z0 - rejected_ratio))
    # Unpaired records carry one side only (the other has no response tokens): average over the
    # sides present, so every record, desirable or undesirable, weighs the same in the batch mean.
    has_w = (logps.chosen_lengths > 0).to(desirable.dtype)
    has_l = (logps.rejected_lengths > 0).to(desirable.dtype)
    losses = (lambda_d * desirable * has_w + lambda_u * undesirable * has_l) / (has_w + has_l).clamp(min=1)
    return ObjectiveOutput(losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


register(
    name="kto",
    fn=kto,
    params=KTOParams,
    needs_reference=True,
    needs_mismatched=True,
    accepts_unpaired=True,
    logp_reduction="sum",
    summary="KTO: prospect-theoretic loss on desirable/undesirable responses vs a KL reference point",
)
