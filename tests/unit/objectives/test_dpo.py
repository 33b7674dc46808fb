"""DPO (PAPER.md Table 3): loss = −log σ(β(ρ_w − ρ_l)), ρ = logπ − logπ_ref (summed)."""

import math

import pytest
import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.dpo import dpo
from tests.unit.objectives.conftest import make_logps


def test_dpo_hand_computed():
    """Pair 1: ρ_w = −10 − (−12) = 2, ρ_l = −20 − (−19) = −1, β = 0.5 → z = 0.5·3 = 1.5,
    loss = log(1 + e^−1.5) = 0.2014133; rewards β ρ = 1.0, −0.5.
    Pair 2: equal log-ratios (ρ_w = ρ_l = 0) → z = 0, loss = log 2 = 0.6931472."""
    logps = make_logps([-10.0, -5.0], [-20.0, -7.0], ref_chosen=[-12.0, -5.0], ref_rejected=[-19.0, -7.0])
    out = dpo(logps, beta=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([0.2014133, math.log(2)], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.0], dtype=torch.float64))


def test_dpo_label_smoothing_and_hinge():
    """Same pair 1 (z = 1.5). ε = 0.1: 0.9·0.2014133 + 0.1·log(1 + e^1.5) = 0.9·0.2014133 +
    0.1·1.7014133 = 0.3514133. Hinge: relu(1 − 1.5) = 0; with β = 0.25 (z = 0.75): 0.25."""
    logps = make_logps([-10.0], [-20.0], ref_chosen=[-12.0], ref_rejected=[-19.0])
    torch.testing.assert_close(dpo(logps, beta=0.5, label_smoothing=0.1).losses,
                               torch.tensor([0.3514133], dtype=torch.float64))
    assert dpo(logps, beta=0.5, loss_type="hinge").losses.item() == 0.0
    assert dpo(logps, beta=0.25, loss_type="hinge").losses.item() == pytest.approx(0.25)


def test_dpo_errors_and_spec():
    logps = make_logps([-1.0], [-2.0])
    with pytest.raises(ValueError, match="reference"):
        dpo(logps, beta=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        dpo(make_logps([-1.0], [-2.0], ref_chosen=[-1.0], ref_rejected=[-2.0]), beta=0.1, loss_type="x")
    spec = get_objective("dpo")
    assert spec.needs_reference and spec.logp_reduction == "sum" and spec.has("beta") and not spec.has("gamma")
