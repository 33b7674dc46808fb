"""The fused LM head (``simpo_cli.training.fused_head``): loss, log-probs and gradients equal to the
plain full-logits computation (to 1e-5) on tiny Llama, Mistral, Qwen2 and Gemma-2 (soft-capping),
for every registered objective, under a PEFT LoRA wrapper, and under bf16 / CPU autocast; every
objective really decomposes over pairs; the trainer uses the fused head only when training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from simpo_cli.config.schema import CONF_DIR
from simpo_cli.objectives import OBJECTIVES, PreferenceLogps, get_objective
from simpo_cli.objectives.wpo import with_wpo
from simpo_cli.training.fused_head import (
    fused_head_loss,
    fused_preference_loss,
    pair_logps,
    supports_fused,
)
from simpo_cli.training.logps import sequence_logps
from tests.helpers import right_padded_rows, tiny_causal_lm

VOCAB = 97
ARCHS = ["llama", "mistral", "qwen2", "gemma2"]


def every_term_on(name: str) -> dict:
    """The keyword arguments of objective ``name`` (``OBJECTIVES``) from its YAML, with every knob
    that is 0 there set to 0.1, so that every term of the loss (an SFT term, label smoothing, ...)
    matters in the comparisons below."""
    spec = get_objective(name)
    values = {**OmegaConf.to_container(OmegaConf.structured(spec.params)),
              **{k: v for k, v in OmegaConf.to_container(OmegaConf.load(CONF_DIR / "objective" / f"{name}.yaml")).items()
                 if k != "defaults"}}
    values = {k: 0.1 if isinstance(v, float) and v == 0.0 else v for k, v in values.items()}
    return spec.kwargs(values)


KWARGS = {name: every_term_on(name) for name in OBJECTIVES}


def tiny(arch: str, dtype=torch.float32, **extra):
    return tiny_causal_lm(arch, VOCAB, dtype, **extra)


def pair_batch(seed: int = 0, shapes=((3, 7), (5, 2), (4, 4), (3, 5), (2, 6), (4, 1))):
    """``[2B, L]`` right-padded rows, chosen rows first: (prompt, response) lengths per row."""
    ids, attn, resp = right_padded_rows(shapes, VOCAB, seed)
    return dict(input_ids=ids, attention_mask=attn, response_mask=resp)


def reference_filler(spec, b: int, seed: int = 1):
    """Fixed reference log-probs (and KTO's mismatched rows) for objectives that need them."""
    g = torch.Generator().manual_seed(seed)
    ref = -10 * torch.rand(2 * b, generator=g) - 5
    kl, ref_kl = -10 * torch.rand(3, generator=g) - 5, -10 * torch.rand(3, generator=g) - 8

    def fill(logps: PreferenceLogps) -> None:
        if spec.needs_reference:
            logps.ref_chosen, logps.ref_rejected = ref[:b], ref[b:]
        if spec.needs_mismatched:
            logps.kl, logps.ref_kl = kl, ref_kl

    return fill


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def plain_loss(model, inputs, spec, kwargs, fill):
    """Reference: full logits (``path="plain"``) and the objective on the whole batch."""
    out = sequence_logps(model, *(inputs[k] for k in ("input_ids", "attention_mask", "response_mask")),
                         path="plain")
    b = inputs["input_ids"].shape[0] // 2
    logps = PreferenceLogps(out.logps[:b], out.logps[b:], out.lengths[:b], out.lengths[b:])
    fill(logps)
    return spec.fn(logps, **kwargs).losses.mean(), out


def assert_same(fused_grads, plain_grads, atol=1e-5):
    """Equal to ``atol`` relative to each gradient's largest entry (at least 1): float32 rounding
    of gradients of size ~10 (IPO's squared loss) alone is ~1e-6."""
    assert fused_grads.keys() == plain_grads.keys()
    for name, g in plain_grads.items():
        tol = atol * max(1.0, float(g.abs().max()))
        torch.testing.assert_close(fused_grads[name], g, atol=tol, rtol=0, msg=name)


def compare(model, objective="simpo", inputs=None, atol=1e-5):
    spec = get_objective(objective)
    inputs = inputs or pair_batch()
    b = inputs["input_ids"].shape[0] // 2
    fill = reference_filler(spec, b)
    loss, logps, result, logits_mean = fused_preference_loss(model, inputs, spec, KWARGS[objective], fill)
    loss.backward()
    fused = grads(model)
    expected, out = plain_loss(model, inputs, spec, KWARGS[objective], fill)
    expected.backward()
    plain = grads(model)
    tol = atol * max(1.0, float(expected.abs()))  # float32 rounding scales with the loss (IPO's ~300)
    torch.testing.assert_close(loss, expected.detach(), atol=tol, rtol=0)
    torch.testing.assert_close(result.losses.mean(), expected.detach(), atol=tol, rtol=0)
    torch.testing.assert_close(torch.cat([logps.chosen, logps.rejected]), out.logps.detach(), atol=atol, rtol=0)
    torch.testing.assert_close(logits_mean, out.logits_mean, atol=atol, rtol=0)
    assert_same(fused, plain, atol)
    return fused


# ---- the core, on raw tensors --------------------------------------------------------------------

def _raw(softcap, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 0, 3, 7, 1, 4])  # a zero-length row: KTO's unpaired records
    t, h, v = int(lengths.sum()), 6, 11
    hidden = torch.randn(t, h, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    targets = torch.randint(0, v, (t,), generator=g)
    return hidden, weight, b, targets, lengths


@pytest.mark.parametrize("softcap", [None, 1.5])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [1, 2, 100])
def test_core_matches_autograd_on_full_logits(softcap, bias, chunk):
    """Groups of 1, 2 and 3 rows, a nonlinear group loss, chunks smaller than, straddling and
    larger than the rows: loss, log-probs and all three gradients equal plain autograd."""
    hidden, weight, b, targets, lengths = _raw(softcap, bias)
    groups = [(0, 3), (1,), (2, 4, 5)]
    scale = torch.tensor([0.7, -1.3, 0.4, 2.0, -0.5, 1.1], dtype=torch.float64)

    def group_loss(g, x):
        return -F.logsigmoid(scale[list(groups[g])] @ x / 3) + 0.1 * x.square().sum() / 50

    out = fused_head_loss(hidden, weight, b, targets, lengths, groups, group_loss, chunk_size=chunk,
                          softcap=softcap)
    (2.5 * out.loss).backward()  # the backward scales by the incoming gradient
    fused = [p.grad.clone() for p in (hidden, weight, b) if p is not None]
    for p in (hidden, weight, b):
        if p is not None:
            p.grad = None
    logits = F.linear(hidden, weight, b)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    token = logits.log_softmax(1).gather(1, targets[:, None])[:, 0]
    rows = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    seq = torch.zeros(len(lengths), dtype=torch.float64).index_add(0, rows, token)
    expected = sum(group_loss(g, seq[list(rows_)]) for g, rows_ in enumerate(groups))
    (2.5 * expected).backward()
    torch.testing.assert_close(out.loss, expected.detach())
    torch.testing.assert_close(out.logps, seq.detach())
    means = torch.zeros(len(lengths), dtype=torch.float64).index_add(0, rows, logits.detach().mean(1))
    torch.testing.assert_close(out.logits_mean, means / lengths.clamp(min=1))
    for got, want in zip(fused, [p.grad for p in (hidden, weight, b) if p is not None]):
        torch.testing.assert_close(got, want)


def test_core_frozen_head_returns_no_weight_gradient():
    """A frozen head (LoRA without the head among its targets) gets no gradient and the hidden
    states still get the full one."""
    hidden, weight, _, targets, lengths = _raw(None, False)
    weight.requires_grad_(False)
    out = fused_head_loss(hidden, weight, None, targets, lengths, [(0, 3), (1, 4), (2, 5)],
                          lambda g, x: x.sum() * (g + 1))
    out.loss.backward()
    assert weight.grad is None
    fused = hidden.grad.clone()
    hidden.grad = None
    token = F.linear(hidden, weight).log_softmax(1).gather(1, targets[:, None])[:, 0]
    rows = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    (token * torch.tensor([1.0, 2, 3, 1, 2, 3], dtype=torch.float64)[rows]).sum().backward()
    torch.testing.assert_close(fused, hidden.grad)


# ---- objectives decompose over pairs ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_decomposes_over_pairs(name):
    """``pairwise`` holds for every registered objective: each pair's loss (and its gradient wrt
    the pair's log-probs) evaluated alone equals that pair's entry of the batch evaluation, with
    unpaired records (one side empty) in the batch."""
    spec = get_objective(name)
    assert spec.pairwise
    g = torch.Generator().manual_seed(0)
    b = 5
    chosen = (-20 * torch.rand(b, generator=g, dtype=torch.float64)).requires_grad_()
    rejected = (-20 * torch.rand(b, generator=g, dtype=torch.float64)).requires_grad_()
    lengths_w = torch.tensor([4, 7, 1, 3, 0]) if spec.accepts_unpaired else torch.tensor([4, 7, 1, 3, 2])
    lengths_l = torch.tensor([5, 2, 6, 0, 3]) if spec.accepts_unpaired else torch.tensor([5, 2, 6, 1, 3])
    logps = PreferenceLogps(chosen, rejected, lengths_w, lengths_l)
    reference_filler(spec, b)(logps)
    batch = spec.fn(logps, **KWARGS[name]).losses
    batch_grad = torch.autograd.grad(batch.sum(), (chosen, rejected))
    for i in range(b):
        x = torch.stack([chosen[i], rejected[i]]).detach().requires_grad_()
        one = spec.fn(pair_logps(logps, i, x[:1], x[1:]), **KWARGS[name]).losses
        assert one.shape == (1,)
        torch.testing.assert_close(one[0], batch[i].detach())
        (grad,) = torch.autograd.grad(one.sum(), x)
        torch.testing.assert_close(grad, torch.stack([batch_grad[0][i], batch_grad[1][i]]))


def test_pair_logps_rejects_unknown_per_pair_fields():
    @dataclasses.dataclass
    class Extended(PreferenceLogps):
        margin: torch.Tensor | None = None

    logps = Extended(torch.zeros(2), torch.zeros(2), torch.ones(2), torch.ones(2), margin=torch.ones(2))
    with pytest.raises(ValueError, match="margin"):
        pair_logps(logps, 0, torch.zeros(1), torch.zeros(1))


# ---- whole models -------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_fused_matches_full_logits_per_architecture(arch):
    model = tiny(arch)
    assert supports_fused(model)
    compare(model, "simpo")


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_fused_matches_full_logits_per_objective(name):
    compare(tiny("llama"), name)


def test_fused_handles_unpaired_records_and_multiple_chunks():
    """KTO unpaired records (an empty side) and a chunk smaller than every row."""
    inputs = pair_batch(shapes=((3, 4), (2, 5), (4, 0), (5, 3)))
    inputs["response_mask"][2] = 0
    spec = get_objective("kto")
    model = tiny("llama")
    fill = reference_filler(spec, 2)
    loss, *_ = fused_preference_loss(model, inputs, spec, KWARGS["kto"], fill)
    # chunk 2 with rows of 3-5 tokens: several chunks per row, a partial last one.
    loss2, *_ = fused_preference_loss(model, inputs, spec, KWARGS["kto"], fill, chunk_size=2)
    loss2.backward()
    fused = grads(model)
    expected, _ = plain_loss(model, inputs, spec, KWARGS["kto"], fill)
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(loss2.detach(), expected.detach(), atol=1e-5, rtol=0)
    assert_same(fused, grads(model))


def test_fused_matches_full_logits_padding_free():
    model = tiny("qwen2")
    spec = get_objective("cpo")
    inputs = pair_batch()
    fill = reference_filler(spec, 3)
    loss, *_ = fused_preference_loss(model, inputs, spec, KWARGS["cpo"], fill, padding_free=True)
    loss.backward()
    fused = grads(model)
    expected, _ = plain_loss(model, inputs, spec, KWARGS["cpo"], fill)
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach(), atol=1e-5, rtol=0)
    assert_same(fused, grads(model))


def test_fused_under_peft_lora():
    """LoRA adapters on the attention projections, the head frozen: the adapters' gradients match
    the full-logits path and the head gets none."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("llama"), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
    assert supports_fused(model)
    fused = compare(model, "simpo")
    assert fused and all("lora_" in name for name in fused)


def test_fused_bf16_model_and_cpu_autocast():
    """A bf16 model, and an fp32 model under CPU bf16 autocast: the fused path runs, its loss and
    gradients are finite and close to the full-logits path's at bf16 precision."""
    for model, autocast in ((tiny("llama", torch.bfloat16), False), (tiny("gemma2"), True)):
        spec, inputs = get_objective("simpo"), pair_batch()
        fill = reference_filler(spec, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, *_ = fused_preference_loss(model, inputs, spec, KWARGS["simpo"], fill)
        loss.backward()
        fused = grads(model)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            expected, _ = plain_loss(model, inputs, spec, KWARGS["simpo"], fill)
        expected.backward()
        plain = grads(model)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        torch.testing.assert_close(loss.detach(), expected.detach(), atol=2e-2, rtol=2e-2)
        for name, g in plain.items():
            assert fused[name].dtype == g.dtype and torch.isfinite(fused[name]).all(), name
            scale = g.float().abs().max().clamp(min=1e-3)
            assert (fused[name].float() - g.float()).abs().max() <= 0.05 * scale, name


def test_accumulator_budget_falls_back_unless_the_head_is_frozen(monkeypatch):
    import simpo_cli.training.fused_head as fused_head

    model = tiny("llama")
    monkeypatch.setattr(fused_head, "FUSED_ACCUMULATOR_BYTES", 2 * VOCAB * 32 * 4 - 1)
    assert not supports_fused(model)  # two [V, H] float32 accumulators do not fit
    model.lm_head.weight.requires_grad_(False)
    assert supports_fused(model)  # a frozen head needs no accumulators


def test_unsupported_heads_are_not_fused():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    assert not supports_fused(gpt2)
    with pytest.raises(ValueError, match="pairs"):
        fused_preference_loss(tiny("llama"), pair_batch(),
                              dataclasses.replace(get_objective("simpo"), pairwise=False), KWARGS["simpo"],
                              lambda logps: None)


# ---- the trainer ------------------------------------------------------------------------------

def _trainer(tmp_path, model, logps_path="auto", objective=None):
    from transformers import TrainingArguments

    from simpo_cli.training.trainer import PreferenceTrainer

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, per_device_train_batch_size=3)
    return PreferenceTrainer(model=model, args=args, objective=objective or get_objective("simpo"),
                             objective_kwargs=KWARGS["simpo"], logps_path=logps_path, padding_free=False)


def test_trainer_fuses_only_when_training(tmp_path, monkeypatch):
    import simpo_cli.training.trainer as trainer_module

    model = tiny("mistral")
    inputs = pair_batch()
    calls = []
    monkeypatch.setattr(trainer_module, "fused_preference_loss",
                        lambda *a, **k: calls.append(1) or fused_preference_loss(*a, **k))
    trainer = _trainer(tmp_path / "a", model)
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    fused = grads(model)
    assert calls == [1]
    with torch.no_grad():
        eval_loss = trainer.compute_loss(model, inputs)
    assert calls == [1]  # no gradient wanted: the plain chunked forward
    chunked = _trainer(tmp_path / "b", model, logps_path="chunked")
    expected = chunked.compute_loss(model, inputs)
    expected.backward()
    assert calls == [1]
    torch.testing.assert_close(loss.detach(), expected.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(eval_loss, expected.detach(), atol=1e-5, rtol=0)
    assert_same(fused, grads(model))
    metrics = trainer._averages("train")
    assert metrics["rewards/accuracies"] in (0.0, 1 / 3, 2 / 3, 1.0)


# ---- WPO weighting (simpo_cli.objectives.wpo) -------------------------------------------------------

@pytest.mark.parametrize("name", ["simpo", "dpo"])
def test_fused_matches_full_logits_with_unaligned_wpo(name):
    """WPO without alignment needs only the policy log-probs and lengths, which the fused head has:
    the weighted loss and its gradients equal the full-logits computation (the weight is a
    constant there too), and the weights come back for the ``wpo/weight`` metric."""
    model = tiny("llama")
    spec = with_wpo(get_objective(name), "none")
    inputs = pair_batch()
    fill = reference_filler(spec, inputs["input_ids"].shape[0] // 2)
    loss, _, result, _ = fused_preference_loss(model, inputs, spec, KWARGS[name], fill)
    loss.backward()
    fused = grads(model)
    expected, _ = plain_loss(model, inputs, spec, KWARGS[name], fill)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), atol=1e-5, rtol=0)
    assert_same(fused, grads(model))
    assert result.weights is not None and (result.weights < 1).all()


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_fused_matches_full_logits_with_sampled_wpo(arch):
    """WPO's sampled alignment: the fused head also sums log Σ_v p_v² per row (Gemma-2: of the
    soft-capped softmax) and hands it to each pair's loss; loss, gradients and the sums equal the
    full-logits path's (``sequence_logps(path="plain", sum_sq_probs=True)``)."""
    model = tiny(arch)
    spec = with_wpo(get_objective("simpo"), "sampled")
    inputs = pair_batch()
    b = inputs["input_ids"].shape[0] // 2
    loss, logps, result, _ = fused_preference_loss(model, inputs, spec, KWARGS["simpo"], lambda logps: None)
    loss.backward()
    fused = grads(model)
    out = sequence_logps(model, *(inputs[k] for k in ("input_ids", "attention_mask", "response_mask")),
                         path="plain", sum_sq_probs=True)
    plain = PreferenceLogps(out.logps[:b], out.logps[b:], out.lengths[:b], out.lengths[b:],
                            chosen_log_sum_sq=out.log_sum_sq[:b], rejected_log_sum_sq=out.log_sum_sq[b:])
    expected = spec.fn(plain, **KWARGS["simpo"]).losses.mean()
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([logps.chosen_log_sum_sq, logps.rejected_log_sum_sq]), out.log_sum_sq,
                               atol=1e-5, rtol=0)
    assert_same(fused, grads(model))
    assert result.weights is not None


def test_trainer_wpo_fused_equals_chunked_and_logs_the_weight(tmp_path, monkeypatch):
    """The trainer keeps the fused head under WPO (sampled): same loss and gradients as
    ``logps_path=chunked``, lower than the unweighted loss here (weights < 1 on an untrained tiny
    model), and the batch's mean weight is logged as ``wpo/weight``."""
    import simpo_cli.training.trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "fused_preference_loss",
                        lambda *a, **k: calls.append(1) or fused_preference_loss(*a, **k))
    model, inputs = tiny("llama"), pair_batch()
    spec = with_wpo(get_objective("simpo"), "sampled")
    trainer = _trainer(tmp_path / "a", model, objective=spec)
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    fused = grads(model)
    assert calls == [1]
    expected = _trainer(tmp_path / "b", model, logps_path="chunked", objective=spec).compute_loss(model, inputs)
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach(), atol=1e-5, rtol=0)
    assert_same(fused, grads(model))
    with torch.no_grad():
        unweighted = _trainer(tmp_path / "c", model, logps_path="chunked").compute_loss(model, inputs)
    assert loss < unweighted
    metrics = trainer._averages("train")
    assert 0 < metrics["wpo/weight"] < 1
