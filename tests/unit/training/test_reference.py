"""The reference model: log-probs precomputed once before training and cached on disk, the live
option, another model as reference, KTO's mismatched rows and unpaired data. In-process runs of
``run_train`` on the tiny model and the bundled data (the CLI itself is covered in
test_baselines_e2e.py)."""

import json
import math

import pytest
import torch

from tests.helpers import FAST_TRAIN, compose, read_jsonl

FAST = [o for o in FAST_TRAIN if not o.startswith("trainer.max_steps")] + [
    "trainer.max_steps=1", "trainer.save_model=false", "trainer.evaluate=false", "data.max_samples=8"]


def train(tmp_path, overrides, name="run"):
    from simpo_cli.stages.train import run_train

    cfg = compose([*FAST, *overrides])
    run_train(cfg, tmp_path / name)
    meta = json.loads((tmp_path / name / "meta.json").read_text())
    losses = [r["loss"] for r in read_jsonl(tmp_path / name / "metrics.jsonl") if "loss" in r]
    return meta, losses


def test_dpo_step_zero_loss_is_log2_and_cache_is_reused(tmp_path):
    """Policy = reference (the starting policy) → every log-ratio is 0 → the first loss, computed
    before any update, is −log σ(0) = log 2 = 0.693147. The second run finds the cached reference
    log-probs (same model, data and tokenisation) and does not score again."""
    meta, losses = train(tmp_path, ["objective=dpo"], "first")
    ref = meta["reference"]
    assert ref["mode"] == "precompute" and ref["name_or_path"] is None
    assert ref["train"]["cache_hit"] is False and ref["fingerprint"].startswith("tiny:")
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    cached = tmp_path / "cache" / "reference" / ref["train"]["key"] / "logps.json"
    columns = json.loads(cached.read_text())["columns"]
    assert len(columns["ref_chosen_logps"]) == 8 and all(v < 0 for v in columns["ref_chosen_logps"])

    meta2, losses2 = train(tmp_path, ["objective=dpo"], "second")
    assert meta2["reference"]["train"] == {**ref["train"], "cache_hit": True}
    assert losses2[0] == pytest.approx(losses[0], abs=1e-6)


def test_cache_key_follows_model_data_and_tokenisation(tiny_tokenizer):
    """The key changes with the reference fingerprint, the data and max_length; not otherwise."""
    from simpo_cli.training.reference import cache_key

    cfg = compose(["objective=dpo"])
    base = cache_key(cfg, "tiny:aaa", tiny_tokenizer, "train", False)
    assert base == cache_key(compose(["objective=dpo", "hparams.learning_rate=1e-5"]), "tiny:aaa",
                             tiny_tokenizer, "train", False)
    assert base != cache_key(cfg, "tiny:bbb", tiny_tokenizer, "train", False)
    assert base != cache_key(compose(["objective=dpo", "hparams.max_length=64"]), "tiny:aaa",
                             tiny_tokenizer, "train", False)
    assert base != cache_key(compose(["objective=dpo", "data.max_samples=3"]), "tiny:aaa",
                             tiny_tokenizer, "train", False)
    assert base != cache_key(cfg, "tiny:aaa", tiny_tokenizer, "train", True)


@pytest.fixture
def other_reference(tmp_path, tiny_tokenizer):
    """A different tiny model (seed 1) saved as a local directory, to serve as the reference."""
    from simpo_cli.config.schema import TinyModelConfig
    from simpo_cli.models.loading import build_tiny_model

    path = tmp_path / "other-ref"
    build_tiny_model(TinyModelConfig(seed=1), tiny_tokenizer).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_live_reference_matches_precomputed(tmp_path, other_reference, objective):
    """With another model as reference (``reference.name_or_path``), the log-ratios are not 0, so
    the first loss is not log 2 (DPO) / 0.5 (KTO); keeping that model live and scoring each batch
    gives the same first loss as scoring every pair once before training."""
    ref = [f"objective={objective}", f"reference.name_or_path={other_reference}"]
    meta_pre, pre = train(tmp_path, ref, "pre")
    meta_live, live = train(tmp_path, [*ref, "reference.mode=live"], "live")
    assert meta_pre["reference"]["fingerprint"].startswith("local:")
    assert meta_live["reference"]["mode"] == "live" and "train" not in meta_live["reference"]
    assert abs(pre[0] - (math.log(2) if objective == "dpo" else 0.5)) > 1e-3
    assert live[0] == pytest.approx(pre[0], abs=1e-5)


def test_reference_free_objectives_load_no_reference(tmp_path):
    meta, _ = train(tmp_path, ["objective=cpo"])
    assert "reference" not in meta


def test_kto_trains_on_the_bundled_unpaired_records(tmp_path):
    """kto_en_demo.json: ``messages`` + ``label``. Each record is one example with one side empty;
    at step 0 (policy = reference, z_ref = 0) every record's loss is 1 − σ(0) = 0.5."""
    meta, losses = train(tmp_path, ["objective=kto", "data=kto-demo"])
    assert meta["status"] == "completed" and meta["data"]["kept"] == 8
    assert losses[0] == pytest.approx(0.5, abs=1e-5)


def test_unpaired_data_with_a_pairwise_objective_is_a_user_error(tmp_path):
    from simpo_cli.errors import UserError

    with pytest.raises(UserError, match=r"unpaired records .* objective=kto; objective 'dpo' needs"):
        train(tmp_path, ["objective=dpo", "data=kto-demo"])


def test_unpaired_records_prompt_completion_label(tmp_path, tiny_tokenizer):
    """TRL's unpaired layout: one side per example, by label; a bad label names record and field."""
    from simpo_cli.data.unpaired import build_unpaired_dataset, is_unpaired
    from simpo_cli.errors import DataError

    recs = [{"prompt": "Say hi.", "completion": " Hi!", "label": True},
            {"prompt": [{"role": "user", "content": "Say bye."}], "completion": " No.", "label": False}]
    path = tmp_path / "unpaired.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs))
    cfg = compose(["objective=kto", f"data.path={path}", "data.format=auto"])
    assert is_unpaired(cfg.data)
    ds, stats = build_unpaired_dataset(cfg.data, tiny_tokenizer, cfg.hparams, str(tmp_path / "c"))
    assert stats.kept == 2
    assert ds[0]["chosen_input_ids"] and ds[0]["rejected_input_ids"] == []
    assert ds[1]["chosen_input_ids"] == [] and ds[1]["rejected_input_ids"]
    path.write_text(json.dumps({"prompt": "x", "completion": "y", "label": "yes"}))
    with pytest.raises(DataError, match="label"):
        build_unpaired_dataset(cfg.data, tiny_tokenizer, cfg.hparams, None)


def test_mismatched_rows_rotate_responses(tiny_tokenizer):
    """Example i is scored with the response of example i+1 (mod N), for KTO's z_ref; the
    collator builds prompt_i + that response with only the response masked in."""
    import datasets

    from simpo_cli.training.reference import MismatchedCollator, add_mismatched_responses

    ds = datasets.Dataset.from_dict({"prompt_input_ids": [[1, 2], [3]], "chosen_input_ids": [[10], []],
                                     "rejected_input_ids": [[20], [30, 31]], "index": [0, 1]})
    ds = add_mismatched_responses(ds)
    assert ds["kl_response_input_ids"] == [[30, 31], [10]]
    batch = MismatchedCollator(0)([ds[0], ds[1]])
    assert batch["kl_input_ids"].tolist() == [[1, 2, 30, 31], [3, 10, 0, 0]]
    assert batch["kl_response_mask"].tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]


def test_precompute_matches_a_direct_forward(tiny_model, tiny_tokenizer):
    """The cached numbers are exactly ``sequence_logps`` of each pair scored on its own."""
    import datasets

    from simpo_cli.data.preference import PreferenceCollator
    from simpo_cli.training.logps import sequence_logps
    from simpo_cli.training.reference import compute_reference_logps

    ds = datasets.Dataset.from_dict({"prompt_input_ids": [[1, 5, 6], [1, 7]], "chosen_input_ids": [[8, 9], [10]],
                                     "rejected_input_ids": [[11], [12, 13, 14]], "index": [0, 1]})
    col = PreferenceCollator(tiny_tokenizer.pad_token_id)
    out = compute_reference_logps(tiny_model, ds, col, batch_size=2, device=torch.device("cpu"))
    for i in range(2):
        b = col([ds[i]])
        with torch.no_grad():
            lp = sequence_logps(tiny_model, b["input_ids"], b["attention_mask"], b["response_mask"]).logps
        assert out["ref_chosen_logps"][i] == pytest.approx(lp[0].item(), abs=1e-5)
        assert out["ref_rejected_logps"][i] == pytest.approx(lp[1].item(), abs=1e-5)


def test_unknown_reference_mode_is_a_config_error():
    from simpo_cli.errors import ConfigError
    from simpo_cli.config.checks import resolve_objective, validate_train

    cfg = compose(["objective=dpo", "reference.mode=cached"])
    resolve_objective(cfg)
    with pytest.raises(ConfigError, match="reference.mode must be one of precompute, live, got 'cached'"):
        validate_train(cfg)


def test_reference_fingerprint_changes_when_a_local_checkpoint_is_rewritten(other_reference, tiny_model):
    """Same file names and sizes (a retrained checkpoint in the same directory) → new key."""
    import os

    from omegaconf import OmegaConf

    from simpo_cli.training.reference import reference_fingerprint

    ref_cfg = OmegaConf.create({"name_or_path": str(other_reference), "tiny": None})
    before = reference_fingerprint(ref_cfg, tiny_model)
    assert before.startswith("local:") and before == reference_fingerprint(ref_cfg, tiny_model)
    weights = next(other_reference.glob("*.safetensors"))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert reference_fingerprint(ref_cfg, tiny_model) != before


def test_reference_with_another_vocabulary_is_a_user_error(tmp_path, tiny_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    from simpo_cli.errors import UserError

    path = tmp_path / "small-vocab"
    config = AutoConfig.for_model("llama", vocab_size=100, hidden_size=16, intermediate_size=32,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    with pytest.raises(UserError, match="vocabulary size differs"):
        train(tmp_path, ["objective=dpo", f"reference.name_or_path={path}"])
