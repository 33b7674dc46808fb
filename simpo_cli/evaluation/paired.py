"""Paired comparison of two models on the same prompts: the difference of a ratio metric with a
paired-bootstrap interval, and McNemar's exact test for a per-prompt pass/fail outcome.

A metric is ``sum(num) / sum(den)`` over prompts (``den`` = 1 per prompt for an accuracy; the
instruction count for IFEval's instruction-level accuracy). Pairing = both models' values of a
resampled prompt enter the same resample, so the interval reflects only how the two differ on
each prompt, not how hard the prompts are.
"""

from __future__ import annotations

import math

import numpy as np


def _ratio(num, den) -> np.ndarray:
    d = den.sum(axis=-1)
    return np.divide(num.sum(axis=-1), d, out=np.full(np.shape(d), np.nan), where=d > 0)


def paired_difference(num_a, den_a, num_b, den_b, idx: np.ndarray, confidence: float = 0.95) -> dict:
    """``B − A`` of the ratio metric and its percentile interval over the resampled prompt sets
    ``idx`` (``[R, N]`` indices, the same rows applied to both models). Inputs ``[N]``, aligned
    by prompt.

    Example: A passes prompts [1, 0, 0, 1], B [1, 1, 0, 1] (den 1 each) → difference 0.75 − 0.5
    = +0.25; every resample has B ≥ A, so the interval lies in [0, 1].
    """
    a_n, a_d, b_n, b_d = (np.asarray(x, dtype=np.float64) for x in (num_a, den_a, num_b, den_b))
    if not (a_n.size == a_d.size == b_n.size == b_d.size):
        raise ValueError("paired_difference: inputs must be aligned, one value per prompt each")
    diff = float(_ratio(b_n, b_d) - _ratio(a_n, a_d))
    if not a_n.size:
        return {"difference": math.nan, "ci": [math.nan, math.nan]}
    diffs = _ratio(b_n[idx], b_d[idx]) - _ratio(a_n[idx], a_d[idx])
    lo, hi = np.nanquantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"difference": diff, "ci": [float(lo), float(hi)]}


def mcnemar_exact(before, after) -> dict:
    """McNemar's exact test on paired pass/fail outcomes (``[N]`` booleans, aligned by prompt):
    ``gained`` = prompts failed before and passed after, ``lost`` = the reverse; under H0 each
    discordant prompt is gained or lost with probability ½, so the two-sided p-value is
    ``min(1, 2 · P(Binomial(gained + lost, ½) ≤ min(gained, lost)))`` (1 with no discordant prompt).

    Example: gained 5, lost 1 → n = 6, P(X ≤ 1) = (1 + 6) / 64, p = 14/64 = 0.21875.
    """
    b, a = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    if b.shape != a.shape:
        raise ValueError("mcnemar_exact: before and after must be aligned, one value per prompt each")
    gained, lost = int((~b & a).sum()), int((b & ~a).sum())
    n, k = gained + lost, min(gained, lost)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    return {"gained": gained, "lost": lost, "p_value": p}
