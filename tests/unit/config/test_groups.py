"""Each stage's config groups: `simpo sft data=X hparams=Y` picks from sft_data/ and sft_hparams/,
and an option of another stage's group names the command that takes it."""

from __future__ import annotations

import pytest

from simpo_cli.config.checks import group_overrides, validate_stage
from simpo_cli.errors import ConfigError
from tests.helpers import compose


def test_sft_groups_live_in_their_own_directories():
    assert group_overrides("sft", ["data=ultrachat", "hparams=sft-paper", "data.max_samples=3"]) == [
        "sft_data@data=ultrachat", "sft_hparams@hparams=sft-paper", "data.max_samples=3"]
    assert group_overrides("config", ["data=demo-prefs", "hparams=llama3-base"]) == ["data=demo-prefs",
                                                                                      "hparams=llama3-base"]


@pytest.mark.parametrize("config_name, override, message", [
    ("sft", "data=demo-prefs", "holds preference pairs, not conversations: run `simpo train data=demo-prefs`"),
    ("config", "data=alpaca-demo", "holds SFT conversations, not preference pairs: run `simpo sft data=alpaca-demo`"),
    ("config", "hparams=sft-paper", "hparams 'sft-paper' is a simpo sft recipe"),
    ("sft", "hparams=llama3-base", "hparams 'llama3-base' is a preference recipe"),
    ("config", "data=nope", "unknown data option 'nope'; choose from: demo-prefs"),
])
def test_another_stages_option_is_one_clear_problem(config_name, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        group_overrides(config_name, [override])


@pytest.mark.parametrize("stage, config_name, override, problem", [
    ("train", "config", "objective.beta=0", "objective.beta must be > 0"),
    ("sft", "sft", "data.eval_size=0", "data.eval_size"),
    ("generate-pairs", "generate-pairs", "generation.n=1", "generation.n must be >= 2"),
    ("eval", "eval", "eval.limit=0", "eval.limit must be >= 1"),
    ("eval", "eval", "model.dtype=float64", "model.dtype must be one of"),  # shared checks, every stage
])
def test_every_stage_has_a_validator(stage, config_name, override, problem):
    cfg = compose([override], config_name)
    with pytest.raises(ConfigError, match=problem):
        validate_stage(stage, cfg)
