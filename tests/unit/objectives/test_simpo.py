"""SimPO (PAPER.md Eq. 6) against values computed by hand.

Batch of two pairs, β = 2, γ = 1:
  pair 0: chosen  Σlogp = -6 over 3 tokens → a_w = -2;  rejected Σlogp = -12 over 4 → a_l = -3
          z = β(a_w − a_l) − γ = 2·1 − 1 = 1
  pair 1: chosen  Σlogp = -10 over 5 → a_w = -2;  rejected Σlogp = -4 over 2 → a_l = -2
          z = 2·0 − 1 = −1
sigmoid:  −log σ(1) = log(1 + e^−1) = 0.3132616875;   −log σ(−1) = log(1 + e) = 1.3132616875
hinge:    relu(1 − z) = [0, 2]
label smoothing ε = 0.1: 0.9·0.3132617 + 0.1·1.3132617 = 0.4132617;
                         0.9·1.3132617 + 0.1·0.3132617 = 1.2132617
sft_weight λ = 0.5 adds λ·(−a_w) = 0.5·2 = 1 to both: [1.3132617, 2.3132617]
rewards: β·a = chosen [−4, −4], rejected [−6, −4]
γ = 0 (pair 0): −log σ(2) = log(1 + e^−2) = 0.1269280110, i.e. a plain sigmoid on mean log-probs.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from simpo_cli.objectives import OBJECTIVES, PreferenceLogps
from simpo_cli.objectives.simpo import simpo


@pytest.fixture
def logps():
    return PreferenceLogps(
        chosen=torch.tensor([-6.0, -10.0]), rejected=torch.tensor([-12.0, -4.0]),
        chosen_lengths=torch.tensor([3, 5]), rejected_lengths=torch.tensor([4, 2]),
    )


def test_sigmoid(logps):
    out = simpo(logps, beta=2.0, gamma=1.0)
    assert_close(out.losses, torch.tensor([0.3132616875, 1.3132616875]))
    assert_close(out.chosen_rewards, torch.tensor([-4.0, -4.0]))
    assert_close(out.rejected_rewards, torch.tensor([-6.0, -4.0]))


def test_hinge(logps):
    out = simpo(logps, beta=2.0, gamma=1.0, loss_type="hinge")
    assert_close(out.losses, torch.tensor([0.0, 2.0]))


def test_label_smoothing(logps):
    out = simpo(logps, beta=2.0, gamma=1.0, label_smoothing=0.1)
    assert_close(out.losses, torch.tensor([0.4132616875, 1.2132616875]))


def test_sft_weight_adds_chosen_nll(logps):
    out = simpo(logps, beta=2.0, gamma=1.0, sft_weight=0.5)
    assert_close(out.losses, torch.tensor([1.3132616875, 2.3132616875]))


def test_gamma_zero_is_sigmoid_on_mean_logps(logps):
    out = simpo(logps, beta=2.0, gamma=0.0)
    assert math.isclose(out.losses[0].item(), 0.1269280110, rel_tol=1e-6)
    expected = -torch.nn.functional.logsigmoid(2.0 * (logps.chosen_avg - logps.rejected_avg))
    assert_close(out.losses, expected)


def test_gradient_is_length_normalised(logps):
    """Appendix F: d loss / d Σlogp_w = −s·β/|y_w| with s = σ(−z); pair 0: s = σ(−1)."""
    chosen = logps.chosen.clone().requires_grad_(True)
    simpo(PreferenceLogps(chosen, logps.rejected, logps.chosen_lengths, logps.rejected_lengths),
          beta=2.0, gamma=1.0).losses.sum().backward()
    s = torch.sigmoid(torch.tensor(-1.0))
    assert_close(chosen.grad[0], -s * 2.0 / 3)


def test_rewards_are_detached_and_unknown_loss_type_rejected(logps):
    out = simpo(logps, beta=2.0, gamma=1.0)
    assert not out.chosen_rewards.requires_grad
    with pytest.raises(ValueError, match="unknown loss_type 'ipo'"):
        simpo(logps, beta=2.0, gamma=1.0, loss_type="ipo")


def test_registry_declares_needs():
    spec = OBJECTIVES["simpo"]
    assert spec.needs_reference is False and spec.logp_reduction == "mean"
    assert spec.has("beta") and spec.has("gamma") and spec.has("gamma_beta_ratio")
