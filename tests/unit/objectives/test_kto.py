"""KTO (KTO paper Eq. 8; PAPER.md Table 3 with the sign of the undesirable term as in the paper):
per pair [λ_D(1 − σ(β(ρ_w − z0))) + λ_U(1 − σ(β(z0 − ρ_l)))]/2, z0 = max(0, mean(kl − ref_kl))."""

import math

import pytest
import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.kto import kto, kto_z_ref
from tests.unit.objectives.conftest import make_logps


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_kto_hand_computed():
    """ρ_w = 2, ρ_l = −1. Mismatched rows: kl − ref_kl = [1.5, 0.5] → z0 = mean = 1.0.
    β = 1: desirable 1 − σ(2 − 1) = 1 − 0.7310586 = 0.2689414; undesirable 1 − σ(1 − (−1)) =
    1 − 0.8807971 = 0.1192029. λ_D = 1, λ_U = 2: (0.2689414 + 2·0.1192029)/2 = 0.2536736.
    Rewards β ρ: 2, −1."""
    logps = make_logps([-10.0], [-20.0], ref_chosen=[-12.0], ref_rejected=[-19.0],
                       kl=[-5.0, -6.0], ref_kl=[-6.5, -6.5])
    assert kto_z_ref(logps).item() == pytest.approx(1.0)
    out = kto(logps, beta=1.0, lambda_d=1.0, lambda_u=2.0)
    expected = (1 - sig(1.0) + 2 * (1 - sig(2.0))) / 2
    assert expected == pytest.approx(0.2536736, abs=1e-7)
    torch.testing.assert_close(out.losses, torch.tensor([expected], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([2.0], dtype=torch.float64))


def test_kto_z_ref_clamped_and_detached():
    """kl − ref_kl = [−1, −3] → mean −2 → clamped to 0. With z0 = 0, ρ_w = ρ_l = 0:
    each term 1 − σ(0) = 0.5 → loss 0.5. z0 carries no gradient."""
    kl = torch.tensor([-1.0, -3.0], requires_grad=True)
    logps = make_logps([-1.0], [-1.0], ref_chosen=[-1.0], ref_rejected=[-1.0])
    logps.kl, logps.ref_kl = kl, torch.zeros(2)
    z = kto_z_ref(logps)
    assert z.item() == 0.0 and not z.requires_grad
    assert kto(logps, beta=0.1).losses.item() == pytest.approx(0.5)


def test_kto_errors_and_spec():
    with pytest.raises(ValueError, match="mismatched"):
        kto(make_logps([-1.0], [-2.0], ref_chosen=[-1.0], ref_rejected=[-2.0]), beta=0.1)
    spec = get_objective("kto")
    assert spec.needs_reference and spec.needs_mismatched


def test_kto_unpaired_records_weigh_one_side_each():
    """Two unpaired records (z0 = 0: kl − ref_kl = [0, 0]; β = 1):
    desirable, ρ = −10 − (−11) = 1 → λ_D(1 − σ(1)) = 1·0.2689414;
    undesirable, ρ = −5 − (−7) = 2 → λ_U(1 − σ(0 − 2)) = 2·(1 − 0.1192029) = 1.7615942.
    The absent side (length 0) contributes nothing; its reward is 0."""
    logps = make_logps([-10.0, 0.0], [0.0, -5.0], chosen_lengths=[3, 0], rejected_lengths=[0, 4],
                       ref_chosen=[-11.0, 0.0], ref_rejected=[0.0, -7.0], kl=[-3.0, -4.0], ref_kl=[-3.0, -4.0])
    out = kto(logps, beta=1.0, lambda_d=1.0, lambda_u=2.0)
    torch.testing.assert_close(out.losses, torch.tensor([0.2689414, 1.7615942], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([0.0, 2.0], dtype=torch.float64))
