"""WPO: Weighted Preference Optimization (Zhou et al., EMNLP 2024, arXiv 2406.11827) as a modifier
of any pairwise objective: each pair's loss is multiplied by how likely the current policy is to
produce that pair, so off-policy pairs weigh like on-policy ones. Switched on with
``objective.wpo=true`` (``base.Modifiers``); not an objective (registers nothing)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from simpo_cli.objectives.base import ObjectiveOutput, ObjectiveSpec, PreferenceLogps

ALIGNMENTS = ("sampled", "none")


def wpo_weights(logps: PreferenceLogps, alignment: str = "sampled") -> torch.Tensor:
    """WPO's weight of each pair, ``[B]``, detached (no gradient flows through it):

        ``w = exp(mean_t a(y_w, t)) · exp(mean_t a(y_l, t))``

    with the mean over each response's tokens and, for ``alignment="sampled"`` (the paper's
    "sampled" weight alignment, the one it recommends over "greedy"; TRL 1.16's ``use_weighting``,
    which cites it as the paper's Eq. 2)
    ``a(y, t) = log π_θ(y_t|x, y_<t) − log Σ_v π_θ(v|x, y_<t)²``, the token's log-prob relative to
    the probability expected when sampling from the policy, so that on-policy samples get weight
    about 1; for ``alignment="none"`` ``a = log π_θ(y_t|x, y_<t)`` (the paper's weight before
    alignment: the length-normalised sequence probability, the issue's ``exp(mean token log-prob)``).

    Reads ``logps.chosen``/``rejected`` (summed, nats), the lengths and, for ``sampled``,
    ``logps.chosen_log_sum_sq``/``rejected_log_sum_sq``. A side with no response tokens (an
    unpaired record) contributes a factor 1. The weight is not clipped (TRL ≤ 0.12 clipped it at
    1; TRL 1.16 and the paper do not). Raises ``ValueError`` for an unknown ``alignment`` or when
    ``sampled`` lacks the sums of squared probabilities.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"wpo: unknown wpo_alignment '{alignment}'; choose from: {', '.join(ALIGNMENTS)}")
    chosen, rejected = logps.chosen, logps.rejected
    if alignment == "sampled":
        if logps.chosen_log_sum_sq is None or logps.rejected_log_sum_sq is None:
            raise ValueError("wpo: wpo_alignment=sampled needs logps.chosen_log_sum_sq/rejected_log_sum_sq")
        chosen, rejected = chosen - logps.chosen_log_sum_sq, rejected - logps.rejected_log_sum_sq
    mean = chosen / logps.chosen_lengths.clamp(min=1) + rejected / logps.rejected_lengths.clamp(min=1)
    return mean.detach().exp()


def with_wpo(spec: ObjectiveSpec, alignment: str = "sampled") -> ObjectiveSpec:
    """``spec`` with WPO weighting: its ``fn`` returns ``losses × wpo_weights(logps)`` and the
    weights (``ObjectiveOutput.weights``); rewards are unchanged. Needs the sums of squared
    probabilities for ``sampled``. Raises ``ValueError`` for an unknown ``alignment``."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"wpo: unknown wpo_alignment '{alignment}'; choose from: {', '.join(ALIGNMENTS)}")
    base = spec.fn

    def weighted(logps: PreferenceLogps, **kwargs) -> ObjectiveOutput:
        out = base(logps, **kwargs)
        weights = wpo_weights(logps, alignment).to(out.losses.dtype)
        return dataclasses.replace(out, losses=out.losses * weights, weights=weights)

    return dataclasses.replace(spec, fn=weighted, needs_sum_sq_probs=alignment == "sampled",
                               summary=f"{spec.summary}; WPO-weighted ({alignment} alignment)")


def configured(spec: ObjectiveSpec, section: Mapping) -> ObjectiveSpec:
    """``spec`` with the modifiers its config ``section`` (``cfg.objective``) switches on."""
    if section.get("wpo"):
        return with_wpo(spec, section.get("wpo_alignment", "sampled"))
    return spec
