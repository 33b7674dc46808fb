"""LN-DPO (TRL sigmoid_norm): −log σ(β(ρ_w/|y_w| − ρ_l/|y_l|)), ρ the summed log-ratio."""

import pytest
import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.ln_dpo import ln_dpo
from tests.unit.objectives.conftest import make_logps


def test_ln_dpo_hand_computed():
    """ρ_w = −10 − (−14) = 4 over 4 tokens = 1/token; ρ_l = −9 − (−6) = −3 over 3 tokens =
    −1/token; β = 0.5 → z = 1 → log(1 + e^−1) = 0.3132617. Rewards β ρ/|y| = 0.5, −0.5."""
    logps = make_logps([-10.0], [-9.0], [4], [3], ref_chosen=[-14.0], ref_rejected=[-6.0])
    out = ln_dpo(logps, beta=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([0.3132617], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.5], dtype=torch.float64))


def test_ln_dpo_label_smoothing_needs_reference_and_spec():
    """ε = 0.2 at z = 1: 0.8·0.3132617 + 0.2·1.3132617 = 0.5132617; no reference → ValueError."""
    logps = make_logps([-10.0], [-9.0], [4], [3], ref_chosen=[-14.0], ref_rejected=[-6.0])
    torch.testing.assert_close(ln_dpo(logps, beta=0.5, label_smoothing=0.2).losses,
                               torch.tensor([0.5132617], dtype=torch.float64))
    with pytest.raises(ValueError, match="ln-dpo: needs reference"):
        ln_dpo(make_logps([-1.0], [-2.0]), beta=0.5)
    assert get_objective("ln-dpo").needs_reference
