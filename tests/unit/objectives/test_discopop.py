"""DiscoPOP (arXiv 2406.08414 Eq. 5): (1 − m)(−log σ(z)) + m e^−z, m = σ(z/τ), z = β(ρ_w − ρ_l)."""

import math

import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.discopop import discopop
from tests.unit.objectives.conftest import make_logps


def test_discopop_hand_computed():
    """β = 0.1, τ = 0.05. Pair 1: ρ_w − ρ_l = (−8 + 10) − (−7 + 8) = 1 → z = 0.1, m = σ(2) =
    0.8807971: 0.1192029·log(1 + e^−0.1) + 0.8807971·e^−0.1 = 0.8737921. Pair 2: Δρ = −1 → z =
    −0.1, m = σ(−2): 0.8807971·log(1 + e^0.1) + 0.1192029·e^0.1 = 0.7874020. Pair 3: z = 0 → m =
    0.5: 0.5·log 2 + 0.5 = 0.8465736."""
    logps = make_logps([-8.0, -9.0, -5.0], [-7.0, -6.0, -5.0],
                       ref_chosen=[-10.0, -8.0, -5.0], ref_rejected=[-8.0, -6.0, -5.0])
    out = discopop(logps, beta=0.1, tau=0.05)
    torch.testing.assert_close(out.losses, torch.tensor([0.8737921, 0.7874020, 0.8465736], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64))


def test_discopop_is_finite_where_exp_overflows():
    """z = −1000: e^−z overflows, but m = σ(−20000) is 0, so the loss is −log σ(z) ≈ 1000 (TRL's
    product 0·inf would be NaN); z = +1000: the loss is ≈ 0."""
    logps = make_logps([-1000.0, 1000.0], [0.0, 0.0], ref_chosen=[0.0, 0.0], ref_rejected=[0.0, 0.0])
    losses = discopop(logps, beta=1.0, tau=0.05).losses.float()
    assert torch.isfinite(losses).all()
    assert math.isclose(losses[0].item(), 1000.0, rel_tol=1e-6) and losses[1].item() < 1e-6
    spec = get_objective("discopop")
    assert spec.needs_reference and spec.has("tau")
