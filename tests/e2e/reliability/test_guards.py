"""The numerical guard, ``simpo validate``, dropped-row accounting and the checkpoint helpers."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from simpo_cli.objectives.registry import OBJECTIVES
from simpo_cli.training.trainer import PreferenceTrainer
from tests.helpers import FAST_TRAIN, read_jsonl
from tests.e2e.reliability.test_bad_input import GOOD, GOOD2, jsonl


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIMPO_DEBUG", raising=False)
    return tmp_path


def poison_simpo(monkeypatch, bad_steps: set[int], what: str = "loss"):
    """Make the SimPO loss (or only its gradient) NaN on the given 1-based optimizer steps
    (training forwards only, whichever head path computes the loss: the fused head calls the
    objective once per pair, the unfused path once per batch)."""
    spec = OBJECTIVES["simpo"]
    state = {"step": 0}
    training_step = PreferenceTrainer.training_step

    def counting_step(self, *args, **kwargs):
        state["step"] = self.state.global_step + 1
        return training_step(self, *args, **kwargs)

    def fn(logps, **kwargs):
        out = spec.fn(logps, **kwargs)
        if torch.is_grad_enabled() and logps.chosen.requires_grad and state["step"] in bad_steps:
            if what == "loss":
                out.losses = out.losses * float("nan")
            else:  # value + 0, gradient d sqrt(u)/du at 0 = inf, x 0 = NaN
                out.losses = out.losses + torch.sqrt(logps.chosen * 0.0)
        return out

    monkeypatch.setattr(PreferenceTrainer, "training_step", counting_step)
    monkeypatch.setitem(OBJECTIVES, "simpo", dataclasses.replace(spec, fn=fn))


def train(workdir, *extra):
    from simpo_cli.cli import app

    return CliRunner().invoke(app, ["train", *FAST_TRAIN, "trainer.save_model=false", *extra])


def test_nan_loss_stops_naming_step_and_examples_and_keeps_last_checkpoint(workdir, monkeypatch):
    poison_simpo(monkeypatch, {3})
    run_dir = workdir / "run"
    result = train(workdir, "trainer.max_steps=4", "trainer.save_steps=2", f"run_dir={run_dir}")
    assert result.exit_code == 3, result.output[-3000:]
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("simpo: error:")]
    assert len(line) == 1 and "Traceback" not in result.output
    assert line[0].startswith("simpo: error: non-finite loss at step 3 (data examples ")
    examples = [int(i) for i in line[0].split("data examples ")[1].split(")")[0].split(", ")]
    assert len(examples) == 2 and all(0 <= i < 16 for i in examples)  # the batch of step 3
    assert f"last good checkpoint {run_dir / 'checkpoints' / 'checkpoint-2'}" in line[0]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "failed"  # outputs kept


def test_nan_gradient_with_finite_loss_stops_too(workdir, monkeypatch):
    poison_simpo(monkeypatch, {2}, what="grad")
    result = train(workdir, "trainer.max_steps=3", f"run_dir={workdir / 'run'}")
    assert result.exit_code == 3, result.output[-3000:]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("simpo: error:")]
    assert line.startswith("simpo: error: non-finite gradient at step 2 (data examples ")
    assert "no checkpoint was written yet" in line and "trainer.nan_skip_budget" in line


def test_nan_skip_budget_skips_bad_steps_and_finishes(workdir, monkeypatch):
    poison_simpo(monkeypatch, {2, 3})
    run_dir = workdir / "run"
    result = train(workdir, "trainer.max_steps=4", "trainer.nan_skip_budget=2", f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output[-3000:]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["steps"] == 4
    assert [s["step"] for s in meta["nan_skipped"]] == [2, 3]
    assert all(len(s["indices"]) == 2 for s in meta["nan_skipped"])
    # The skipped steps' NaN gradients never reached the weights: the pair metrics stay finite.
    assert all(map(torch.isfinite, torch.tensor(list(meta["pairs_after"].values()))))


def test_dropped_rows_are_counted_and_training_goes_on(workdir):
    """Non-strict data: untrainable rows are dropped and counted by kind (meta.json, ``validate``)."""
    data = workdir / "pairs.jsonl"
    data.write_text(jsonl(GOOD, GOOD2, GOOD, {**GOOD2, "rejected": GOOD2["chosen"]},
                          {"prompt": "x", "chosen": "y"}, {**GOOD, "prompt": "word " * 400},
                          {**GOOD2, "prompt": "Another?", "chosen": ""}, {**GOOD, "prompt": "More?"}))
    from simpo_cli.cli import app

    check = CliRunner().invoke(app, ["validate", "data=local", f"data.path={data}",
                                     "hparams.max_length=128", "hparams.max_prompt_length=64"])
    assert check.exit_code == 0, check.output
    assert "8 records, 4 pairs kept" in check.stdout
    run_dir = workdir / "run"
    result = train(workdir, "data=local", f"data.path={data}", f"run_dir={run_dir}")
    assert result.exit_code == 0, result.output[-3000:]
    stats = json.loads((run_dir / "meta.json").read_text())["data"]
    assert stats["records"] == 8 and stats["kept"] == 4
    assert stats["dropped"] == {"duplicate pair": 1, "chosen identical to rejected": 1,
                                "rejected: missing field": 1, "empty response": 1}
    # Like TRL and the SimPO repo, an over-long prompt is cut to max_prompt_length, not dropped.
    assert stats["prompt_longer_than_max_length"] == 1 and stats["prompt_truncated"] == 1


def test_validate_reports_every_problem_without_loading_a_model(workdir, monkeypatch):
    import simpo_cli.models.loading as modeling

    monkeypatch.setattr(modeling, "load_model", lambda *a, **k: pytest.fail("validate loaded a model"))
    from simpo_cli.cli import app

    ok = CliRunner().invoke(app, ["validate", *FAST_TRAIN])
    assert ok.exit_code == 0, ok.output
    assert "config: ok" in ok.stdout and "data: ok" in ok.stdout and "pairs kept" in ok.stdout
    bad = CliRunner().invoke(app, ["validate", "objective.beta=0", "objective.gamma=-1", "hparams.learning_rate=0",
                                   "hparams.max_prompt_length=4096", "model.name_or_path=/no/such/model",
                                   "data=local", "data.path=/no/such.jsonl"])
    assert bad.exit_code == 2
    (line,) = [ln for ln in bad.stderr.splitlines() if ln.startswith("simpo: error:")]
    for fragment in ("objective.beta must be > 0", "objective.gamma must be >= 0", "hparams.learning_rate must be > 0",
                     "hparams.max_prompt_length (4096) must be < hparams.max_length",
                     "model.name_or_path: local path not found", "data.path: file not found"):
        assert fragment in line
    assert not (workdir / "outputs").exists()
    mixed = CliRunner().invoke(app, ["validate", "--no-data", "objective=foo", "hparams.max_length=abc",
                                     "trainer.max_stepz=3"])
    assert mixed.exit_code == 2
    (line,) = [ln for ln in mixed.stderr.splitlines() if ln.startswith("simpo: error:")]
    for fragment in ("unknown objective option 'foo'", "hparams.max_length", "'abc'",
                     "unknown key 'trainer.max_stepz'; did you mean 'trainer.max_steps'?"):
        assert fragment in line


def test_validate_warns_on_high_learning_rate_for_a_pretrained_model(workdir, caplog):
    from simpo_cli.config.checks import validate_train
    from tests.helpers import compose

    cfg = compose(["hparams=llama3-instruct", "hparams.learning_rate=5e-4", f"model.name_or_path={workdir}"])
    with caplog.at_level("WARNING"):
        validate_train(cfg)
    assert "hparams.learning_rate=0.0005 is far above" in caplog.text


# -- checkpoint helpers (no training) ----------------------------------------------------------

def make_checkpoint(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_only_complete_checkpoints_are_resumed(tmp_path):
    from simpo_cli.training.reliability import clear_staging, complete_checkpoints, resume_checkpoint

    root = tmp_path / "checkpoints"
    make_checkpoint(root, 2)
    make_checkpoint(root, 10)
    make_checkpoint(root, 12, complete=False)  # e.g. copied by hand, cut short
    make_checkpoint(root / ".staging", 14, complete=False)  # a save killed mid-write
    assert [p.name for p in complete_checkpoints(root)] == ["checkpoint-2", "checkpoint-10"]  # numeric order
    assert resume_checkpoint("auto", root) == str(root / "checkpoint-10")
    assert resume_checkpoint("auto", tmp_path / "fresh") is None  # first submission of a requeued job
    assert resume_checkpoint(str(root / "checkpoint-2"), root) == str(root / "checkpoint-2")
    clear_staging(root)
    assert not (root / ".staging").exists()


def test_resume_auto_refuses_to_retrain_a_completed_run(tmp_path):
    from simpo_cli.errors import UserError
    from simpo_cli.training.reliability import resume_checkpoint

    (tmp_path / "meta.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(UserError, match="holds a completed run without checkpoints"):
        resume_checkpoint("auto", tmp_path / "checkpoints")


def test_truncate_jsonl_drops_records_after_the_checkpoint(tmp_path):
    from simpo_cli.training.reliability import truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text(jsonl(*({"step": s, "loss": s / 10} for s in range(1, 7))) + '{"step": 7, "lo')
    truncate_jsonl(path, 4)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3, 4]
    truncate_jsonl(path, 0)  # a fresh start in a run directory killed before its first checkpoint
    assert path.read_text() == ""


def test_resume_refuses_a_changed_recipe(tmp_path):
    from omegaconf import OmegaConf

    from simpo_cli.errors import UserError
    from simpo_cli.training.reliability import check_resume_config
    from tests.helpers import compose

    saved = tmp_path / "config.yaml"
    saved.write_text(OmegaConf.to_yaml(compose(["objective.beta=2.0"]), resolve=True))
    check_resume_config(saved, compose(["objective.beta=2.0", "trainer.max_steps=99"]))  # trainer.* may change
    with pytest.raises(UserError, match=r"objective.beta \(2.0 -> 3.0\)"):
        check_resume_config(saved, compose(["objective.beta=3.0"]))
