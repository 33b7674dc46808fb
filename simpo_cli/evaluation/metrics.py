"""Pure evaluation metrics: the numbers the SimPO paper reports about a trained model.

Every function takes plain sequences or 1-D arrays (numpy, torch or lists) of per-example values
and returns Python floats / dicts, so the stage code, the tests and a notebook share one
definition. Log-probs are in nats; "summed" means summed over a response's tokens, "average"
means divided by the response's token count (PAPER.md Eq. 4).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _arr(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def reward_accuracy(chosen_rewards, rejected_rewards) -> float:
    """Fraction of pairs with ``r(y_w) > r(y_l)`` (strict: a tie counts as wrong, as TRL's
    ``rewards/accuracies``). Inputs ``[B]``; returns NaN for ``B = 0``.

    Example: chosen [1, 2, 3, 0], rejected [0, 2, 1, 5] → wins at 0 and 2 (the tie at 1 is not a
    win) → 2/4 = 0.5.
    """
    c, r = _arr(chosen_rewards), _arr(rejected_rewards)
    return float(np.mean(c > r)) if c.size else math.nan


def average_logps(summed_logps, lengths) -> np.ndarray:
    """Length-averaged log-likelihood ``p_θ(y|x) = log π_θ(y|x) / |y|`` (PAPER.md Eq. 4), ``[B]``,
    nats per token. Lengths of 0 are treated as 1 (the summed log-prob is then 0 anyway).

    Example: summed [-6, -10], lengths [3, 4] → [-2.0, -2.5].
    """
    return _arr(summed_logps) / np.maximum(_arr(lengths), 1)


def margin_summary(margins, bins: int = 20) -> dict:
    """Mean, std (population), median, min, max and a ``bins``-bin histogram (``counts``,
    ``edges``: ``bins + 1`` bin edges, numpy's rule) of reward margins ``r(y_w) − r(y_l)``, ``[B]``.
    The paper's Fig. 4 / Fig. 6 plot this distribution.

    Example: margins [-1, 1, 3], bins 2 → mean 1.0, std sqrt(8/3) ≈ 1.633, edges [-1, 1, 3],
    counts [1, 2] (the last bin is closed on the right).
    """
    m = _arr(margins)
    if not m.size:
        return {"n": 0, "mean": math.nan, "std": math.nan, "median": math.nan, "min": math.nan,
                "max": math.nan, "histogram": {"counts": [], "edges": []}}
    counts, edges = np.histogram(m, bins=bins)
    return {"n": int(m.size), "mean": float(m.mean()), "std": float(m.std()), "median": float(np.median(m)),
            "min": float(m.min()), "max": float(m.max()),
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()}}


def rankdata(x) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's ``average`` method).

    Example: [10, 20, 20, 5] → [2, 3.5, 3.5, 1].
    """
    a = _arr(x)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, dtype=np.float64)
    sorted_a = a[order]
    i = 0
    while i < a.size:
        j = i
        while j + 1 < a.size and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1  # average of 1-based ranks i+1 .. j+1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation ρ: the Pearson correlation of the average ranks (ties handled as
    scipy.stats.spearmanr does). NaN when fewer than 2 points or either input is constant.
    The paper (Fig. 2b/c) reports it between average log-likelihood and response length.

    Example: x [1, 2, 3, 4], y [10, 30, 20, 40] → ranks [1,2,3,4] vs [1,3,2,4], d = [0,1,1,0],
    ρ = 1 − 6·Σd² / (n(n²−1)) = 1 − 12/60 = 0.8.
    """
    a, b = _arr(x), _arr(y)
    if a.size != b.size:
        raise ValueError(f"spearman: inputs differ in length ({a.size} vs {b.size})")
    if a.size < 2:
        return math.nan
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else math.nan


def kl_estimate(policy_logps, reference_logps, lengths) -> dict:
    """Monte-Carlo estimate of KL(π_θ ‖ π_ref) from responses ``y`` scored by both models.

    With summed log-probs ``log π_θ(y|x)`` and ``log π_ref(y|x)`` (``[B]``, nats) and token
    counts ``|y|`` (``[B]``)::

        per_sequence = (1/B)   Σ_i [log π_θ(y_i|x_i) − log π_ref(y_i|x_i)]         (nats / response)
        per_token    = Σ_i [log π_θ(y_i|x_i) − log π_ref(y_i|x_i)] / Σ_i |y_i|     (nats / token)

    ``E_{y~π_θ}[log π_θ(y) − log π_ref(y)]`` is the KL when ``y`` is sampled from π_θ. Like the
    SimPO paper's Fig. 5a, we evaluate it on held-out *chosen* responses instead of samples, so it
    is a plug-in estimate of how far the policy has moved on the preferred data (it can be negative
    when the policy assigns the chosen responses less mass than the reference).

    Example: policy [-10, -4], reference [-12, -5], lengths [4, 2] → differences [2, 1]:
    per_sequence = 1.5, per_token = 3 / 6 = 0.5.
    """
    p, r, n = _arr(policy_logps), _arr(reference_logps), _arr(lengths)
    if not p.size:
        return {"n": 0, "per_sequence": math.nan, "per_token": math.nan}
    diff = p - r
    return {"n": int(p.size), "per_sequence": float(diff.mean()), "per_token": float(diff.sum() / max(n.sum(), 1))}


def length_stats(lengths: Sequence[float], limit: int | None = None) -> dict:
    """Mean, median, std, min and max of response lengths; with ``limit`` (max_new_tokens), also the
    fraction of responses that reached it (cut off before an end-of-turn token).

    Example: [2, 4, 9], limit 9 → mean 5.0, median 4.0, max 9, truncated 1/3.
    """
    a = _arr(lengths)
    if not a.size:
        return {"n": 0}
    out = {"n": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)), "std": float(a.std()),
           "min": float(a.min()), "max": float(a.max())}
    if limit is not None:
        out["truncated_fraction"] = float(np.mean(a >= limit))
    return out


def win_rate(model_scores, baseline_scores) -> np.ndarray:
    """Per-prompt outcome of model vs baseline under a scalar judge score: 1 win, 0.5 tie, 0 loss
    (AlpacaEval's convention for draws). Returns ``[N]``; its mean is the win rate.

    Example: model [3, 1, 2], baseline [1, 1, 5] → [1, 0.5, 0], win rate 0.5.
    """
    m, b = _arr(model_scores), _arr(baseline_scores)
    return np.where(m > b, 1.0, np.where(m == b, 0.5, 0.0))


def bootstrap_ci(values, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``[N]``): resample N values with
    replacement ``n_resamples`` times (seeded, so reruns agree) and take the (1−c)/2 and (1+c)/2
    quantiles of the resampled means. NaNs for an empty input.

    Example: a constant input [1, 1, 1] gives (1.0, 1.0); [0, 1] gives an interval inside [0, 1]
    containing 0.5.
    """
    v = _arr(values)
    if not v.size:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_resamples, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)
