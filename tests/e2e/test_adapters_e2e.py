"""LoRA end to end on the tiny model and the bundled data: only adapter weights train, the
reference of DPO/KTO is the base with the adapter disabled (no second model), the saved adapter
and merged model load with peft/transformers and agree, adapter runs feed `simpo eval model=<run>` and
`model.name_or_path=`, `simpo sft adapter=lora` works, bad input is one line with exit 2, and
kill -9 + resume=auto reproduces the loss trace."""

from __future__ import annotations

import json
import math

import pytest
import torch

from simpo_cli.config.schema import TinyModelConfig
from simpo_cli.models import adapters, loading
from tests.helpers import FAST_TRAIN, compose, read_jsonl, run_simpo

FAST = [o for o in FAST_TRAIN if not o.startswith("trainer.max_steps")] + [
    "trainer.max_steps=3", "trainer.evaluate=false", "data.max_samples=8",
    # A large step and no warm-up, so the adapter moves at step 1.
    "hparams.learning_rate=1e-2", "hparams.warmup_ratio=0"]
# Tiny Llama's parameters, and its LoRA's (r 8, all-linear; hand count in the unit test).
TINY_TOTAL, TINY_LORA = 615232, 18496


def train(tmp_path, overrides, name="run"):
    from simpo_cli.stages.train import run_train

    run_train(compose([*FAST, *overrides]), tmp_path / name)
    meta = json.loads((tmp_path / name / "meta.json").read_text())
    losses = [r["loss"] for r in read_jsonl(tmp_path / name / "metrics.jsonl") if "loss" in r]
    return meta, losses


def test_lora_simpo_trains_only_the_adapter(tmp_path, tiny_tokenizer, monkeypatch):
    wrapped = []
    real_wrap = adapters.wrap
    monkeypatch.setattr(adapters, "wrap", lambda *a, **k: wrapped.append(real_wrap(*a, **k)) or wrapped[-1])
    meta, losses = train(tmp_path, ["adapter=lora"])
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert meta["model"]["adapter"] == "lora"
    assert meta["model"]["trainable_parameters"] == TINY_LORA
    assert meta["model"]["parameters"] == TINY_TOTAL + TINY_LORA

    model = wrapped[0]
    fresh = dict(loading.build_tiny_model(TinyModelConfig(), tiny_tokenizer).named_parameters())
    base = {n: p for n, p in model.named_parameters() if "lora_" not in n}
    assert len(base) == len(fresh)
    for name, p in base.items():
        original = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        assert torch.equal(p, fresh[original]), name  # bit-identical after 3 steps at lr 1e-2
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().max() > 0 for p in lora_b)  # started at 0, trained

    # The saved adapter is the trained one and loads with peft.
    from peft import PeftModel

    saved = tmp_path / "run" / "model"
    assert adapters.is_adapter_dir(saved) and (saved / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(loading.build_tiny_model(TinyModelConfig(), tiny_tokenizer), str(saved))
    trained = dict(model.named_parameters())
    for name, p in loaded.named_parameters():
        if "lora_" in name:
            assert torch.equal(p, trained[name]), name


@pytest.mark.parametrize("mode", ["precompute", "live"])
def test_dpo_with_lora_uses_the_disabled_adapter_base_as_reference(tmp_path, mode, monkeypatch):
    """Step 1 (before any update): policy = base → loss = log 2. After an update the policy moves
    and the reference does not, so the loss leaves log 2 (a reference that followed the adapter
    would keep it there). Exactly one model is built: no second reference model."""
    built = []
    real_build = loading.build_tiny_model
    monkeypatch.setattr(loading, "build_tiny_model", lambda *a: built.append(1) or real_build(*a))
    meta, losses = train(tmp_path, ["adapter=lora", "objective=dpo", f"reference.mode={mode}"])
    assert len(built) == 1
    ref = meta["reference"]
    assert ref["mode"] == mode and ref["adapter_disabled"] is True
    # 1e-5, not exact: the policy's log-probs come from the fused head and the reference's from the
    # chunked scoring path, which sum the same token log-probs in another order (fp32 rounding).
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(losses[-1] - math.log(2)) > 1e-4


def test_kto_with_lora_live_reference(tmp_path, monkeypatch):
    """KTO's mismatched rows (z_ref) also score the base with the adapter disabled."""
    built = []
    real_build = loading.build_tiny_model
    monkeypatch.setattr(loading, "build_tiny_model", lambda *a: built.append(1) or real_build(*a))
    meta, losses = train(tmp_path, ["adapter=lora", "objective=kto", "reference.mode=live"])
    assert len(built) == 1 and meta["reference"]["adapter_disabled"] is True
    assert losses[0] == pytest.approx(0.5, abs=1e-6)  # policy = reference: 1 - σ(0) for every example


def test_sft_lora_run_loads_as_model_name_or_path(tmp_path, tiny_tokenizer):
    """In process (the CLI chain below is the slow version): `simpo sft adapter=lora` saves an
    adapter; `model.name_or_path=<run>` loads it onto the run's base, merged, trainable."""
    from peft import PeftModel

    from simpo_cli.stages.sft import run_sft

    run_sft(compose(["adapter=lora", "trainer.max_steps=1", "data.max_samples=8", "data.eval_size=2",
                     "hparams.max_length=64", "trainer.progress_bar=false", "trainer.evaluate=false",
                     "hparams.learning_rate=1e-2", "hparams.warmup_ratio=0"], config_name="sft"), tmp_path / "sft")
    meta = json.loads((tmp_path / "sft" / "meta.json").read_text())
    assert meta["model"]["trainable_parameters"] == TINY_LORA
    cfg = compose([f"model.name_or_path={tmp_path / 'sft'}"])
    assert loading.run_model_dir(cfg.model.name_or_path) == tmp_path / "sft" / "model"
    loaded = loading.load_model(cfg.model, loading.load_tokenizer(cfg.model))
    assert not isinstance(loaded, PeftModel) and all(p.requires_grad for p in loaded.parameters())
    expected = PeftModel.from_pretrained(loading.build_tiny_model(TinyModelConfig(), tiny_tokenizer),
                                         str(tmp_path / "sft" / "model"))
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.no_grad():
        got, want = loaded(input_ids=ids).logits, expected(input_ids=ids).logits
        base = loading.build_tiny_model(TinyModelConfig(), tiny_tokenizer)(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (got - base).abs().max() > 1e-4  # the adapter trained and is applied
    assert loading.model_fingerprint(cfg.model, loaded).startswith("adapter:")


@pytest.mark.slow  # four CLI runs, ~75 s on 2 busy cores
def test_adapter_runs_merge_load_and_chain_through_the_cli(tmp_path, tiny_tokenizer):
    """sft adapter=lora → train from that run (adapter=lora, merge=true) → eval model=<run>. The merged
    model's logits equal the adapter model's to 1e-5."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sft = tmp_path / "sft"
    out = run_simpo(["sft", "adapter=lora", "trainer.max_steps=2", "data.max_samples=12",
                     "hparams.max_length=128", "trainer.progress_bar=false", "hparams.learning_rate=1e-2",
                     f"run_dir={sft}"], tmp_path)
    assert adapters.is_adapter_dir(sft / "model") and (sft / "model" / "tokenizer.json").is_file()
    assert "18,496 trainable parameters" in out.stdout + out.stderr
    assert json.loads((sft / "meta.json").read_text())["model"]["trainable_parameters"] == TINY_LORA

    run = tmp_path / "dpo"
    run_simpo(["train", f"model.name_or_path={sft}", "adapter=lora", "adapter.merge=true", "objective=dpo",
               *FAST_TRAIN, "trainer.evaluate=false", "hparams.learning_rate=1e-2", f"run_dir={run}"], tmp_path)
    assert (run / "model" / "config.json").is_file() and adapters.is_adapter_dir(run / "adapter")

    # The adapter's base is the SFT run: its adapter merged onto the tiny model.
    base_cfg = compose([f"model.name_or_path={sft}"]).model
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(loading.load_model(base_cfg, tiny_tokenizer), str(run / "adapter"))
        merged = AutoModelForCausalLM.from_pretrained(str(run / "model"))
        torch.testing.assert_close(merged(input_ids=ids).logits, peft_model(input_ids=ids).logits,
                                   rtol=0, atol=1e-5)
        start = loading.load_model(base_cfg, tiny_tokenizer)
        assert (start(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max() > 1e-4  # it trained

    run_simpo(["eval", f"model={run}", "eval.benchmarks=[]"], tmp_path)
    summary = json.loads(next(run.rglob("eval.json")).read_text())
    assert summary["model"] == str(run / "model")
    assert summary["pairs"]["n_pairs"] > 0 and summary["pairs"]["kl_chosen"]["per_token"] > 0


@pytest.mark.parametrize("override, line", [
    ("adapter.r=0", "simpo: error: invalid config: adapter.r must be > 0, got 0"),
    ("adapter.target_modules=[qkv_proj]", "simpo: error: adapter.target_modules: no module named 'qkv_proj'"),
])
def test_bad_lora_input_is_one_line_exit_2(tmp_path, override, line):
    out = run_simpo(["train", "adapter=lora", override, *FAST_TRAIN], tmp_path, check=False)
    assert out.returncode == 2, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    assert [ln for ln in text.splitlines() if ln.startswith("simpo: error:")] == [text.strip().splitlines()[-1]]
    assert text.strip().splitlines()[-1].startswith(line)
    assert not list((tmp_path / "outputs").rglob("meta.json"))  # no half-written run left


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal")
def test_qlora_on_cpu_is_refused_before_loading_anything(tmp_path):
    out = run_simpo(["train", "adapter=qlora", "model.name_or_path=org/some-8b-model", *FAST_TRAIN],
                    tmp_path, check=False)
    assert out.returncode == 2
    last = (out.stdout + out.stderr).strip().splitlines()[-1]
    assert last.startswith("simpo: error: invalid config: adapter=qlora needs ") and "adapter=lora" in last
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("meta.json"))


@pytest.mark.slow  # three training processes, ~45 s on 2 cores
def test_lora_sigkill_then_resume_auto_matches_uninterrupted_run(tmp_path):
    from tests.e2e.reliability.procs import RUN, sigkill_then_resume

    # lora_dropout > 0: the resumed run must also restore the RNG the adapter's dropout draws from.
    args = [*RUN, "trainer.save_steps=2", "adapter=lora", "adapter.lora_dropout=0.1", "hparams.learning_rate=1e-3"]

    def adapter_checkpointed(killed):
        assert (killed / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors").is_file()

    sigkill_then_resume(args, tmp_path, adapter_checkpointed)


def test_lora_paper_scales_the_presets_learning_rate(tmp_path):
    from simpo_cli.run.rundir import RunDir
    from simpo_cli.stages.train import training_arguments

    cfg = compose(["hparams=llama3-instruct", "adapter=lora-paper"])
    assert training_arguments(cfg, RunDir(tmp_path / "run")).learning_rate == pytest.approx(1e-5)  # 10 x 1e-6
    cfg = compose(["hparams=llama3-instruct"])
    assert training_arguments(cfg, RunDir(tmp_path / "run")).learning_rate == pytest.approx(1e-6)


def test_resume_with_another_adapter_is_refused(tmp_path):
    from omegaconf import OmegaConf

    from simpo_cli.errors import UserError
    from simpo_cli.training.reliability import check_resume_config

    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(compose(["adapter=lora"]), resolve=True))
    check_resume_config(tmp_path / "config.yaml", compose(["adapter=lora", "trainer.max_steps=9"]))
    with pytest.raises(UserError, match=r"adapter.r \(8 -> 16\)"):
        check_resume_config(tmp_path / "config.yaml", compose(["adapter=lora", "adapter.r=16"]))
