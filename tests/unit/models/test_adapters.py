"""``simpo_cli.models.adapters``: config checks, LoRA wrapping (hand-counted trainable parameters),
the disabled-adapter reference, the chunked log-prob path through a ``PeftModel``, merging and
loading a saved adapter, and the reference cache key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel

from simpo_cli.config.schema import AdapterConfig, TinyModelConfig
from simpo_cli import optional
from simpo_cli.errors import UserError
from simpo_cli.models import adapters
from simpo_cli.models.loading import build_tiny_model
from simpo_cli.training.logps import sequence_logps, supports_chunked
from simpo_cli.training.reference import cache_key
from tests.helpers import compose, right_padded_rows


def fake_bitsandbytes(monkeypatch, present: bool):
    """The project's probe answers as if bitsandbytes were (not) installed."""
    real = optional.installed
    monkeypatch.setattr(optional, "installed", lambda n: present if n == "bitsandbytes" else real(n))


def lora(**overrides):
    return OmegaConf.structured(AdapterConfig(name="lora", **overrides))


def batch(vocab: int, seed: int = 0):
    """4 right-padded rows: prompts of 3-5 tokens, responses of 1-7."""
    return right_padded_rows([(3, 7), (5, 1), (4, 4), (3, 3)], vocab, seed)


def perturb_lora(model, seed: int = 1):
    """Give every lora_B a non-zero value (fresh LoRA has B = 0, i.e. no effect)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture
def tiny_base(tiny_tokenizer):
    return build_tiny_model(TinyModelConfig(), tiny_tokenizer)


# ---------------------------------------------------------------------------- config


def test_adapter_groups_compose_with_peft_defaults():
    cfg = compose(["adapter=lora"])
    ad = cfg.adapter
    assert (ad.name, ad.r, ad.lora_alpha, ad.lora_dropout, ad.target_modules, ad.modules_to_save, ad.bias) == \
        ("lora", 8, 8, 0.0, "all-linear", None, "none")
    assert compose([]).adapter.name == "none"  # full fine-tuning stays the default
    paper = compose(["adapter=lora-paper"]).adapter
    assert (paper.r, paper.lora_alpha, paper.lora_dropout, paper.learning_rate_scale) == (64, 128, 0.05, 10.0)
    assert compose(["adapter=lora"], config_name="sft").adapter.name == "lora"
    assert compose(["adapter=qlora"]).adapter.bnb_4bit_quant_type == "nf4"


def test_learning_rate_scale_applies_only_with_an_adapter():
    assert adapters.learning_rate_scale(compose(["adapter=lora-paper"])) == 10.0
    assert adapters.learning_rate_scale(compose(["adapter.learning_rate_scale=10"])) == 1.0  # adapter=none


@pytest.mark.parametrize("override, message", [
    ("adapter.r=0", "adapter.r must be > 0, got 0"),
    ("adapter.r=-4", "adapter.r must be > 0, got -4"),
    ("adapter.lora_alpha=0", "adapter.lora_alpha must be > 0"),
    ("adapter.lora_dropout=1.0", "adapter.lora_dropout must be in [0, 1)"),
    ("adapter.bias=some", "adapter.bias must be one of none, all, lora_only"),
    ("adapter.target_modules=[]", "adapter.target_modules is empty"),
])
def test_bad_lora_settings_are_reported(override, message):
    problems = adapters.adapter_problems(compose(["adapter=lora", override]))
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_merge_under_sharded_training_is_refused():
    problems = adapters.adapter_problems(compose(["adapter=lora", "adapter.merge=true", "distributed=zero3"]))
    assert len(problems) == 1 and problems[0].startswith("adapter.merge=true needs the whole model in one process")
    assert adapters.adapter_problems(compose(["adapter=lora", "adapter.merge=true", "distributed=ddp"])) == []


def test_valid_lora_and_none_have_no_problems():
    assert adapters.adapter_problems(compose(["adapter=lora"])) == []
    assert adapters.adapter_problems(compose(["adapter.r=0"])) == []  # adapter=none: not used


def test_qlora_is_refused_without_bitsandbytes_or_gpu(monkeypatch):
    cfg = compose(["adapter=qlora", "model.name_or_path=some/model"])
    fake_bitsandbytes(monkeypatch, present=False)
    assert adapters.adapter_problems(cfg) == [
        "adapter=qlora needs bitsandbytes (pip install bitsandbytes) and a CUDA GPU; use adapter=lora"]
    with pytest.raises(UserError, match="needs bitsandbytes"):
        adapters.quantization_config(cfg.adapter)
    # bitsandbytes importable, but no GPU
    fake_bitsandbytes(monkeypatch, present=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert adapters.adapter_problems(cfg) == [
        "adapter=qlora needs a CUDA GPU (bitsandbytes 4-bit); none is visible: use adapter=lora"]


def test_qlora_config_path_builds_the_4bit_quantisation(monkeypatch):
    """Where bitsandbytes and a GPU exist (faked here), qlora's settings become the
    BitsAndBytesConfig that load_model passes to from_pretrained; a tiny model is refused."""
    fake_bitsandbytes(monkeypatch, present=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = compose(["adapter=qlora", "model.name_or_path=some/model", "adapter.bnb_4bit_use_double_quant=false"])
    assert adapters.adapter_problems(cfg) == []
    q = adapters.quantization_config(cfg.adapter)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16
    assert q.bnb_4bit_use_double_quant is False
    assert adapters.quantization_config(compose(["adapter=lora"]).adapter) is None
    assert adapters.adapter_problems(compose(["adapter=qlora"])) == [
        "adapter=qlora quantises a pretrained checkpoint: set model.name_or_path"]


# ---------------------------------------------------------------------------- wrapping


def test_wrap_trains_only_lora_weights_hand_counted(tiny_base):
    """Tiny Llama: hidden 64, intermediate 172, 4 heads of 16, 2 KV heads, 2 layers. LoRA adds
    r x (in + out) per linear layer: q 8x128, k 8x96, v 8x96, o 8x128, gate/up/down 8x236 each
    = 9248 per layer, 18496 in all; lm_head is not a target of all-linear."""
    total_before = sum(p.numel() for p in tiny_base.parameters())
    model = adapters.wrap(tiny_base, lora())
    assert isinstance(model, PeftModel)
    counts = adapters.parameter_counts(model)
    assert counts == {"parameters": total_before + 18496, "trainable_parameters": 18496}
    assert all(("lora_A" in n or "lora_B" in n) == p.requires_grad for n, p in model.named_parameters())
    assert not any("lm_head" in n and "lora" in n for n, _ in model.named_parameters())


def test_wrap_with_a_module_list_and_rank(tiny_base):
    model = adapters.wrap(tiny_base, lora(r=4, target_modules=["q_proj", "v_proj"]))
    assert adapters.parameter_counts(model)["trainable_parameters"] == 2 * (4 * 128 + 4 * 96)


def test_adapter_none_leaves_the_model_alone(tiny_base):
    assert adapters.wrap(tiny_base, OmegaConf.structured(AdapterConfig())) is tiny_base
    assert not adapters.has_adapter(tiny_base)


@pytest.mark.parametrize("targets, message", [
    (["q_proj", "qkv_proj"], "no module named 'qkv_proj' in the model"),
    ("attn.*", "the pattern 'attn.*' matches no module"),
])
def test_unknown_target_module_is_one_line(tiny_base, targets, message):
    with pytest.raises(UserError, match=message) as e:
        adapters.wrap(tiny_base, lora(target_modules=targets))
    assert "\n" not in str(e.value) and "q_proj" in str(e.value)  # names what exists
    with pytest.raises(UserError, match="modules_to_save: no module named 'head'"):
        adapters.wrap(tiny_base, lora(modules_to_save=["head"]))


def test_fresh_adapter_computes_the_base_and_disabled_adapter_is_the_base(tiny_base, tiny_tokenizer):
    ids, attn, resp = batch(len(tiny_tokenizer))
    base_logps = sequence_logps(tiny_base, ids, attn, resp, path="plain").logps
    model = adapters.wrap(build_tiny_model(TinyModelConfig(), tiny_tokenizer), lora())
    assert torch.equal(sequence_logps(model, ids, attn, resp, path="plain").logps, base_logps)  # B = 0
    perturb_lora(model)
    trained = sequence_logps(model, ids, attn, resp, path="plain").logps
    assert (trained - base_logps).abs().max() > 1e-3
    with adapters.adapters_disabled(model):
        assert torch.equal(sequence_logps(model, ids, attn, resp, path="plain").logps, base_logps)
    assert torch.equal(sequence_logps(model, ids, attn, resp, path="plain").logps, trained)  # re-enabled


def test_chunked_logps_through_peft_wrapper_match_plain(tiny_base, tiny_tokenizer):
    """The chunked LM-head path reaches the head through the PeftModel: values and LoRA gradients
    agree with the full-logits path to 1e-5."""
    model = adapters.wrap(tiny_base, lora(lora_dropout=0.0))
    perturb_lora(model)
    assert supports_chunked(model)
    ids, attn, resp = batch(len(tiny_tokenizer))
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])

    def run(path):
        model.zero_grad(set_to_none=True)
        out = sequence_logps(model, ids, attn, resp, path=path, chunk_size=5)
        (out.logps * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return out.logps.detach(), grads

    plain, g_plain = run("plain")
    chunked, g_chunked = run("chunked")
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-5)
    assert g_plain.keys() == g_chunked.keys() and len(g_plain) == 28  # 7 layers x 2 blocks x A, B
    for name in g_plain:
        torch.testing.assert_close(g_chunked[name], g_plain[name], rtol=1e-4, atol=1e-5)


def test_lm_head_as_target_falls_back_to_plain(tiny_base):
    """A LoRA on the LM head changes the logits: the chunked path (which uses the head's weight
    alone) must not be taken."""
    model = adapters.wrap(tiny_base, lora(target_modules=["q_proj", "lm_head"]))
    assert not supports_chunked(model)


# ---------------------------------------------------------------------------- save / merge / load


def test_saved_adapter_loads_and_merged_model_matches(tmp_path, tiny_base, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = adapters.wrap(tiny_base, lora())
    perturb_lora(model)
    ids, attn, _ = batch(len(tiny_tokenizer))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=attn).logits
    saved = tmp_path / "model.tmp"
    model.save_pretrained(str(saved))
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {p.name for p in saved.iterdir()}
    assert adapters.is_adapter_dir(saved)
    adapters.save_merged(model, tiny_tokenizer, saved, tmp_path / "adapter")
    assert adapters.is_adapter_dir(tmp_path / "adapter") and not adapters.is_adapter_dir(saved)

    merged = AutoModelForCausalLM.from_pretrained(str(saved)).eval()
    loaded = PeftModel.from_pretrained(build_tiny_model(TinyModelConfig(), tiny_tokenizer), str(tmp_path / "adapter"))
    via_load = adapters.load_merged(build_tiny_model(TinyModelConfig(), tiny_tokenizer), tmp_path / "adapter")
    with torch.no_grad():
        for m in (merged, loaded.eval(), via_load.eval()):
            torch.testing.assert_close(m(input_ids=ids, attention_mask=attn).logits, expected, rtol=0, atol=1e-5)
    assert all(p.requires_grad for p in via_load.parameters())  # trainable like from_pretrained's


def test_adapter_without_base_is_one_line(tmp_path, tiny_base):
    model = adapters.wrap(tiny_base, lora())
    model.save_pretrained(str(tmp_path / "a"))  # tiny base: no base_model_name_or_path
    with pytest.raises(UserError, match="an adapter without its base"):
        adapters.base_model_config(tmp_path / "a", compose([]).model)


# ---------------------------------------------------------------------------- reference cache key


def test_cache_key_names_the_adapter_and_quantisation(tiny_tokenizer):
    def key(overrides):
        return cache_key(compose(overrides), "tiny:abc", tiny_tokenizer, "train", False)

    full, lora_key = key([]), key(["adapter=lora"])
    assert full != lora_key
    assert lora_key == key(["adapter=lora", "adapter.r=64"])  # the base's log-probs do not depend on r
    assert key(["adapter=qlora"]) not in (full, lora_key)
    assert key(["adapter=qlora"]) != key(["adapter=qlora", "adapter.bnb_4bit_quant_type=fp4"])
    assert key(["adapter=lora", "reference.name_or_path=/x"]) == key(["reference.name_or_path=/x"])


def test_unknown_target_module_fails_before_the_weights_load(tmp_path, tiny_base, tiny_tokenizer):
    """A pretrained checkpoint's architecture is checked from its config.json alone: the checkpoint
    here has no weights file, so loading them would fail with another error."""
    from simpo_cli.models.loading import load_model

    tiny_base.save_pretrained(str(tmp_path / "ckpt"))
    weights = list((tmp_path / "ckpt").glob("*.safetensors"))
    assert weights
    for path in weights:
        path.unlink()
    cfg = compose([f"model.name_or_path={tmp_path / 'ckpt'}", "adapter=lora", "adapter.target_modules=[qkv_proj]"])
    with pytest.raises(UserError, match="no module named 'qkv_proj'"):
        load_model(cfg.model, tiny_tokenizer, cfg.adapter)
