"""Paired statistics against hand-computed values (and scipy's exact binomial test where installed)."""

import math

import numpy as np
import pytest

from simpo_cli.evaluation.paired import mcnemar_exact, paired_difference


@pytest.mark.parametrize("gained, lost, p", [
    (5, 1, 14 / 64),  # n 6: P(X <= 1) = (1 + 6) / 64, two-sided 14/64
    (1, 5, 14 / 64),  # symmetric
    (0, 0, 1.0),  # no discordant prompt
    (3, 3, 1.0),  # 2 * P(X <= 3 | n 6) = 2 * 42/64 > 1 → 1
    (10, 0, 2 / 1024),  # 2 * (1/2)^10
])
def test_mcnemar_exact_hand_computed(gained, lost, p):
    concordant = [True, False] * 2  # prompts both models pass / both fail: no effect on the test
    before = [False] * gained + [True] * lost + concordant
    after = [True] * gained + [False] * lost + concordant
    res = mcnemar_exact(before, after)
    assert (res["gained"], res["lost"]) == (gained, lost) and res["p_value"] == pytest.approx(p)


def test_mcnemar_matches_scipys_exact_binomial_test():
    stats = pytest.importorskip("scipy.stats")
    for gained, lost in [(7, 2), (12, 4), (1, 9), (20, 20)]:
        before = [False] * gained + [True] * lost
        after = [True] * gained + [False] * lost
        expected = stats.binomtest(min(gained, lost), gained + lost, 0.5).pvalue
        assert mcnemar_exact(before, after)["p_value"] == pytest.approx(expected, rel=1e-12)


def test_paired_difference_hand_computed():
    """A passes [1, 0, 0, 1], B [1, 1, 0, 1] → 0.5 → 0.75, difference +0.25. B never does worse
    on any prompt, so every resample's difference is >= 0; the interval is in [0, 1]."""
    idx = np.random.default_rng(0).integers(0, 4, size=(500, 4))
    d = paired_difference([1, 0, 0, 1], [1] * 4, [1, 1, 0, 1], [1] * 4, idx)
    assert d["difference"] == pytest.approx(0.25) and 0 <= d["ci"][0] <= 0.25 <= d["ci"][1] <= 1


def test_paired_difference_of_a_ratio_metric_and_of_identical_models():
    """Instruction-level: A follows 1 of 2 and 1 of 1, B 2 of 2 and 0 of 1 → 2/3 vs 2/3, difference
    0. Identical models: the difference is 0 in every resample, a zero-width interval."""
    idx = np.random.default_rng(0).integers(0, 2, size=(200, 2))
    d = paired_difference([1, 1], [2, 1], [2, 0], [2, 1], idx)
    assert d["difference"] == pytest.approx(0.0)
    same = paired_difference([1, 0], [1, 1], [1, 0], [1, 1], idx)
    assert same == {"difference": 0.0, "ci": [0.0, 0.0]}
    with pytest.raises(ValueError, match="aligned"):
        paired_difference([1], [1], [1, 0], [1, 1], idx)
    assert math.isnan(paired_difference([], [], [], [], np.zeros((3, 0), int))["difference"])
