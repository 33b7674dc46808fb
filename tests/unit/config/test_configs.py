"""Every option of every config group composes; schemas reject typos and wrong types."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from simpo_cli.config import recipe_files
from simpo_cli.config.schema import CONF_DIR, GROUP_DIRS
from tests.helpers import compose

GROUP_FILES = sorted(p for p in CONF_DIR.rglob("*.yaml") if p.parent != CONF_DIR
                     and p.parent.name not in ("sweep", "hydra", "launcher", "sweeper"))


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: str(p.relative_to(CONF_DIR)))
def test_every_group_option_composes(path: Path):
    directory, option = path.parent.relative_to(CONF_DIR).as_posix(), path.stem
    # The stage whose group lives in that directory (GROUP_DIRS: sft_data/ is `simpo sft data=`);
    # scorer belongs to generate-pairs only, experiment to simpo run (its chain at the top level);
    # every other group to train.
    stage_config, group = next(((stage, g) for stage, dirs in GROUP_DIRS.items() for g, d in dirs.items()
                                if d == directory), ({"scorer": "generate-pairs", "experiment": "run"}.get(directory, "config"),
                                                     directory))
    cfg = compose([f"{group}={option}"] + (["data.path=x.jsonl"] if option == "local" else []), stage_config)
    assert (cfg.stages if group == "experiment" else cfg[group.split("/")[0]]) is not None


def test_objective_sets_paper_beta_and_presets_override():
    assert compose([]).objective.beta == 2.0
    cfg = compose(["hparams=llama3-instruct"])
    assert (cfg.objective.beta, cfg.objective.gamma, cfg.hparams.learning_rate) == (2.5, 1.375, 1e-6)
    assert compose(["hparams=llama3-instruct", "objective.beta=10"]).objective.beta == 10


@pytest.mark.parametrize("override,error", [
    ("objective.betaa=2", ConfigCompositionException),
    ("hparams.learning_rate=fast", ConfigCompositionException),
    ("objective.loss_typ=hinge", ConfigCompositionException),
    ("model=llama4", ConfigCompositionException),
])
def test_schema_rejects_typos_and_types(override, error):
    with pytest.raises(error) as info:
        compose([override])
    assert override.split("=")[0].split(".")[-1] in str(info.value) + str(info.value.__cause__)


def test_gamma_beta_ratio_is_explicit():
    from simpo_cli.config.checks import resolve_objective

    cfg = compose(["objective.beta=2.5", "objective.gamma_beta_ratio=0.55"])
    resolve_objective(cfg)
    assert cfg.objective.gamma == pytest.approx(1.375)


def test_validation_reports_all_problems_at_once():
    from simpo_cli.errors import ConfigError
    from simpo_cli.config.checks import validate_train

    cfg = compose(["objective.beta=0", "objective.gamma=-1", "hparams.learning_rate=-1",
                   "hparams.max_prompt_length=600"])
    with pytest.raises(ConfigError) as info:
        validate_train(cfg)
    assert len(info.value.problems) == 4


@pytest.mark.parametrize("group,option", [key for key in recipe_files.nodes() if key[0] != "recipe"],
                         ids=lambda v: str(v))
def test_every_option_a_recipe_file_makes_composes(group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg[group].name == option if group != "hparams" else cfg.hparams.learning_rate > 0
