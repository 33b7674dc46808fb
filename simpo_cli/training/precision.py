"""Precision that cannot lose updates, and the refusal to train a multi-billion-parameter model on CPU.

The published SimPO runs keep fp32 weights (``torch_dtype: null``) and train under bf16 autocast
(``bf16: true``; DeepSpeed keeps its own fp32 master copy). With pure bfloat16 weights instead, an
AdamW step changes each weight by about the learning rate, and bf16 keeps 8 significant bits: a
weight of magnitude 0.02 moves only by at least ~6e-5 (half its spacing), so at lr 1e-6 nearly
every update rounds away. ``lost_update_fraction`` measures that on the loaded weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from simpo_cli.models.loading import run_model_dir

log = logging.getLogger(__name__)

HALF = (torch.bfloat16, torch.float16)
# A model this size on CPU would take weeks per epoch; it is refused unless trainer.use_cpu=true.
CPU_LIMIT_B = 1.0
# Warn when at least this fraction of sampled weights cannot move by one step of size lr.
LOST_WARN = 0.1


def accelerator_available() -> bool:
    """A CUDA (or Apple MPS) device the Trainer would use."""
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


def use_cpu(trainer_cfg) -> bool:
    """``TrainingArguments.use_cpu``: as set, or true for bf16 autocast on a machine without a GPU
    (transformers refuses bf16 there unless told the run is on CPU, where it autocasts to bf16)."""
    return bool(trainer_cfg.use_cpu or (trainer_cfg.get("bf16") and not accelerator_available()))


def model_size_b(model_cfg) -> float | None:
    """Billions of parameters of ``model_cfg`` without loading weights: counted on the meta device
    from a local directory's ``config.json`` (a simpo run's: its ``model/``), else the preset's
    declared ``params_b`` (a Hub id is never contacted). ``None`` when unknown (the tiny model, a
    local path without a config)."""
    path = model_cfg.get("name_or_path")
    local = run_model_dir(path) or (Path(path).expanduser() if path else None)
    if local is not None and (local / "config.json").is_file():
        try:
            config = AutoConfig.from_pretrained(str(local),
                                                trust_remote_code=model_cfg.get("trust_remote_code", False))
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config)
        except Exception:  # noqa: BLE001 - an unusual checkpoint: fall back to the preset's figure
            return model_cfg.get("params_b")
        return sum(p.numel() for p in model.parameters()) / 1e9
    if path is None:
        return None
    return model_cfg.get("params_b")


def device_problem(cfg) -> str | None:
    """One line when ``cfg`` would train a multi-billion-parameter model on a machine without a GPU
    (and ``trainer.use_cpu`` is not set to accept that); ``None`` otherwise. Checked before any
    download."""
    if cfg.trainer.get("use_cpu") or accelerator_available():
        return None
    size = model_size_b(cfg.model)
    if size is None or size < CPU_LIMIT_B:
        return None
    return (f"model={cfg.model.name} has {size:.1f}B parameters and no GPU is visible: training it on CPU "
            "would not finish; run on a GPU machine, or set trainer.use_cpu=true to train on CPU anyway")


def lost_update_fraction(model, lr: float, sample: int = 4096) -> float | None:
    """Fraction of the trainable half-precision weights ``w`` for which ``w + lr`` rounds back to
    ``w`` in the weight's own dtype (an Adam step of size ``lr`` is lost). Looks at the first
    ``sample`` elements of each tensor; ``None`` when no trainable weight is bf16/fp16 (or all are
    partitioned away, as under ZeRO-3)."""
    lost = total = 0
    for p in model.parameters():
        if not p.requires_grad or p.dtype not in HALF or p.numel() == 0:
            continue
        w = p.detach().reshape(-1)[:sample]
        lost += int(((w.float() + lr).to(p.dtype) == w).sum())
        total += w.numel()
    return lost / total if total else None


def _deepspeed(cfg) -> bool:
    acc = cfg.get("distributed", {}).get("accelerate") or {}
    return acc.get("distributed_type") == "DEEPSPEED"


def check_precision(cfg, model) -> dict:
    """What precision the run trains in, as recorded in ``meta.json["precision"]``; logs a warning
    naming the problem when pure half-precision weights would lose the updates at this learning
    rate (DeepSpeed with bf16/fp16 keeps fp32 master weights, so it is exempt)."""
    weights = next((str(p.dtype).removeprefix("torch.") for p in model.parameters()), "unknown")
    tr = cfg.trainer
    autocast = "bf16" if tr.get("bf16") else "fp16" if tr.get("fp16") else "none"
    master = "float32 (DeepSpeed)" if _deepspeed(cfg) and autocast != "none" else weights
    info = {"weights": weights, "autocast": autocast, "master_weights": master}
    if master.startswith("float32"):
        return info
    lr = float(cfg.hparams.learning_rate)
    lost = lost_update_fraction(model, lr)
    if lost is not None:
        info["lost_update_fraction"] = round(lost, 4)
        if lost >= LOST_WARN:
            log.warning("pure %s weights (model.dtype=%s) at learning rate %g: %.0f%% of the weights cannot "
                        "move by one update of that size (below %s's resolution), so training silently "
                        "loses those updates. Keep fp32 master weights: model.dtype=float32 with "
                        "trainer.bf16=true (bf16 autocast), as the published recipes do.",
                        weights, cfg.model.dtype, lr, 100 * lost, weights)
    return info

