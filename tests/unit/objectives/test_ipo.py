"""IPO (PAPER.md Table 3): loss = (ρ_w − ρ_l − 1/(2τ))², ρ summed (not length-normalised)."""

import pytest
import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.ipo import ipo
from tests.unit.objectives.conftest import make_logps


def test_ipo_hand_computed():
    """ρ_w = 2, ρ_l = −1 (margin 3). τ = 0.5 → target 1/(2·0.5) = 1 → (3 − 1)² = 4.
    τ = 0.1 → target 5 → (3 − 5)² = 4 as well; τ = 0.25 → target 2 → 1.
    Lengths (3 and 7 tokens) do not matter: ρ is summed. Rewards: ρ_w = 2, ρ_l = −1."""
    logps = make_logps([-10.0], [-20.0], [3], [7], ref_chosen=[-12.0], ref_rejected=[-19.0])
    assert ipo(logps, tau=0.5).losses.item() == pytest.approx(4.0)
    assert ipo(logps, tau=0.1).losses.item() == pytest.approx(4.0)
    out = ipo(logps, tau=0.25)
    assert out.losses.item() == pytest.approx(1.0)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([2.0], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-1.0], dtype=torch.float64))


def test_ipo_errors_and_spec():
    logps = make_logps([-1.0], [-2.0], ref_chosen=[-1.0], ref_rejected=[-2.0])
    with pytest.raises(ValueError, match="tau"):
        ipo(logps, tau=0.0)
    with pytest.raises(ValueError, match="reference"):
        ipo(make_logps([-1.0], [-2.0]), tau=0.1)
    spec = get_objective("ipo")
    assert spec.needs_reference and not spec.has("beta")
