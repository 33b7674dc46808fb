"""SimPER (arXiv 2502.00883): −exp(ŝ_w) + exp(ŝ_l), ŝ the length-averaged log-prob; no knobs."""

import pytest
import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.simper import simper
from tests.unit.objectives.conftest import make_logps


def test_simper_hand_computed():
    """ŝ_w = −3/3 = −1, ŝ_l = −4/2 = −2: −e^−1 + e^−2 = −0.3678794 + 0.1353353 = −0.2325442.
    Rewards: the inverse perplexities e^−1, e^−2. Equal responses: loss 0."""
    logps = make_logps([-3.0, -1.0], [-4.0, -1.0], [3, 1], [2, 1])
    out = simper(logps)
    torch.testing.assert_close(out.losses, torch.tensor([-0.2325442, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.3678794, 0.3678794], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([0.1353353, 0.3678794], dtype=torch.float64))


def test_simper_gradient_is_the_inverse_perplexity_over_length():
    """d loss/d log π(y_w) = −exp(ŝ_w)/|y_w| = −e^−1/3; d/d log π(y_l) = +e^−2/2."""
    logps = make_logps([-3.0], [-4.0], [3], [2])
    logps.chosen.requires_grad_(), logps.rejected.requires_grad_()
    simper(logps).losses.sum().backward()
    assert logps.chosen.grad.item() == pytest.approx(-0.3678794 / 3)
    assert logps.rejected.grad.item() == pytest.approx(0.1353353 / 2)
    spec = get_objective("simper")
    assert not spec.needs_reference and not spec.has("beta") and not spec.has("gamma")
