"""RRHF (PAPER.md Table 3): loss = max(0, −logπ_w/|y_w| + logπ_l/|y_l|) − λ logπ_w."""

import torch

from simpo_cli.objectives import get_objective
from simpo_cli.objectives.rrhf import rrhf
from tests.unit.objectives.conftest import make_logps


def test_rrhf_hand_computed():
    """Pair 1: logπ_w = −12 over 4 tokens (−3/token), logπ_l = −4 over 2 (−2/token): ranking
    relu(3 − 2) = 1; λ = 0.5 adds 0.5·12 = 6 → 7. Pair 2: −2/token vs −3/token → ranking 0;
    λ·8 = 4 → 4 (logπ_w = −8 over 4). Rewards are the per-token averages: −3, −2 and −2, −3."""
    logps = make_logps([-12.0, -8.0], [-4.0, -9.0], [4, 4], [2, 3])
    out = rrhf(logps, sft_weight=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([7.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([-3.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-2.0, -3.0], dtype=torch.float64))
    spec = get_objective("rrhf")
    assert not spec.needs_reference and spec.logp_reduction == "mean" and not spec.has("beta")
