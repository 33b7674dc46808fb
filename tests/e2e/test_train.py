"""The real CLI, end to end, on the tiny model and the bundled pairs."""

import json

import pytest
import torch

from tests.helpers import FAST_TRAIN, read_jsonl, run_dirs, run_simpo

TRL_METRICS = ("loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected",
               "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected",
               "logits/chosen", "logits/rejected", "tokens_per_second")


def test_train_writes_a_complete_run_directory(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    proc = run_simpo(["train", *FAST_TRAIN, "paths.output_root=out"], tmp_path)
    (run,) = run_dirs(tmp_path / "out")
    assert "run directory" in proc.stdout and str(run.name) in proc.stdout
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["steps"] == 2 and meta["seed"] == 42
    assert meta["data"]["fingerprint"].startswith("sha256:") and meta["model"]["fingerprint"].startswith("tiny:")
    assert meta["data"]["kept"] == 16 and meta["ended"] and meta["versions"]["torch"]
    policy = meta["model_source"]["policy"]  # resolved once, recorded; SimPO has no reference
    assert policy["kind"] == "tiny" and policy["location"] is None and policy["tokenizer"].endswith("tiny-tokenizer")
    assert list(meta["model_source"]) == ["policy"]
    assert "beta: 2.0" in (run / "config.yaml").read_text()
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert len(records) == 2 and all(k in records[0] for k in TRL_METRICS)
    trained = AutoModelForCausalLM.from_pretrained(run / "model")
    AutoTokenizer.from_pretrained(run / "model")
    changed = [not torch.equal(p, q) for p, q in zip(tiny_model.state_dict().values(), trained.state_dict().values())]
    assert all(changed), "every parameter should have moved after two steps"


@pytest.mark.slow  # grids run fast in test_sweeps (a grid that survives a failed job) and test_train_baselines
def test_multirun_runs_one_job_per_grid_point(tmp_path):
    run_simpo(["train", "-m", "objective.beta=2.0,2.5", "objective.gamma=0.5,1.0", *FAST_TRAIN,
               "trainer.evaluate=false", "trainer.save_model=false", "paths.output_root=out"], tmp_path)
    runs = run_dirs(tmp_path / "out")
    assert len(runs) == 4
    grid = set()
    for run in runs:
        text = (run / "config.yaml").read_text()
        beta = next(l for l in text.splitlines() if l.strip().startswith("beta:")).split()[-1]
        gamma = next(l for l in text.splitlines() if l.strip().startswith("gamma:")).split()[-1]
        grid.add((beta, gamma))
        assert json.loads((run / "meta.json").read_text())["status"] == "completed"
    assert grid == {("2.0", "0.5"), ("2.0", "1.0"), ("2.5", "0.5"), ("2.5", "1.0")}


def test_hub_loading_code_on_a_local_directory(tmp_path, tiny_model, tiny_tokenizer):
    """A real-model preset pointed at a local copy goes through from_pretrained, not the tiny builder;
    the wandb logger runs offline beside metrics.jsonl."""
    local = tmp_path / "local-llama"
    tiny_model.save_pretrained(local)
    tiny_tokenizer.save_pretrained(local)
    # A local copy keeps the llama3-instruct recipe (bf16 autocast, checkpointing); its Hub data set
    # and 8B-scale batch are replaced by the bundled pairs and the CPU recipe.
    run_simpo(["train", "model=llama3-instruct", f"model.name_or_path={local}", "model.dtype=float32",
               "model.attn_implementation=eager", "data=demo-prefs", "hparams=default", *FAST_TRAIN,
               "trainer.evaluate=false",
               "logger=wandb", "paths.output_root=out"], tmp_path)
    (run,) = run_dirs(tmp_path / "out")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["model"]["fingerprint"].startswith("local:")
    policy = meta["model_source"]["policy"]
    assert (policy["kind"], policy["location"], policy["tokenizer"]) == ("local", str(local), str(local))
    assert list((run / "wandb").glob("offline-run-*")), "wandb should have logged an offline run"


def test_simpo_learns_the_pairs(tmp_path):
    """A short run raises reward accuracy on the training pairs (the demo's claim, scaled down).
    ``data.eval_size=0``: the metrics are on the training pairs themselves (memorisation), not on
    the default carved held-out pairs (2 of 32 here, too few to show a trend)."""
    proc = run_simpo(["train", "data.max_samples=32", "data.eval_size=0", "trainer.max_steps=16",
                      "hparams.max_length=192", "hparams.max_prompt_length=96", "hparams.per_device_train_batch_size=8",
                      "trainer.progress_bar=false", "trainer.save_model=false", "paths.output_root=out"], tmp_path)
    (run,) = run_dirs(tmp_path / "out")
    meta = json.loads((run / "meta.json").read_text())
    before, after = meta["pairs_before"], meta["pairs_after"]
    assert after["rewards/accuracies"] > before["rewards/accuracies"]
    assert after["rewards/margins"] > before["rewards/margins"] and after["loss"] < before["loss"]
    # A clean run: the chosen log-likelihood rose, so no finding is printed or recorded (diagnostics).
    diag = meta["diagnostics"]
    assert diag["findings"] == [] and "findings" not in proc.stdout
    assert diag["pairs"]["chosen_change"] > 0 and diag["pairs"]["unit"] == "nats/token"
    row = next(line for line in proc.stdout.splitlines() if "log-likelihood chosen" in line)
    assert row.rstrip(" │").endswith("nats/token") and " -> " in row
