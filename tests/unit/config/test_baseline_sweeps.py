"""Each baseline's sweep file (simpo_cli/conf/sweep/<objective>.yaml) composes with ``+sweep=<name>``,
selects its objective, and sweeps exactly PAPER.md Table 7's range x the learning-rate grid."""

import pytest
from hydra import compose, initialize_config_dir

from simpo_cli.config.schema import CONF_DIR

from simpo_cli.config.store import register_configs
from simpo_cli.objectives import OBJECTIVES

LR = ["3e-7", "5e-7", "6e-7", "1e-6"]
TABLE_7 = {  # PAPER.md Table 7, as config keys
    "dpo": {"objective.beta": ["0.01", "0.05", "0.1"]},
    "ipo": {"objective.tau": ["0.01", "0.1", "0.5", "1.0"]},
    "cpo": {"objective.beta": ["0.01", "0.05", "0.1"], "objective.sft_weight": ["1.0"]},
    "kto": {"objective.beta": ["0.01", "0.05", "0.1"], "objective.lambda_d": ["1.0"], "objective.lambda_u": ["1.0"]},
    "orpo": {"objective.odds_ratio_weight": ["0.1", "0.5", "1.0", "2.0"]},
    "rdpo": {"objective.alpha": ["0.05", "0.1", "0.5", "1.0"], "objective.beta": ["0.01", "0.05", "0.1"]},
    "rrhf": {"objective.sft_weight": ["0.1", "0.5", "1.0", "10.0"]},
    "slic-hf": {"objective.delta": ["0.1", "0.5", "1.0", "2.0"], "objective.sft_weight": ["0.1", "0.5", "1.0", "10.0"]},
}


def test_every_baseline_has_a_sweep():
    assert set(TABLE_7) == set(OBJECTIVES) - {"simpo"}
    for name in TABLE_7:
        assert (CONF_DIR / "sweep" / f"{name}.yaml").is_file()


@pytest.mark.parametrize("name", sorted(TABLE_7))
def test_sweep_composes_and_matches_table_7(name):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    assert cfg.objective.name == name
    params = {k: v.split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert params == {**TABLE_7[name], "hparams.learning_rate": LR}
    for key in params:  # every swept key exists in the composed config (no silent typo)
        section, knob = key.split(".")
        assert knob in cfg[section], f"{key} is not a key of the composed config"
