"""The CLI's help and config printing (no training)."""

from tests.helpers import run_simpo


def test_root_help_lists_groups_and_options(tmp_path):
    out = run_simpo(["--help"], tmp_path).stdout
    for text in ("train", "model", "tiny-llama", "llama3-instruct", "hparams", "demo-prefs"):
        assert text in out


def test_train_help_lists_groups_and_objectives(tmp_path):
    from simpo_cli.objectives import OBJECTIVES

    out = run_simpo(["train", "--help"], tmp_path).stdout
    assert "Config groups" in out and "-m, --multirun" in out
    for name in OBJECTIVES:
        assert name in out


def test_cfg_job_prints_resolved_overrides(tmp_path):
    out = run_simpo(["train", "--cfg", "job", "hparams=llama3-instruct", "objective.beta=3.0"], tmp_path).stdout
    assert "beta: 3.0" in out and "gamma: 1.375" in out and "learning_rate: 1.0e-06" in out
