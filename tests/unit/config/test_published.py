"""A recipe's ``published:`` values are applied once after composition (simpo_cli/config/recipes.py):
to the chosen objective only, never over a key the command line sets."""

from __future__ import annotations

import pytest

from simpo_cli.config import recipes
from simpo_cli.errors import ConfigError
from tests.helpers import compose


def test_switching_the_objective_switches_beta_with_it():
    simpo = compose(["model=llama3-instruct", "objective=simpo"]).objective
    dpo = compose(["model=llama3-instruct", "objective=dpo"]).objective
    kto = compose(["model=llama3-instruct", "objective=kto"]).objective
    ipo = compose(["model=llama3-instruct", "objective=ipo"]).objective
    assert (simpo.beta, simpo.gamma) == (2.5, 1.375)  # published.simpo
    assert dpo.beta == 0.01 and "gamma" not in dpo  # published.dpo; DPO has no margin
    assert kto.beta == 0.1  # nothing published for KTO: its default
    assert "beta" not in ipo and ipo.tau == 0.1  # IPO has no beta


def test_a_key_set_on_the_command_line_is_not_replaced():
    overrides = ["model=llama3-instruct", "objective.gamma=0.5"]
    cfg = compose(overrides)
    assert (cfg.objective.beta, cfg.objective.gamma) == (2.5, 0.5)
    table = recipes.provenance(cfg, overrides)
    assert table["objective.gamma"] == {"value": 0.5, "source": "command line"}
    assert table["objective.beta"]["source"] == "recipe llama3-instruct (published simpo values)"


def test_a_published_key_the_objective_lacks_is_one_line(monkeypatch):
    real = recipes.config_file

    def with_typo(group, option):
        doc = real(group, option)
        return {**doc, "published": {"simpo": {"betta": 3.0}}} if group == "recipe" else doc

    monkeypatch.setattr(recipes, "config_file", with_typo)
    with pytest.raises(ConfigError) as info:
        compose(["model=llama3-instruct"])
    assert info.value.problems == ["simpo_cli/recipes/llama3-instruct.yaml: published.simpo.betta is not a "
                                   "setting of objective simpo"]
