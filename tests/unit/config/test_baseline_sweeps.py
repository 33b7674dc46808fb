"""Each baseline's sweep file (simpo_cli/conf/sweep/<objective>.yaml) composes with ``+sweep=<name>``,
selects its objective, and sweeps exactly the ranges its YAML notes x the learning-rate grid.

The ranges are read from the objective's own YAML, where each knob notes its range: PAPER.md
Table 7's (``# Table 7 searches {0.01, 0.05, 0.1}`` or ``# Table 7 fixes it to 1.0``) or, for an
objective after the paper, its own source's (``# sweeps {0.1, 0.25, 0.5}: <source>``). An
objective without settings (SimPER) sweeps the learning rate only. The sweep files are found in
the sweep group: a new objective brings its YAML and its sweep file, not a row here."""

import re
from dataclasses import fields

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from simpo_cli.config.schema import CONF_DIR
from simpo_cli.config.store import register_configs
from simpo_cli.objectives import OBJECTIVES

LR = [3e-7, 5e-7, 6e-7, 1e-6]  # PAPER.md Appendix B's learning-rate grid
NOTE = re.compile(r"^(\w+):\s*(\S+)\s*#.*?(?:Table 7 searches \{([^}]*)\}|Table 7 fixes it to ([\d.]+)|"
                  r"sweeps \{([^}]*)\})", re.M)


def table_7(objective: str) -> dict[str, list[float]]:
    """Table 7's range of each knob of ``objective``, as its YAML notes it: ``{"objective.beta": [...]}``."""
    text = (CONF_DIR / "objective" / f"{objective}.yaml").read_text()
    return {f"objective.{m[1]}": sorted(float(v) for v in (m[3] or m[4] or m[5]).split(","))
            for m in NOTE.finditer(text)}


def has_no_settings(name: str) -> bool:
    return [f.name for f in fields(OBJECTIVES[name].params)] == ["name"]


# The objectives whose YAML notes their ranges (PAPER.md's baselines and the later objectives) and
# those without settings: one sweep file each, named after the objective (SimPO's own grids are
# simpo_*.yaml).
BASELINES = sorted(name for name in OBJECTIVES if table_7(name) or has_no_settings(name))


def sweep_objective(path) -> str | None:
    """The objective a sweep file selects (``override /objective: <name>``), if any."""
    defaults = yaml.safe_load(path.read_text()).get("defaults") or []
    return next((v for d in defaults if isinstance(d, dict) for k, v in d.items() if k == "override /objective"),
                None)


def test_every_baseline_has_its_sweep_and_every_sweep_file_its_notes():
    files = {p.stem: sweep_objective(p) for p in (CONF_DIR / "sweep").glob("*.yaml")}
    assert {name: files.get(name) for name in BASELINES} == {name: name for name in BASELINES}
    assert {o for o in files.values() if o} <= set(BASELINES), "a sweep file selects an objective without range notes"
    for name in BASELINES:
        ranges = table_7(name)
        defaults = OmegaConf.load(CONF_DIR / "objective" / f"{name}.yaml")
        for key, values in ranges.items():  # the objective's default lies in the range it notes
            assert float(defaults[key.split(".", 1)[1]]) in values, (name, key)


@pytest.mark.parametrize("name", BASELINES)
def test_sweep_composes_and_matches_table_7(name):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    assert cfg.objective.name == name
    params = {k: sorted(float(v) for v in str(v).split(",")) for k, v in cfg.hydra.sweeper.params.items()}
    assert params == {**table_7(name), "hparams.learning_rate": LR}
    for key in params:  # every swept key exists in the composed config (no silent typo)
        section, knob = key.split(".")
        assert knob in cfg[section], f"{key} is not a key of the composed config"


def test_table_7_notes_are_the_papers():
    """A spot check that the notes are read right (PAPER.md Table 7: DPO beta, IPO tau)."""
    assert table_7("dpo") == {"objective.beta": [0.01, 0.05, 0.1]}
    assert table_7("ipo") == {"objective.tau": [0.01, 0.1, 0.5, 1.0]}
    assert table_7("kto") == {"objective.lambda_d": [1.0], "objective.lambda_u": [1.0], "objective.beta": [0.01, 0.05, 0.1]}
    assert table_7("alphapo") == {"objective.alpha": [0.1, 0.25, 0.5], "objective.beta": [2.5], "objective.gamma": [0.1]}
    assert table_7("simper") == {} and "simper" in BASELINES and "simpo" not in BASELINES
