"""Every sweep file (``sweeps/`` = ``simpo_cli/conf/sweep``, recursively) composes with the basic and
the Slurm launcher, names keys that exist, and expands to the grid it promises."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from simpo_cli.config.schema import CONF_DIR

from simpo_cli.config.store import register_configs

REPO = Path(__file__).resolve().parents[3]
SWEEPS = REPO / "sweeps"
SWEEP_FILES = sorted(SWEEPS.rglob("*.yaml"))


def _compose(overrides: list[str]):
    """Compose ``simpo train``'s config with the ``hydra`` node (sweeper, launcher) kept."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def _sweep_override(path: Path) -> str:
    """``sweeps/a/b.yaml`` -> ``+sweep/a=b`` (Hydra's nested group syntax)."""
    rel = path.relative_to(SWEEPS)
    group = "/".join(["sweep", *rel.parent.parts])
    return f"+{group}={rel.stem}"


def _needs_plugins(path: Path, launcher: str) -> None:
    if "optuna" in path.read_text():
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'simpo-cli[optuna]'")
    if launcher == "slurm":
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'simpo-cli[slurm]'")


def _grid(params: dict, cli: list[str] = ()) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of ``params`` plus command-line sweep overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + list(cli))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_sweeps_is_the_package_sweep_group():
    assert SWEEPS.resolve() == (CONF_DIR / "sweep").resolve()
    assert {"simpo_grid", "simpo_paper", "simpo_optuna"} <= {p.stem for p in SWEEP_FILES}


@pytest.mark.parametrize("launcher", ["basic", "slurm"])
@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: str(p.relative_to(SWEEPS)))
def test_every_sweep_file_composes(path: Path, launcher: str):
    _needs_plugins(path, launcher)
    extra = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
             "hydra.launcher.timeout_min=90"] if launcher == "slurm" else []
    cfg = _compose([_sweep_override(path), *extra])
    params = cfg.hydra.sweeper.params
    assert params, f"{path.name} sets no hydra.sweeper.params"
    for key in params:  # every axis is a real key of the composed config (catches typos)
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", f"{path.name}: no key {key}"
    if "optuna" in cfg.hydra.sweeper._target_.lower():
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

        for key, value in params.items():
            override = OverridesParser.create().parse_overrides([f"{key}={value}"])[0]
            assert create_optuna_distribution_from_override(override) is not None
    else:
        jobs = _grid(params)
        sizes = [len(str(v).split(",")) for v in params.values()]
        assert len(jobs) == math.prod(sizes) and len({tuple(j) for j in jobs}) == len(jobs)
    if launcher == "slurm":
        launcher_cfg = cfg.hydra.launcher
        assert launcher_cfg._target_.endswith("SlurmLauncher")
        assert (launcher_cfg.partition, launcher_cfg.gpus_per_node, launcher_cfg.timeout_min) == ("gpu", 4, 90)
        assert launcher_cfg.tasks_per_node == 4  # one process per GPU
    else:
        assert cfg.hydra.launcher._target_.endswith("BasicLauncher")


def test_simpo_grid_is_the_issue_grid_and_any_axis_narrows_from_the_shell():
    params = _compose(["+sweep=simpo_grid"]).hydra.sweeper.params
    jobs = _grid(params)
    assert len(jobs) == 4 * 4 * 4
    assert {j[0] for j in jobs} == {f"objective.beta={b}" for b in ("2.0", "2.5", "5.0", "10.0")}
    # The command line wins over the file, axis by axis; the other axes stay.
    narrowed = _grid(params, ["objective.beta=2.0,2.5", "hparams.learning_rate=1e-6"])
    assert len(narrowed) == 2 * 4 * 1
    assert {j[2] for j in narrowed} == {"hparams.learning_rate=1e-06"}


def test_simpo_paper_is_table_7():
    params = _compose(["+sweep=simpo_paper"]).hydra.sweeper.params
    assert params["objective.beta"] == "2.0,2.5"
    assert params["objective.gamma"] == "0.3,0.5,1.0,1.2,1.4,1.6"
    assert len(_grid(params)) == 2 * 6 * 4


def test_optuna_sweep_maximises_the_returned_metric():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'simpo-cli[optuna]'")
    cfg = _compose(["+sweep=simpo_optuna", "hydra.sweeper.n_trials=3"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.sweep.metric == "rewards/accuracies"
    assert cfg.hydra.sweeper.n_trials == 3 and cfg.hydra.sweeper.sampler.seed == cfg.seed
