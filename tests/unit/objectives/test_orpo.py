"""ORPO (PAPER.md Table 3): loss = −log p_w − λ log σ(log odds_w − log odds_l),
p = exp(logπ/|y|), odds = p/(1 − p)."""

import math

import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.orpo import log_odds, orpo
from tests.unit.objectives.conftest import make_logps


def test_orpo_hand_computed():
    """Chosen: logπ_w = −2·ln 2 over 2 tokens → p_w = 1/2, odds 1, log odds 0.
    Rejected: logπ_l = 3·ln(1/5) over 3 tokens → p_l = 1/5, odds 1/4, log odds −ln 4.
    NLL term −log p_w = ln 2 = 0.6931472; ratio log σ(ln 4) = log(4/5) = −0.2231436;
    λ = 0.5 → loss = 0.6931472 + 0.5·0.2231436 = 0.8047190. Rewards log p: −ln 2, −ln 5."""
    logps = make_logps([-2 * math.log(2)], [3 * math.log(0.2)], [2], [3])
    out = orpo(logps, odds_ratio_weight=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([0.8047190], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([-math.log(2)], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-math.log(5)], dtype=torch.float64))


def test_log_odds():
    """p = 0.8 → log(0.8/0.2) = ln 4 = 1.3862944."""
    torch.testing.assert_close(log_odds(torch.tensor([math.log(0.8)], dtype=torch.float64)),
                               torch.tensor([math.log(4)], dtype=torch.float64))
    spec = get_objective("orpo")
    assert not spec.needs_reference and spec.logp_reduction == "mean" and not spec.has("beta")


def test_log_odds_is_stable_near_certainty():
    """p = exp(−1e−6) ≈ 1 − 1e−6: log odds = log((1 − 1e−6)/1e−6) ≈ 13.815510 (finite, no 0/0);
    p = exp(−5): log odds = −5 − log(1 − e^−5) = −5 + 0.0067607 = −4.9932393."""
    out = log_odds(torch.tensor([-1e-6, -5.0], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([13.8155096, -4.9932393], dtype=torch.float64))
