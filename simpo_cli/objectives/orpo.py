"""ORPO: Monolithic Preference Optimization without Reference Model (Hong et al. 2024,
arXiv 2403.07691); PAPER.md Table 3."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class ORPOParams:
    """Settings of ``conf/objective/orpo.yaml``. ORPO has no β (TRL reuses ``beta`` for λ)."""

    name: str = "orpo"
    odds_ratio_weight: float = 0.1  # λ, the weight of the odds-ratio term


def log_odds(avg_logp: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 − p))`` for ``p = exp(avg_logp)``; ``avg_logp < 0`` (nats per token), ``[B]``.

    ``log(1 − p)`` is computed as ``log(−expm1(x))`` near 0 and ``log1p(−exp(x))`` below −ln 2,
    the stable log1mexp that TRL's ORPO also uses, so a near-certain response stays finite."""
    near_zero = avg_logp > -0.6931471805599453
    log1mexp = torch.where(near_zero, torch.log(-torch.expm1(avg_logp.clamp(max=-1e-20))),
                           torch.log1p(-torch.exp(avg_logp.clamp(max=-0.6931471805599453))))
    return avg_logp - log1mexp


def orpo(logps: PreferenceLogps, *, odds_ratio_weight: float = 0.1) -> ObjectiveOutput:
    """ORPO loss, PAPER.md Table 3: ``−log p_θ(y_w|x) − λ log σ(log odds(y_w) − log odds(y_l))``,
    with ``p_θ(y|x) = exp((1/|y|) log π_θ(y|x))`` (the length-averaged likelihood) and
    ``odds(y) = p_θ / (1 − p_θ)``.

    Built from ``logps.chosen_avg``/``rejected_avg`` (nats per token, ``[B]``); no reference model.
    The NLL term ``−log p_θ(y_w|x)`` is the chosen response's per-token NLL.

    Departure from TRL 1.16 ``ORPOTrainer``: its NLL term is the token-mean cross-entropy over the
    prompt **and** chosen tokens of the whole batch (its labels do not mask the prompt); here it
    covers the answer only, per example, as the paper writes it. The odds-ratio term is the same
    (TRL's ``beta`` is this λ).

    Returns losses ``[B]`` and rewards = length-averaged log-probs ``log p_θ(y|x)`` (detached).
    """
    chosen_avg, rejected_avg = logps.chosen_avg, logps.rejected_avg
    ratio = F.logsigmoid(log_odds(chosen_avg) - log_odds(rejected_avg))
    losses = -chosen_avg - odds_ratio_weight * ratio
    return ObjectiveOutput(losses, chosen_avg.detach(), rejected_avg.detach())


register(
    name="orpo",
    fn=orpo,
    params=ORPOParams,
    needs_reference=False,
    logp_reduction="mean",
    summary="ORPO: chosen NLL plus a log-odds-ratio term, no reference model",
)
