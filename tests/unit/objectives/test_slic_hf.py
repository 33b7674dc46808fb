"""SLiC-HF (PAPER.md Table 3): loss = max(0, δ − logπ_w + logπ_l) − λ logπ_w (summed)."""

import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.slic_hf import slic_hf
from tests.unit.objectives.conftest import make_logps


def test_slic_hf_hand_computed():
    """Pair 1: logπ_w = −10, logπ_l = −9.5, δ = 1 → relu(1 + 10 − 9.5) = 1.5; λ = 0.1 → +1 → 2.5.
    Pair 2: logπ_w = −5, logπ_l = −20 → relu(1 + 5 − 20) = 0; λ → +0.5 → 0.5.
    Rewards are the summed log-probs."""
    logps = make_logps([-10.0, -5.0], [-9.5, -20.0])
    out = slic_hf(logps, delta=1.0, sft_weight=0.1)
    torch.testing.assert_close(out.losses, torch.tensor([2.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([-10.0, -5.0], dtype=torch.float64))
    spec = get_objective("slic-hf")
    assert spec.name == "slic-hf" and not spec.needs_reference and not spec.has("beta")
