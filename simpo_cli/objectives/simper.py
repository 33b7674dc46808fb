"""SimPER: A Minimalist Approach to Preference Alignment without Hyperparameters (Xiao et al.,
ICLR 2025, arXiv 2502.00883)."""

from __future__ import annotations

from dataclasses import dataclass

from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class SimPERParams:
    """Settings of ``conf/objective/simper.yaml``: none (SimPER has no β, no γ, no reference)."""

    name: str = "simper"


def simper(logps: PreferenceLogps) -> ObjectiveOutput:
    """SimPER loss: ``−exp(ŝ(y_w)) + exp(ŝ(y_l))``, ``ŝ(y) = log π_θ(y|x)/|y|``; ``exp(ŝ)`` is the
    inverse perplexity of the response (the paper's Eq. 6: minimise the rejected response's and
    maximise the chosen response's inverse perplexity).

    Built from ``logps.chosen_avg``/``rejected_avg`` (nats per token, ``[B]``); no reference model,
    no hyperparameters. The loss lies in ``(−1, 1)``. Source: the paper's Eq. 6 and the authors'
    code (github.com/tengxiao1/SimPER); TRL 1.16 has no SimPER.

    Returns losses ``[B]`` and rewards ``exp(ŝ(y_w))``, ``exp(ŝ(y_l))`` (inverse perplexities,
    detached).
    """
    chosen, rejected = logps.chosen_avg.exp(), logps.rejected_avg.exp()
    return ObjectiveOutput(rejected - chosen, chosen.detach(), rejected.detach())


register(
    name="simper",
    fn=simper,
    params=SimPERParams,
    needs_reference=False,
    logp_reduction="mean",
    summary="SimPER: inverse perplexity of rejected minus chosen, no hyperparameters, no reference",
)
