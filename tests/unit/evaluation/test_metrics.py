"""Hand-computed values for every formula of simpo_cli.evaluation.metrics and the stage's pair metrics."""

import math

import numpy as np
import pytest
import torch

from simpo_cli.evaluation import metrics as M


def test_reward_accuracy_is_strict():
    """chosen [1, 2, 3, 0] vs rejected [0, 2, 1, 5]: wins at 0 and 2, the tie at 1 is not a win → 2/4."""
    assert M.reward_accuracy([1, 2, 3, 0], [0, 2, 1, 5]) == 0.5
    assert M.reward_accuracy(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])) == 1.0
    assert math.isnan(M.reward_accuracy([], []))


def test_average_logps():
    """summed [-6, -10] over lengths [3, 4] → [-2, -2.5] nats/token; a length of 0 counts as 1."""
    np.testing.assert_allclose(M.average_logps([-6, -10], [3, 4]), [-2.0, -2.5])
    np.testing.assert_allclose(M.average_logps([0.0], [0]), [0.0])


def test_margin_summary():
    """margins [-1, 1, 3], 2 bins: mean 1, population std sqrt(8/3), edges [-1, 1, 3], counts [1, 2]
    (numpy's last bin is closed, so 1 lands in the second bin)."""
    s = M.margin_summary([-1, 1, 3], bins=2)
    assert s["mean"] == 1.0 and s["median"] == 1.0 and s["min"] == -1.0 and s["max"] == 3.0
    assert s["std"] == pytest.approx(math.sqrt(8 / 3))
    assert s["histogram"] == {"counts": [1, 2], "edges": [-1.0, 1.0, 3.0]}
    assert M.margin_summary([], bins=3)["n"] == 0


def test_rankdata_averages_ties():
    np.testing.assert_array_equal(M.rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    np.testing.assert_array_equal(M.rankdata([7, 7, 7]), [2, 2, 2])


def test_spearman_hand_computed():
    """No ties: ranks [1,2,3,4] vs [1,3,2,4], Σd² = 2, ρ = 1 − 6·2/(4·15) = 0.8.
    Ties: x [1,2,2,3] → ranks [1,2.5,2.5,4], y [1,3,2,4]; centred dx [-1.5,0,0,1.5],
    dy [-1.5,.5,-.5,1.5]: Σdx·dy = 4.5, Σdx² = 4.5, Σdy² = 5 → ρ = 4.5/sqrt(22.5) = sqrt(0.9)."""
    assert M.spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert M.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert math.isnan(M.spearman([1, 1, 1], [1, 2, 3]))  # constant input
    assert math.isnan(M.spearman([1], [2]))
    with pytest.raises(ValueError):
        M.spearman([1, 2], [1, 2, 3])


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, 50).astype(float)  # many ties
    y = x * 0.3 + rng.normal(size=50)
    assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_kl_estimate_hand_computed():
    """policy [-10, -4], reference [-12, -5], lengths [4, 2]: differences [2, 1] →
    per response (2 + 1)/2 = 1.5 nats, per token (2 + 1)/(4 + 2) = 0.5 nats."""
    kl = M.kl_estimate([-10, -4], [-12, -5], [4, 2])
    assert kl == {"n": 2, "per_sequence": 1.5, "per_token": 0.5}
    same = M.kl_estimate([-3.0, -7.0], [-3.0, -7.0], [2, 5])
    assert same["per_sequence"] == 0.0 and same["per_token"] == 0.0


def test_kl_estimate_is_unbiased_for_samples_of_the_policy():
    """On samples y ~ π_θ the estimator converges to the exact KL. Two categorical "responses":
    π_θ = [0.8, 0.2], π_ref = [0.5, 0.5] → KL = 0.8 ln 1.6 + 0.2 ln 0.4 ≈ 0.192745."""
    p, q = np.array([0.8, 0.2]), np.array([0.5, 0.5])
    exact = float((p * np.log(p / q)).sum())
    assert exact == pytest.approx(0.8 * math.log(1.6) + 0.2 * math.log(0.4))
    y = np.random.default_rng(0).choice(2, size=200_000, p=p)
    kl = M.kl_estimate(np.log(p[y]), np.log(q[y]), np.ones_like(y))
    assert kl["per_sequence"] == pytest.approx(exact, abs=5e-3)


def test_length_stats():
    """[2, 4, 9] with limit 9: mean 5, median 4, one of three reached the limit."""
    s = M.length_stats([2, 4, 9], limit=9)
    assert (s["mean"], s["median"], s["min"], s["max"]) == (5.0, 4.0, 2.0, 9.0)
    assert s["truncated_fraction"] == pytest.approx(1 / 3)
    assert M.length_stats([]) == {"n": 0}


def test_win_rate_and_bootstrap():
    """model [3, 1, 2] vs baseline [1, 1, 5] → win, tie (½), loss → 0.5."""
    out = M.win_rate([3, 1, 2], [1, 1, 5])
    np.testing.assert_array_equal(out, [1.0, 0.5, 0.0])
    assert M.bootstrap_ci([1, 1, 1]) == (1.0, 1.0)
    lo, hi = M.bootstrap_ci([0, 1] * 50, n_resamples=2000, seed=1)
    # mean 0.5, standard error sqrt(.25/100) = 0.05 → the 95% interval is about 0.5 ± 0.098
    assert 0.38 < lo < 0.43 and 0.57 < hi < 0.62
    assert M.bootstrap_ci([0, 1] * 50, seed=3) == M.bootstrap_ci([0, 1] * 50, seed=3)


def test_pair_metrics_hand_computed():
    """Four pairs, β = 2 (SimPO, γ = 1):

    | pair | chosen sum/len (avg) | rejected sum/len (avg) | length-normalised | summed |
    | 0    | -4 / 2 (-2)          | -6 / 3 (-2)            | tie → wrong       | win    |
    | 1    | -9 / 3 (-3)          | -4 / 1 (-4)            | win               | loss   |
    | 2    | -2 / 1 (-2)          | -10 / 2 (-5)           | win               | win    |
    | 3    | -6 / 2 (-3)          | -8 / 4 (-2)            | loss              | win    |

    accuracy: length-normalised 2/4, summed 3/4; SimPO's reward is β·avg, so objective = 2/4.
    margins β·(avg_w − avg_l) = [0, 2, 6, -2], mean 1.5. avg log-lik chosen mean −2.5,
    rejected −3.25. KL with reference chosen [-5, -9, -3, -6]: differences [1, 0, 1, 0] →
    0.5 nats per response, 2/8 = 0.25 nats per token."""
    from simpo_cli.stages.eval import pair_metrics
    from tests.helpers import compose

    cfg = compose(["objective.beta=2.0", "objective.gamma=1.0"], "eval")
    pol = {"chosen": np.array([-4.0, -9, -2, -6]), "rejected": np.array([-6.0, -4, -10, -8]),
           "chosen_lengths": np.array([2, 3, 1, 2]), "rejected_lengths": np.array([3, 1, 2, 4]),
           "index": np.arange(4)}
    ref = {"chosen": np.array([-5.0, -9, -3, -6]), "rejected": np.array([-6.0, -4, -10, -8])}
    summary, arrays = pair_metrics(cfg, pol, ref, bins=4)
    assert summary["reward_accuracy"] == {"objective": 0.5, "length_normalized": 0.5, "summed": 0.75}
    np.testing.assert_allclose(arrays["margins"]["length_normalized"], [0, 2, 6, -2])
    np.testing.assert_allclose(arrays["margins"]["objective"], [0, 2, 6, -2], atol=1e-6)
    assert summary["margins"]["length_normalized"]["mean"] == 1.5
    assert summary["avg_logps"] == {"chosen": -2.5, "rejected": -3.25}
    assert summary["kl_chosen"] == {"n": 4, "per_sequence": 0.5, "per_token": 0.25}
    # avg_c [-2,-3,-2,-3] vs lengths [2,3,1,2]: ranks [3.5,1.5,3.5,1.5] vs [2.5,4,1,2.5];
    # centred [1,-1,1,-1]·[0,1.5,-1.5,0] = -3; norms 4 and 4.5 → ρ = -3/sqrt(18)
    assert summary["spearman_avg_logps_vs_length"]["chosen"] == pytest.approx(-3 / math.sqrt(18))
    no_ref, _ = pair_metrics(cfg, pol, None, bins=4)
    assert no_ref["kl_chosen"] is None and no_ref["reward_accuracy"]["objective"] == 0.5
