"""R-DPO (PAPER.md Table 3): loss = −log σ(β ρ_w − β ρ_l − α(|y_w| − |y_l|))."""

import math

import pytest
import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.dpo import dpo
from simpo_cli.objectives.rdpo import rdpo
from tests.unit.objectives.conftest import make_logps


def test_rdpo_hand_computed():
    """ρ_w = 2, ρ_l = −1, β = 0.5 → β-margin 1.5; |y_w| = 20, |y_l| = 5, α = 0.1 → penalty 1.5;
    z = 0 → loss = log 2. With |y_w| = 5, |y_l| = 20: z = 1.5 + 1.5 = 3 → log(1 + e^−3) = 0.0485874.
    Rewards are DPO's: β ρ = 1.0, −0.5."""
    base = dict(ref_chosen=[-12.0, -12.0], ref_rejected=[-19.0, -19.0])
    logps = make_logps([-10.0, -10.0], [-20.0, -20.0], [20, 5], [5, 20], **base)
    out = rdpo(logps, beta=0.5, alpha=0.1)
    torch.testing.assert_close(out.losses, torch.tensor([math.log(2), 0.0485874], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_rdpo_alpha_zero_is_dpo():
    logps = make_logps([-10.0, -3.0], [-20.0, -2.0], [4, 9], [6, 1], ref_chosen=[-11.0, -3.5],
                       ref_rejected=[-19.0, -2.5])
    torch.testing.assert_close(rdpo(logps, beta=0.3, alpha=0.0).losses, dpo(logps, beta=0.3).losses)
    spec = get_objective("rdpo")
    assert spec.needs_reference and spec.has("beta") and not spec.has("gamma")
    with pytest.raises(ValueError, match="reference"):
        rdpo(make_logps([-1.0], [-2.0]), beta=0.1)
