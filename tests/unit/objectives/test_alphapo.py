"""AlphaPO (arXiv 2501.03884): SimPO on r_α = β(1 − exp(−α ŝ))/α, ŝ the length-averaged log-prob."""

import math

import pytest
import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.alphapo import alpha_reward, alphapo
from simpo_cli.objectives.simpo import simpo
from tests.unit.objectives.conftest import make_logps


def test_alphapo_hand_computed():
    """ŝ_w = −2/2 = −1, ŝ_l = −4/2 = −2, α = 0.5, β = 2, γ = 0.5:
    r(−1) = (1 − e^0.5)/0.5 = −1.2974425, r(−2) = (1 − e^1)/0.5 = −3.4365637; rewards β r =
    −2.5948851, −6.8731273; z = 4.2782422 − 0.5 = 3.7782422 → log(1 + e^−z) = 0.0226054."""
    logps = make_logps([-2.0], [-4.0], [2], [2])
    out = alphapo(logps, alpha=0.5, beta=2.0, gamma=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([0.0226054], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([-2.5948851], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-6.8731273], dtype=torch.float64))


def test_alpha_to_zero_is_simpo():
    """α → 0: the reward tends to ŝ, so AlphaPO tends to SimPO with the same β and γ (α = 0 exactly
    is SimPO; α = 1e-7 agrees to 1e-6)."""
    logps = make_logps([-7.0, -3.0], [-9.0, -2.5], [5, 2], [4, 3])
    ref = simpo(logps, beta=2.5, gamma=0.3).losses
    torch.testing.assert_close(alphapo(logps, alpha=0.0, beta=2.5, gamma=0.3).losses, ref)
    torch.testing.assert_close(alphapo(logps, alpha=1e-7, beta=2.5, gamma=0.3).losses, ref, atol=1e-6, rtol=0)
    assert alpha_reward(torch.tensor([-1.0]), 1.0).item() == pytest.approx(1 - math.e)


def test_alphapo_label_smoothing_and_spec():
    """ε = 0.2 at z = 3.7782422: 0.8·0.0226054 + 0.2·(3.7782422 + 0.0226054) = 0.7782539."""
    logps = make_logps([-2.0], [-4.0], [2], [2])
    out = alphapo(logps, alpha=0.5, beta=2.0, gamma=0.5, label_smoothing=0.2)
    torch.testing.assert_close(out.losses, torch.tensor([0.7782539], dtype=torch.float64))
    spec = get_objective("alphapo")
    assert not spec.needs_reference and spec.logp_reduction == "mean" and spec.has("gamma")
