"""Checks that run before any model or data is loaded; every problem is reported at once."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from simpo_cli.data.records import is_local, resolve_path
from simpo_cli.data.templates import TEMPLATE_MODES
from simpo_cli.config.eval import BENCHMARK_FORMATS, TRAIN_RUN_OPTION
from simpo_cli.config.schema import GROUP_DIRS, group_options
from simpo_cli.errors import ConfigError
from simpo_cli.evaluation import diagnostics
from simpo_cli.models.adapters import adapter_problems
from simpo_cli.models.loading import DTYPES as TORCH_DTYPES
from simpo_cli.objectives import OBJECTIVES
from simpo_cli.objectives.wpo import ALIGNMENTS as WPO_ALIGNMENTS
from simpo_cli.training.precision import device_problem

log = logging.getLogger(__name__)


def resolve_objective(cfg) -> None:
    """Fold ``objective.gamma_beta_ratio`` into ``objective.gamma`` (γ = ratio × β) so the saved
    config states the γ used."""
    ob = cfg.objective
    if ob.get("gamma_beta_ratio") is not None:
        ob.gamma = ob.gamma_beta_ratio * ob.beta


# Keys that moved; naming the old one is an error that names the new one (no compatibility layer).
MOVED_KEYS = {"hparams.beta": "objective.beta", "hparams.gamma": "objective.gamma",
              "hparams.gamma_beta_ratio": "objective.gamma_beta_ratio"}


def moved_key_problems(overrides: list[str]) -> list[str]:
    """One line per override of a key that moved (``hparams.beta=2.5`` -> ``objective.beta``)."""
    problems = []
    for o in overrides:
        key = o.partition("=")[0].lstrip("+~")
        if key in MOVED_KEYS:
            problems.append(f"{key} is now {MOVED_KEYS[key]}: β and γ belong to the objective "
                            f"({MOVED_KEYS[key]}={o.partition('=')[2]})")
    return problems


def group_overrides(config_name: str, overrides: list[str]) -> list[str]:
    """The overrides with a stage's group names mapped to their directories (``GROUP_DIRS``:
    ``simpo sft data=ultrachat`` -> ``sft_data@data=ultrachat``). An option of another stage's group
    raises ``ConfigError`` naming the command that takes it."""
    dirs = GROUP_DIRS.get(config_name, {})
    own = {group: dirs.get(group, group) for group in ("data", "hparams")}
    problems, out = moved_key_problems(overrides), []
    for o in overrides:
        key, sep, value = o.partition("=")
        group = key.lstrip("+")
        if sep and group in own and not value.startswith(("glob(", "choice(")):
            for option in value.split(","):
                problems += _foreign_option(config_name, group, own[group], option.strip())
            if own[group] != group:  # the defaults list places the directory at the group: dir@group
                o = f"{key[:len(key) - len(group)]}{own[group]}@{group}={value}"
        out.append(o)
    if problems:
        raise ConfigError(problems)
    return out


def _foreign_option(config_name: str, group: str, directory: str, option: str) -> list[str]:
    if not option or option in group_options(directory) or option == TRAIN_RUN_OPTION:
        return []
    sft_option = option in group_options(GROUP_DIRS["sft"][group])
    if group == "data" and config_name == "sft" and option in group_options("data"):
        return [f"data '{option}' holds preference pairs, not conversations: run `simpo train data={option}`, "
                f"or pick SFT data (data={'|'.join(group_options(directory))})"]
    if group == "data" and config_name != "sft" and sft_option:
        return [f"data '{option}' holds SFT conversations, not preference pairs: run `simpo sft data={option}`, "
                "or pick pairs (data=demo-prefs|ultrafeedback|local)"]
    if sft_option or (config_name == "sft" and option in group_options(group)):
        return [f"hparams '{option}' is a {'simpo sft' if sft_option else 'preference'} recipe; "
                f"choose from: {', '.join(group_options(directory))}"]
    return [f"unknown {group} option '{option}'; choose from: {', '.join(group_options(directory))}"]


def validate_train(cfg) -> None:
    """Raise ``ConfigError`` listing every problem in a composed ``simpo train`` config."""
    problems = _train_problems(cfg) + common_problems(cfg) + diagnostics.config_problems(cfg.get("diagnostics"))
    if problems:
        raise ConfigError(problems)


def _train_problems(cfg) -> list[str]:
    problems: list[str] = []
    name = cfg.objective.get("name")
    spec = OBJECTIVES.get(name)
    if spec is None:
        problems.append(f"unknown objective '{name}'; choose from: {', '.join(sorted(OBJECTIVES))}")
    hp, ob = cfg.hparams, cfg.objective
    if spec is not None and spec.has("beta") and not (ob.get("beta") is not None and ob.beta > 0):
        problems.append(f"objective.beta must be > 0, got {ob.get('beta')}")
    if spec is not None and spec.has("gamma") and ob.get("gamma_beta_ratio") is None and not (
            ob.get("gamma") is not None and ob.gamma >= 0):
        problems.append(f"objective.gamma must be >= 0, got {ob.get('gamma')}")
    if ob.get("wpo") and ob.get("wpo_alignment") not in WPO_ALIGNMENTS:
        problems.append(f"objective.wpo_alignment must be one of {', '.join(WPO_ALIGNMENTS)}, "
                        f"got {ob.get('wpo_alignment')}")
    if hp.learning_rate <= 0:
        problems.append(f"hparams.learning_rate must be > 0, got {hp.learning_rate}")
    elif hp.learning_rate > 1e-4 and cfg.model.name_or_path is not None:
        log.warning("hparams.learning_rate=%g is far above the paper's 3e-7..1e-6 for a pretrained "
                    "model; preference optimisation without a KL term can reward-hack", hp.learning_rate)
    if hp.max_prompt_length >= hp.max_length:
        problems.append(f"hparams.max_prompt_length ({hp.max_prompt_length}) must be < "
                        f"hparams.max_length ({hp.max_length})")
    if cfg.data.get("kind") == "sft":
        problems.append(f"data '{cfg.data.name}' holds SFT conversations, not preference pairs: run "
                        f"`simpo sft data={cfg.data.name}`, or pick pairs (data=demo-prefs|ultrafeedback|local)")
    problems += _run_problems(cfg) + adapter_problems(cfg)
    if not problems and (device := device_problem(cfg)):  # alone: it is one line, not one of many
        problems.append(device)
    ref = cfg.get("reference")
    if ref is not None and ref.mode not in ("precompute", "live"):
        problems.append(f"reference.mode must be one of precompute, live, got '{ref.mode}'")
    if cfg.data.get("eval_size", 0) < 0:
        problems.append(f"data.eval_size must be >= 0 (0 = score training pairs), got {cfg.data.eval_size}")
    if cfg.trainer.get("eval_pairs") is not None and cfg.trainer.eval_pairs < 1:
        problems.append(f"trainer.eval_pairs must be >= 1 or null (all), got {cfg.trainer.eval_pairs}")
    return problems


def validate_sft(cfg) -> None:
    """Raise ``ConfigError`` listing every problem in a composed ``simpo sft`` config."""
    problems: list[str] = []
    hp = cfg.hparams
    if cfg.data.get("kind") == "preference":
        problems.append(f"data '{cfg.data.name}' holds preference pairs, not conversations: run "
                        f"`simpo train data={cfg.data.name}`, or pick SFT data (data=alpaca-demo|ultrachat|local)")
    if hp.learning_rate <= 0:
        problems.append(f"hparams.learning_rate must be > 0, got {hp.learning_rate}")
    if hp.max_length < 2:
        problems.append(f"hparams.max_length must be >= 2, got {hp.max_length}")
    if cfg.data.get("eval_split") is None and not cfg.data.eval_size > 0:
        problems.append("set data.eval_size (> 0) or data.eval_split: the held-out loss needs records")
    problems += _run_problems(cfg) + adapter_problems(cfg)
    if problems:
        raise ConfigError(problems)


def _run_problems(cfg) -> list[str]:
    """Batch, data path, model path and output checks shared by the training stages."""
    problems: list[str] = []
    hp = cfg.hparams
    if hp.per_device_train_batch_size < 1:
        problems.append("hparams.per_device_train_batch_size must be >= 1")
    if hp.get("global_batch_size") is not None and hp.global_batch_size % hp.per_device_train_batch_size:
        problems.append(f"hparams.global_batch_size ({hp.global_batch_size}) must be a multiple of "
                        f"per_device_train_batch_size ({hp.per_device_train_batch_size})")
    if OmegaConf.is_missing(cfg.data, "path") or cfg.data.path is None:
        problems.append(f"data '{cfg.data.name}' needs a path: data.path=/path/to/file.jsonl")
    path = cfg.model.name_or_path
    if path and path.startswith(("/", "./", "../")) and not Path(path).exists():
        problems.append(f"model.name_or_path: local path not found: {path}")
    out = Path(cfg.paths.output_root)
    if not writable(out):
        problems.append(f"paths.output_root is not writable: {out}")
    return problems


def writable(path: Path) -> bool:
    """Whether a directory can be created at ``path``: probes its nearest existing ancestor by
    creating (and removing) a temporary directory, since ``os.access`` says yes to root even on a
    read-only mount or /proc."""
    probe = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not probe.is_dir():
        return False
    try:
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".simpo-write-check-"))
    except OSError:
        return False
    return True


# Preference layouts, KTO's unpaired records, and the SFT layouts (simpo_cli/data/sft.py).
DATA_FORMATS = ("auto", "plain", "ultrafeedback", "sharegpt", "implicit", "unpaired", "messages", "alpaca")
CHAT_TEMPLATE_MODES = TEMPLATE_MODES  # data.chat_template, defined with the renderer that reads it
DTYPES = tuple(TORCH_DTYPES)  # model.dtype / scorer.dtype, defined with the loader that maps them
BACKENDS = ("transformers", "vllm")  # generation.backend


def validate_generate_pairs(cfg) -> None:
    """Raise ``ConfigError`` listing every problem in a composed ``generate-pairs`` config."""
    g, problems = cfg.generation, []
    if g.backend not in BACKENDS:
        problems.append(f"unknown generation.backend '{g.backend}'; choose from: {', '.join(BACKENDS)}")
    if g.n < 2:
        problems.append(f"generation.n must be >= 2 (a pair needs two responses), got {g.n}")
    if g.temperature <= 0:
        problems.append(f"generation.temperature must be > 0 (greedy samples are all identical), got {g.temperature}")
    if not 0 < g.top_p <= 1:
        problems.append(f"generation.top_p must be in (0, 1], got {g.top_p}")
    if g.top_k < 0:
        problems.append(f"generation.top_k must be >= 0 (0 = off), got {g.top_k}")
    for key in ("max_new_tokens", "max_prompt_length", "batch_size", "shard_size"):
        if g[key] < 1:
            problems.append(f"generation.{key} must be >= 1, got {g[key]}")
    if cfg.scorer.batch_size < 1:
        problems.append(f"scorer.batch_size must be >= 1, got {cfg.scorer.batch_size}")
    if OmegaConf.is_missing(cfg.data, "path") or cfg.data.path is None:
        problems.append(f"data '{cfg.data.name}' needs a path: data.path=/path/to/prompts.jsonl")
    # (A ``???`` in an option YAML does not override the schema's None when merged, hence no is_missing.)
    sc = cfg.scorer
    if sc.type == "ifeval":  # verifiable rewards need no model (simpo_cli/models/verifiable.py)
        if sc.mode not in ("loose", "strict"):
            problems.append(f"scorer.mode must be loose or strict, got '{sc.mode}'")
    elif sc.type == "function":
        if not sc.function or ":" not in sc.function:
            problems.append("scorer=function needs scorer.function=package.module:name (a TRL-style reward function)")
    elif sc.name_or_path is None and sc.tiny is None:
        problems.append(f"scorer '{sc.name}' needs a model: scorer.name_or_path=<hub id or dir>")
    if cfg.get("resume") not in (None, "auto", "never"):
        problems.append(f"resume must be auto or never for generate-pairs, got '{cfg.resume}'")
    if problems:
        raise ConfigError(problems)




def _local_missing(path: str | None) -> bool:
    return bool(path) and is_local(path) and not Path(resolve_path(path)).exists()


def common_problems(cfg) -> list[str]:
    """Checks shared by every stage, applied to whichever of ``model``/``data``/``hparams``/
    ``trainer`` the config has (a new stage gets them by calling ``validate_config``)."""
    problems: list[str] = []
    model, data, hp, tr = (cfg.get(k) for k in ("model", "data", "hparams", "trainer"))
    if model is not None:
        if model.get("dtype") not in DTYPES:
            problems.append(f"model.dtype must be one of {', '.join(DTYPES)}, got '{model.get('dtype')}'")
        where = model.get("name_or_path")
        if isinstance(where, str) and where.startswith("package:"):
            problems.append(f"model.name_or_path={where}: the package: scheme is gone; use "
                            f"pkg:{where.removeprefix('package:')}")
        tok = model.get("tokenizer")
        if tok and tok.startswith(("/", "./", "../")) and not Path(tok).exists():
            problems.append(f"model.tokenizer: local path not found: {tok}")
    if data is not None and not OmegaConf.is_missing(data, "path"):
        if _local_missing(data.path):
            problems.append(f"data.path: file not found: {data.path}")
        if data.get("format") not in DATA_FORMATS:
            problems.append(f"data.format must be one of {', '.join(DATA_FORMATS)}, got '{data.format}'")
        if data.get("chat_template") not in CHAT_TEMPLATE_MODES:
            problems.append(f"data.chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, "
                            f"got '{data.chat_template}'")
        if data.get("max_samples") is not None and data.max_samples < 1:
            problems.append(f"data.max_samples must be >= 1 (or null), got {data.max_samples}")
    if hp is not None:
        if hp.get("max_length") is not None and hp.max_length < 2:
            problems.append(f"hparams.max_length must be >= 2, got {hp.max_length}")
        if hp.get("warmup_ratio") is not None and not 0 <= hp.warmup_ratio < 1:
            problems.append(f"hparams.warmup_ratio must be in [0, 1), got {hp.warmup_ratio}")
        if hp.get("num_train_epochs") is not None and hp.num_train_epochs <= 0:
            problems.append(f"hparams.num_train_epochs must be > 0, got {hp.num_train_epochs}")
    if tr is not None:
        for key in ("save_steps", "nan_skip_budget", "logging_steps"):
            if tr.get(key) is not None and tr[key] < 0:
                problems.append(f"trainer.{key} must be >= 0, got {tr[key]}")
        if tr.get("save_total_limit") is not None and tr.save_total_limit < 1:
            problems.append(f"trainer.save_total_limit must be >= 1 (or null), got {tr.save_total_limit}")
        if tr.get("bf16") and tr.get("fp16"):
            problems.append("trainer.bf16 and trainer.fp16 cannot both be true")
    return problems  # ``resume`` is checked with the run directory (reliability.resume_checkpoint)


def validate_eval(cfg) -> None:
    """Raise ``ConfigError`` listing every problem in a composed ``simpo eval`` config."""
    problems = []
    ev = cfg.eval
    for name in ev.benchmarks:
        if name not in cfg.benchmarks:
            problems.append(f"eval.benchmarks: unknown benchmark '{name}'; choose from: "
                            f"{', '.join(sorted(cfg.benchmarks))}")
        elif cfg.benchmarks[name].format not in BENCHMARK_FORMATS:
            problems.append(f"benchmarks.{name}.format must be one of {', '.join(BENCHMARK_FORMATS)}")
    if ev.limit is not None and ev.limit < 1:
        problems.append(f"eval.limit must be >= 1, got {ev.limit}")
    if ev.max_new_tokens is not None and ev.max_new_tokens < 1:
        problems.append(f"eval.max_new_tokens must be >= 1, got {ev.max_new_tokens}")
    for key in ("generation_batch_size", "histogram_bins"):
        if ev[key] < 1:
            problems.append(f"eval.{key} must be >= 1, got {ev[key]}")
    if ev.logps_path not in ("auto", "chunked", "plain"):
        problems.append(f"eval.logps_path must be auto, chunked or plain, got '{ev.logps_path}'")
    if ev.pairs and (OmegaConf.is_missing(cfg.data, "path") or cfg.data.path is None):
        problems.append(f"data '{cfg.data.name}' needs a path: data.path=/path/to/file.jsonl (or eval.pairs=false)")
    j = cfg.judge
    if j.reward_model:
        if not j.baseline:
            problems.append("judge.reward_model needs judge.baseline (an answers file to compare against)")
        if j.benchmark not in ev.benchmarks:
            problems.append(f"judge.benchmark '{j.benchmark}' is not in eval.benchmarks {list(ev.benchmarks)}")
        if not 0 < j.confidence < 1:
            problems.append(f"judge.confidence must be in (0, 1), got {j.confidence}")
    problems += diagnostics.config_problems(cfg.get("diagnostics"))
    if problems:
        raise ConfigError(problems)


# Stage → validator, run once by ``run/preflight.py`` before any run directory exists.
VALIDATORS = {"train": validate_train, "sft": validate_sft, "generate-pairs": validate_generate_pairs,
              "eval": validate_eval}


def validate_config(cfg) -> None:
    """Raise ``ConfigError`` listing every problem of the sections the config has."""
    problems = common_problems(cfg)
    if problems:
        raise ConfigError(problems)


def validate_stage(stage: str, cfg) -> None:
    """Raise ``ConfigError`` listing every problem of a composed stage config: the stage's own
    validator (``VALIDATORS``) and the checks every stage shares (``common_problems``)."""
    if cfg.get("objective") is not None:
        resolve_objective(cfg)
    problems: list[str] = []
    try:
        VALIDATORS.get(stage, validate_config)(cfg)
    except ConfigError as e:
        problems += e.problems
    problems += common_problems(cfg)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
