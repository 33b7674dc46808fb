"""IPO: Identity Preference Optimisation (Azar et al. 2023, arXiv 2310.12036); PAPER.md Table 3."""

from __future__ import annotations

from dataclasses import dataclass

from simpo_cli.objectives._common import log_ratios
from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class IPOParams:
    """Settings of ``conf/objective/ipo.yaml``. IPO has no β: its regulariser is τ."""

    name: str = "ipo"
    tau: float = 0.1


def ipo(logps: PreferenceLogps, *, tau: float = 0.1) -> ObjectiveOutput:
    """IPO loss, PAPER.md Table 3 (IPO paper Eq. 17): ``(ρ(y_w) − ρ(y_l) − 1/(2τ))²``.

    ``ρ(y) = log π_θ(y|x) − log π_ref(y|x)`` with **summed** response log-probs (nats, ``[B]``).

    Departure from TRL 1.16: its ``loss_type="ipo"`` divides each summed log-ratio by that
    response's length (a choice TRL says it confirmed with the IPO authors, but which the IPO paper
    and SimPO's Table 3 do not state). Here ρ is summed as in the paper; the two agree when every
    response has one token.

    Returns losses ``[B]`` and rewards ``ρ(y_w)``, ``ρ(y_l)`` (unscaled log-ratios, detached; IPO has
    no β). Raises ``ValueError`` for ``tau <= 0`` or missing
    reference log-probs.
    """
    if tau <= 0:
        raise ValueError(f"ipo: tau must be > 0, got {tau}")
    chosen_ratio, rejected_ratio = log_ratios(logps, "ipo")
    losses = (chosen_ratio - rejected_ratio - 1 / (2 * tau)) ** 2
    return ObjectiveOutput(losses, chosen_ratio.detach(), rejected_ratio.detach())


register(
    name="ipo",
    fn=ipo,
    params=IPOParams,
    needs_reference=True,
    logp_reduction="sum",
    summary="IPO: squared loss pulling the log-ratio margin to 1/(2τ)",
)
