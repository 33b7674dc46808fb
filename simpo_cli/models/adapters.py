"""LoRA and QLoRA adapters with ``peft``: config checks, wrapping, the disabled-adapter reference,
saving (adapter, optionally merged) and loading a saved adapter back as a plain model.

``adapter=lora`` freezes the base and trains low-rank adapters (Hu et al. 2021, arXiv 2106.09685)
on ``adapter.target_modules`` (default ``all-linear``: every linear layer of the decoder, LM head
excluded, as peft defines it). ``adapter=qlora`` loads the base in 4-bit NF4 with bitsandbytes
(Dettmers et al. 2023, arXiv 2305.14314; CUDA only). Objectives with a reference model use the
base, i.e. the policy with its adapter disabled (``adapters_disabled``), as TRL's ``DPOTrainer``
does with a ``PeftModel``: one model in memory.

Saved layout of a run (``trainer.save_model``): ``adapter.merge=false``: ``<run>/model`` holds
``adapter_model.safetensors`` + ``adapter_config.json`` + the tokenizer (``PeftModel.from_pretrained``
loads it onto the base); ``adapter.merge=true``: ``<run>/model`` is the merged full model
(``AutoModelForCausalLM.from_pretrained``) and ``<run>/adapter`` the adapter. ``load_model`` takes
either kind of ``<run>`` as ``model.name_or_path``: an adapter directory is loaded onto its base
(the run's own ``config.yaml`` says which) and merged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

from simpo_cli import optional
from simpo_cli.errors import UserError

log = logging.getLogger(__name__)

KINDS = ("none", "lora", "qlora")
BIAS = ("none", "all", "lora_only")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_DIR = "adapter"  # <run>/adapter when adapter.merge=true
COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def enabled(adapter_cfg) -> bool:
    """Whether the config trains an adapter (``adapter`` absent or ``none``: full fine-tuning)."""
    return adapter_cfg is not None and adapter_cfg.get("name", "none") != "none"


def qlora_unavailable() -> str | None:
    """Why 4-bit QLoRA cannot run here (no bitsandbytes, no CUDA GPU), or ``None``."""
    if not optional.installed("bitsandbytes"):
        return "adapter=qlora needs bitsandbytes (pip install bitsandbytes) and a CUDA GPU; use adapter=lora"
    if not torch.cuda.is_available():
        return "adapter=qlora needs a CUDA GPU (bitsandbytes 4-bit); none is visible: use adapter=lora"
    return None


def adapter_problems(cfg) -> list[str]:
    """Problems of ``cfg.adapter`` that need no model (checked before anything is downloaded)."""
    ad = cfg.get("adapter")
    if not enabled(ad):
        return []
    problems = []
    if ad.name not in KINDS:
        return [f"adapter.name must be one of {', '.join(KINDS)}, got '{ad.name}'"]
    if not optional.installed("peft"):
        problems.append(f"adapter={ad.name} needs peft: pip install peft")
    if ad.r <= 0:
        problems.append(f"adapter.r must be > 0, got {ad.r}")
    if ad.lora_alpha <= 0:
        problems.append(f"adapter.lora_alpha must be > 0, got {ad.lora_alpha}")
    if not 0 <= ad.lora_dropout < 1:
        problems.append(f"adapter.lora_dropout must be in [0, 1), got {ad.lora_dropout}")
    if ad.bias not in BIAS:
        problems.append(f"adapter.bias must be one of {', '.join(BIAS)}, got '{ad.bias}'")
    if ad.learning_rate_scale <= 0:
        problems.append(f"adapter.learning_rate_scale must be > 0, got {ad.learning_rate_scale}")
    dist = cfg.get("distributed")
    if ad.merge and dist is not None and dist.get("name") in ("fsdp", "zero3"):
        problems.append(f"adapter.merge=true needs the whole model in one process, not distributed={dist.name}: "
                        "train with merge=false, then merge the saved adapter (PeftModel.merge_and_unload)")
    targets = ad.target_modules
    if targets is None or (not isinstance(targets, str) and len(targets) == 0):
        problems.append("adapter.target_modules is empty: use all-linear or a list of module names")
    if ad.name == "qlora":
        why = qlora_unavailable()
        if why:
            problems.append(why)
        elif cfg.model.get("name_or_path") is None:
            problems.append("adapter=qlora quantises a pretrained checkpoint: set model.name_or_path")
        if ad.bnb_4bit_compute_dtype not in COMPUTE_DTYPES:
            problems.append(f"adapter.bnb_4bit_compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}")
        tr = cfg.get("trainer")
        if tr is not None and tr.get("use_cpu"):
            problems.append("adapter=qlora cannot run with trainer.use_cpu=true (bitsandbytes 4-bit is CUDA only)")
    return problems


def quantization_config(adapter_cfg):
    """``BitsAndBytesConfig`` for ``adapter=qlora`` (4-bit base), else ``None``."""
    if not enabled(adapter_cfg) or adapter_cfg.name != "qlora":
        return None
    why = qlora_unavailable()
    if why:
        raise UserError(why)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=adapter_cfg.bnb_4bit_quant_type,
                              bnb_4bit_compute_dtype=COMPUTE_DTYPES[adapter_cfg.bnb_4bit_compute_dtype],
                              bnb_4bit_use_double_quant=adapter_cfg.bnb_4bit_use_double_quant)


def learning_rate_scale(cfg) -> float:
    """``adapter.learning_rate_scale`` when an adapter trains, else 1."""
    ad = cfg.get("adapter")
    return float(ad.learning_rate_scale) if enabled(ad) else 1.0


def _targets(adapter_cfg):
    t = adapter_cfg.target_modules
    return t if isinstance(t, str) else list(t)


def check_target_modules(model, adapter_cfg) -> None:
    """Raise ``UserError`` naming a ``target_modules``/``modules_to_save`` entry that matches no
    module of ``model`` (peft's rules: a list entry matches a module name or its last components;
    a string other than ``all-linear`` is a regular expression over full names)."""
    names = [n for n, _ in model.named_modules() if n]
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    hint = f"the model's linear layers: {', '.join(linear)}"
    targets = _targets(adapter_cfg)
    if isinstance(targets, str):
        if targets != "all-linear" and not any(re.fullmatch(targets, n) for n in names):
            raise UserError(f"adapter.target_modules: the pattern '{targets}' matches no module of the model "
                            f"({hint}; or all-linear)")
    else:
        for key in targets:
            if not any(n == key or n.endswith("." + key) for n in names):
                raise UserError(f"adapter.target_modules: no module named '{key}' in the model ({hint}; or all-linear)")
    for key in adapter_cfg.modules_to_save or []:
        if not any(n == key or n.endswith("." + key) for n in names):
            raise UserError(f"adapter.modules_to_save: no module named '{key}' in the model")


def check_before_loading(model_cfg, adapter_cfg, location: str) -> None:
    """``check_target_modules`` on the checkpoint's architecture built on the meta device from its
    ``config.json`` alone, so a wrong module name fails before gigabytes of weights download.
    Silent when the config cannot be read that way (loading then reports the problem)."""
    if not enabled(adapter_cfg):
        return
    try:
        config = AutoConfig.from_pretrained(location, revision=model_cfg.get("revision"),
                                            trust_remote_code=model_cfg.get("trust_remote_code", False))
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                config, trust_remote_code=model_cfg.get("trust_remote_code", False))
    except (OSError, ValueError, KeyError, ImportError):
        return
    check_target_modules(skeleton, adapter_cfg)


def wrap(model, adapter_cfg, gradient_checkpointing: bool = False):
    """``model`` as a trainable ``PeftModel`` (base frozen, fresh LoRA weights: B = 0, so the
    wrapped model computes exactly what ``model`` did), or ``model`` itself for ``adapter=none``.
    Raises ``UserError`` for target modules the model does not have."""
    if not enabled(adapter_cfg):
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    check_target_modules(model, adapter_cfg)
    if adapter_cfg.name == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        # The frozen embeddings' output needs requires_grad for checkpointed blocks to backprop.
        model.enable_input_require_grads()
    config = LoraConfig(task_type="CAUSAL_LM", r=adapter_cfg.r, lora_alpha=adapter_cfg.lora_alpha,
                        lora_dropout=adapter_cfg.lora_dropout, target_modules=_targets(adapter_cfg),
                        modules_to_save=list(adapter_cfg.modules_to_save) if adapter_cfg.modules_to_save else None,
                        bias=adapter_cfg.bias)
    peft_model = get_peft_model(model, config)
    counts = parameter_counts(peft_model)
    log.info("adapter %s (r=%d, alpha=%g): %s trainable parameters of %s (%.3f%%)", adapter_cfg.name,
             adapter_cfg.r, adapter_cfg.lora_alpha, f"{counts['trainable_parameters']:,}",
             f"{counts['parameters']:,}", 100 * counts["trainable_parameters"] / max(counts["parameters"], 1))
    return peft_model


def parameter_counts(model) -> dict:
    """``{"parameters": all, "trainable_parameters": requires_grad}`` (ZeRO-3's ``ds_numel`` aware)."""
    total = trainable = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return {"parameters": total, "trainable_parameters": trainable}


def unwrap(model):
    """The model inside DDP / accelerate / DeepSpeed wrappers (their ``.module``); a PeftModel is
    returned as is."""
    while hasattr(model, "module"):
        model = model.module
    return model


def has_adapter(model) -> bool:
    """Whether ``model`` (or the model a DDP wrapper holds) is a ``PeftModel``."""
    if "peft" not in sys.modules:  # nothing can be a PeftModel; do not pay peft's import
        return False
    return isinstance(unwrap(model), sys.modules["peft"].PeftModel)


def adapters_disabled(model):
    """Context in which ``model`` computes its base (adapter off): the reference of a LoRA run.
    A no-op for a model without an adapter."""
    if not has_adapter(model):
        return contextlib.nullcontext()
    return unwrap(model).disable_adapter()


def save_merged(model, tokenizer, saved: Path, adapter_dir: Path) -> None:
    """After ``trainer.save_model(saved)`` wrote the adapter: move it to ``adapter_dir`` and write
    the merged full model (+ tokenizer) into ``saved``. Merges in place: call it last."""
    saved, adapter_dir = Path(saved), Path(adapter_dir)
    staging = adapter_dir.with_name(adapter_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    saved.rename(staging)
    merged = unwrap(model).merge_and_unload()
    merged.save_pretrained(str(saved))
    tokenizer.save_pretrained(str(saved))
    shutil.rmtree(adapter_dir, ignore_errors=True)
    staging.rename(adapter_dir)


# ----------------------------------------------------------------------- loading a saved adapter


def is_adapter_dir(path) -> bool:
    """A peft adapter directory (``adapter_config.json``, no full model's ``config.json``)."""
    if not path:
        return False
    p = Path(path).expanduser()
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


def base_model_config(adapter_path, model_cfg, run_config=None):
    """The model config of an adapter's base: ``model_cfg`` with ``name_or_path``/``tokenizer``/
    ``revision``/``tiny`` from ``run_config`` (the saved config of the run that trained it, when
    the adapter is a run's ``model/``), else ``base_model_name_or_path`` of its
    ``adapter_config.json``. Raises ``UserError`` when neither names a base. Called once per
    source, by ``models.loading.model_source``."""
    path = Path(adapter_path).expanduser().resolve()
    base = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    saved = run_config.get("model") if run_config is not None else None
    if saved is not None:
        for key in ("name_or_path", "tokenizer", "revision", "tiny"):
            if key in saved:
                base[key] = saved[key]
        return base
    name = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not name:
        raise UserError(f"{path}: an adapter without its base: not a simpo run's model/ and no "
                        "base_model_name_or_path in adapter_config.json")
    base.name_or_path, base.tokenizer, base.tiny = name, None, None
    return base


def load_merged(base, adapter_path):
    """``base`` with the adapter at ``adapter_path`` merged in: a plain model that computes what
    ``PeftModel.from_pretrained(base, adapter_path)`` does (to float rounding)."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(base, str(adapter_path))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load adapter {adapter_path}: {str(e).splitlines()[0]}") from None
    # from_pretrained froze the base for inference; a loaded model is trainable like any other.
    return peft_model.merge_and_unload().requires_grad_(True)
