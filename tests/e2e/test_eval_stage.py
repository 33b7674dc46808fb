"""`run_eval` in-process, without a run directory: a model path plus data."""

import json

import pytest

from tests.helpers import compose


def test_model_path_plus_data_with_the_policy_as_its_own_reference(tmp_path, tiny_model, tiny_tokenizer):
    """Without a train run, the composed groups are used as given; with reference = the policy itself,
    KL is exactly 0 and the held-out status is unknown. A real-model preset (llama3-instruct)
    picks its family's AlpacaEval preset (temperature 0.9)."""
    from simpo_cli.stages.eval import run_eval

    local = tmp_path / "local-llama"
    tiny_model.save_pretrained(local)
    tiny_tokenizer.save_pretrained(local)
    cfg = compose(["model=llama3-instruct", f"model.name_or_path={local}", "model.dtype=float32",
                   "model.attn_implementation=eager", "data.max_samples=6", "hparams.max_length=96",
                   "hparams.max_prompt_length=48", f"reference.name_or_path={local}", "eval.benchmarks=[alpaca_eval]",
                   "eval.limit=1", "eval.max_new_tokens=2", "eval.model_id=local-test",
                   f"paths.cache_dir={tmp_path / 'cache'}"], "eval")
    result = run_eval(cfg, tmp_path / "out")
    s = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert s == json.loads(json.dumps(result.summary, default=str))
    p = s["pairs"]
    assert p["n_pairs"] == 6 and p["held_out"] is None and s["run"] is None and s["device"] == "cpu"
    assert p["kl_chosen"]["per_sequence"] == 0.0 and p["kl_chosen"]["per_token"] == 0.0
    b = s["benchmarks"]["alpaca_eval"]
    assert b["temperatures"] == {"0.9": 1} and b["max_new_tokens"] == 2
    rows = json.loads((tmp_path / "out" / "alpaca_eval/model_outputs.json").read_text())
    assert rows[0]["generator"] == "local-test"
    assert "held-out status unknown" in (tmp_path / "out" / "report.md").read_text()
    sources = json.loads((tmp_path / "out" / "meta.json").read_text())["model_source"]
    assert {role: (s["kind"], s["location"]) for role, s in sources.items()} == {
        "policy": ("local", str(local)), "reference": ("local", str(local))}


def test_a_failed_eval_is_recorded_and_raises_a_user_error(tmp_path):
    from simpo_cli.errors import UserError
    from simpo_cli.stages.eval import run_eval

    cfg = compose(["data=local", f"data.path={tmp_path / 'missing.jsonl'}", "eval.benchmarks=[]",
                   f"paths.cache_dir={tmp_path / 'cache'}"], "eval")
    with pytest.raises(UserError, match="missing.jsonl"):
        run_eval(cfg, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["status"] == "failed" and not (tmp_path / "out" / "eval.json").exists()


def _fake_run(tmp_path, overrides):
    """A run directory as `simpo train` leaves it: resolved config.yaml, meta.json, model/."""
    from omegaconf import OmegaConf

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(compose(overrides), resolve=True))
    (run / "meta.json").write_text(json.dumps({"stage": "train", "status": "completed"}))
    return run


def _preflight(tmp_path, args):
    """Compose and validate as the CLI does (``simpo eval ARGS``), without running the job."""
    from simpo_cli.run.preflight import preflight

    return preflight("eval", "eval", [*args, f"paths.cache_dir={tmp_path / 'cache'}"])


def test_run_supplies_defaults_and_command_line_overrides_win(tmp_path):
    """The run's saved config is the base of the composition; a key override (objective.beta=3) is
    set on the run's value, a group choice (data=local) takes the composed group; the policy is
    <run>/model, the reference the run's starting model even when the policy path is overridden;
    the run directory lies next to the run."""
    from simpo_cli.stages.eval import train_run_info

    run = _fake_run(tmp_path, ["objective.gamma=0.7", "hparams.learning_rate=5e-6", "seed=7",
                               "model.tiny.seed=3", "data.max_samples=16"])
    plan = _preflight(tmp_path, [f"model={run}", "objective.beta=3.0"])
    cfg = plan.cfg
    info = train_run_info(cfg)
    assert (cfg.objective.beta, cfg.objective.gamma, cfg.hparams.learning_rate, cfg.seed) == (3.0, 0.7, 5e-6, 7)
    assert cfg.model.name_or_path == str(run / "model") and cfg.model.tokenizer is None
    assert cfg.data.max_samples == 16 and info["trained_on"] == ("pkg:data/dpo_en_demo.json", "train")
    ref = info["start_model"]
    assert ref.name_or_path is None and ref.tokenizer == "pkg:tiny-tokenizer" and ref.tiny.seed == 3
    assert plan.run_dir.parent.parent == run / "eval" and not plan.existed

    held = tmp_path / "held.jsonl"
    held.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    plan = _preflight(tmp_path, [f"model={run}", "data=local", f"data.path={held}",
                                 "model.name_or_path=/elsewhere", "seed=1", f"run_dir={tmp_path / 'ev'}"])
    cfg = plan.cfg
    info = train_run_info(cfg)
    assert cfg.data.path == str(held) and cfg.data.max_samples is None and cfg.seed == 1
    assert cfg.model.name_or_path == "/elsewhere" and info["start_model"].name_or_path is None
    assert plan.run_dir == tmp_path / "ev"


def test_run_without_a_model_is_a_user_error(tmp_path):
    from simpo_cli.errors import ConfigError

    run = _fake_run(tmp_path, [])
    (run / "model").rmdir()
    with pytest.raises(ConfigError, match="no model/ directory"):
        _preflight(tmp_path, [f"model={run}"])
    with pytest.raises(ConfigError, match="run= is gone; evaluate a train run with model="):
        _preflight(tmp_path, [f"run={run}"])
