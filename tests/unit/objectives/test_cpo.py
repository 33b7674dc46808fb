"""CPO (PAPER.md Table 3): loss = −log σ(β logπ_w − β logπ_l) − λ logπ_w (summed log-probs)."""

import math

import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.cpo import cpo
from tests.unit.objectives.conftest import make_logps


def test_cpo_hand_computed():
    """logπ_w = −10, logπ_l = −20, β = 0.1 → z = 1 → −log σ(1) = log(1 + e^−1) = 0.3132617;
    λ = 1 adds −λ·logπ_w = 10 → 10.3132617. Second pair: logπ_w = logπ_l = −4, λ = 1 →
    log 2 + 4 = 4.6931472. Rewards β logπ: −1.0, −2.0 and −0.4, −0.4."""
    logps = make_logps([-10.0, -4.0], [-20.0, -4.0])
    out = cpo(logps, beta=0.1, sft_weight=1.0)
    torch.testing.assert_close(out.losses, torch.tensor([10.3132617, math.log(2) + 4], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([-1.0, -0.4], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-2.0, -0.4], dtype=torch.float64))


def test_cpo_no_sft_and_label_smoothing():
    """λ = 0, ε = 0.2, z = 1: 0.8·0.3132617 + 0.2·log(1 + e^1) = 0.8·0.3132617 + 0.2·1.3132617 = 0.5132617."""
    logps = make_logps([-10.0], [-20.0])
    torch.testing.assert_close(cpo(logps, beta=0.1, sft_weight=0.0, label_smoothing=0.2).losses,
                               torch.tensor([0.5132617], dtype=torch.float64))
    spec = get_objective("cpo")
    assert not spec.needs_reference and spec.logp_reduction == "sum"
