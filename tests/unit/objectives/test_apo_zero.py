"""APO-zero (arXiv 2408.06266 Eq. 7): −σ(β ρ_w) + σ(β ρ_l)."""

import pytest
import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.apo_zero import apo_zero
from tests.unit.objectives.conftest import make_logps


def test_apo_zero_hand_computed():
    """ρ_w = −8 − (−10) = 2, ρ_l = −7 − (−6) = −1, β = 0.5: −σ(1) + σ(−0.5) = −0.7310586 + 0.3775407
    = −0.3535179 (TRL's form adds 1). Rewards β ρ = 1, −0.5. At ρ = 0 both: 0."""
    logps = make_logps([-8.0, -5.0], [-7.0, -5.0], ref_chosen=[-10.0, -5.0], ref_rejected=[-6.0, -5.0])
    out = apo_zero(logps, beta=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([-0.3535179, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.0], dtype=torch.float64))


def test_apo_zero_sides_are_anchored_separately():
    """Unlike DPO, the chosen gradient does not depend on the rejected side: at β ρ_w = 1,
    d/dρ_w = −β σ(1)σ(−1) = −0.5·0.1966119 whatever ρ_l is."""
    for rejected in (-7.0, -1.0):
        logps = make_logps([-8.0], [rejected], ref_chosen=[-10.0], ref_rejected=[-6.0])
        logps.chosen.requires_grad_()
        apo_zero(logps, beta=0.5).losses.sum().backward()
        assert logps.chosen.grad.item() == pytest.approx(-0.5 * 0.1966119, abs=1e-7)
    with pytest.raises(ValueError, match="apo-zero: needs reference"):
        apo_zero(make_logps([-1.0], [-2.0]), beta=0.1)
    assert get_objective("apo-zero").needs_reference
