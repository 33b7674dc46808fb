"""WPO weighting (arXiv 2406.11827) as a modifier of any objective: losses × exp(mean aligned token
log-prob of y_w) × exp(… of y_l), the weight detached."""

import dataclasses

import pytest
import torch

from simpo_cli.objectives import OBJECTIVES, get_objective
from simpo_cli.objectives.simpo import simpo
from simpo_cli.objectives.wpo import configured, with_wpo, wpo_weights
from tests.unit.objectives.conftest import make_logps


def wpo_logps():
    """y_w: −2 over 2 tokens (mean −1), Σ log Σp² = −1; y_l: −6 over 3 tokens (mean −2), Σ = −3."""
    logps = make_logps([-2.0], [-6.0], [2], [3])
    logps.chosen_log_sum_sq = torch.tensor([-1.0], dtype=torch.float64)
    logps.rejected_log_sum_sq = torch.tensor([-3.0], dtype=torch.float64)
    return logps


def test_weights_hand_computed():
    """none: exp(−1) · exp(−2) = e^−3 = 0.0497871. sampled: exp((−2 + 1)/2) · exp((−6 + 3)/3) =
    e^−0.5 · e^−1 = e^−1.5 = 0.2231302. A side with no tokens (unpaired record) counts 1."""
    logps = wpo_logps()
    torch.testing.assert_close(wpo_weights(logps, "none"), torch.tensor([0.0497871], dtype=torch.float64))
    torch.testing.assert_close(wpo_weights(logps, "sampled"), torch.tensor([0.2231302], dtype=torch.float64))
    unpaired = make_logps([-2.0], [0.0], [2], [0])
    torch.testing.assert_close(wpo_weights(unpaired, "none"), torch.tensor([0.3678794], dtype=torch.float64))


def test_wpo_simpo_hand_computed_and_no_gradient_through_the_weight():
    """SimPO, β = 2, γ = 0: z = 2(−1 − (−2)) = 2 → log(1 + e^−2) = 0.1269280; × 0.2231302 =
    0.0283215. The gradient is the weight times SimPO's (w is a constant); rewards unchanged."""
    spec = with_wpo(get_objective("simpo"), "sampled")
    logps = wpo_logps()
    logps.chosen.requires_grad_()
    out = spec.fn(logps, beta=2.0, gamma=0.0)
    torch.testing.assert_close(out.losses, torch.tensor([0.0283215], dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(out.weights, torch.tensor([0.2231302], dtype=torch.float64))
    assert not out.weights.requires_grad
    (grad,) = torch.autograd.grad(out.losses.sum(), logps.chosen)
    plain = make_logps([-2.0], [-6.0], [2], [3])
    plain.chosen.requires_grad_()
    (plain_grad,) = torch.autograd.grad(simpo(plain, beta=2.0, gamma=0.0).losses.sum(), plain.chosen)
    torch.testing.assert_close(grad, 0.2231302 * plain_grad, atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(out.chosen_rewards, simpo(plain, beta=2.0, gamma=0.0).chosen_rewards)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_takes_the_modifier(name):
    """Any objective: WPO multiplies its losses by the weight and nothing else; ``configured``
    switches it on from ``objective.wpo`` and asks the loop for Σp² only for ``sampled``."""
    spec = get_objective(name)
    logps = wpo_logps()
    logps.ref_chosen, logps.ref_rejected = torch.tensor([-3.0], dtype=torch.float64), torch.tensor([-5.0], dtype=torch.float64)
    logps.kl, logps.ref_kl = torch.tensor([-4.0], dtype=torch.float64), torch.tensor([-5.0], dtype=torch.float64)
    kwargs = spec.kwargs(dataclasses.asdict(spec.params()))
    plain = spec.fn(logps, **kwargs)
    weighted = configured(spec, {"wpo": True, "wpo_alignment": "sampled"})
    assert weighted.needs_sum_sq_probs and not spec.needs_sum_sq_probs
    torch.testing.assert_close(weighted.fn(logps, **kwargs).losses, plain.losses * 0.2231302, atol=1e-7, rtol=1e-6)
    assert plain.weights is None
    assert configured(spec, {"wpo": False}) is spec
    assert not configured(spec, {"wpo": True, "wpo_alignment": "none"}).needs_sum_sq_probs


def test_errors():
    with pytest.raises(ValueError, match="wpo: unknown wpo_alignment 'greedy'"):
        with_wpo(get_objective("dpo"), "greedy")
    with pytest.raises(ValueError, match="needs logps.chosen_log_sum_sq"):
        wpo_weights(make_logps([-2.0], [-6.0], [2], [3]), "sampled")


@pytest.mark.parametrize("name", ["simpo", "dpo", "simper"])
def test_the_switch_composes_for_any_objective_and_is_listed_when_on(name):
    """``objective=<name> objective.wpo=true`` composes (every objective's schema has the
    modifier), the run's provenance table lists it only when it is on, and a misspelled alignment
    is one readable problem naming the key."""
    from simpo_cli.config.checks import validate_train
    from simpo_cli.config.recipes import provenance
    from simpo_cli.errors import ConfigError
    from tests.helpers import compose

    overrides = [f"objective={name}", "objective.wpo=true"]
    cfg = compose(overrides)
    assert cfg.objective.wpo is True and cfg.objective.wpo_alignment == "sampled"
    assert provenance(cfg, overrides)["objective.wpo"] == {"value": True, "source": "command line"}
    off = compose([f"objective={name}"])
    assert off.objective.wpo is False and "objective.wpo" not in provenance(off, [f"objective={name}"])
    with pytest.raises(ConfigError, match="objective.wpo_alignment must be one of sampled, none, got greedy"):
        validate_train(compose([*overrides, "objective.wpo_alignment=greedy"]))
