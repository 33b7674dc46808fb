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
    """run_simpo sets WANDB_MODE=offline, as a cluster's environment often does: stdout stays the
    config alone (transformers' "[INFO] Running in WANDB offline mode" goes to stderr)."""
    import yaml

    out = run_simpo(["train", "--cfg", "job", "hparams=llama3-instruct", "objective.beta=3.0"], tmp_path).stdout
    cfg = yaml.safe_load(out)
    assert (cfg["objective"]["beta"], cfg["objective"]["gamma"], cfg["hparams"]["learning_rate"]) == (3.0, 1.375, 1e-6)
