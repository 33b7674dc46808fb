"""Compose and validate a stage's config *before* Hydra runs the job, so a mistake costs one line,
exit code 2 and no run directory (Hydra would otherwise create ``<run>/.hydra`` first and print
its own multi-line error with exit code 1).

``preflight(stage, config_name, args)`` is what ``cli._run_hydra`` calls for every stage:

- ``run_dir=DIR`` is accepted as a friendlier spelling of ``hydra.run.dir=DIR``;
- Hydra's compose errors (unknown group option, misspelled key, wrong type, bad override syntax)
  become one line each; every bad override is reported, not just the first;
- the composed config goes through the stage's validator (``config/checks.VALIDATORS``), plus the run
  directory checks (``resume``, existing checkpoints, writability);
- for a single run the run directory is resolved once and pinned (``hydra.run.dir=<resolved>``),
  so the CLI knows whether it created it and can remove it if the job fails on a user mistake;
- for ``-m`` every combination of the sweep (the command line's and a sweep file's ``hydra.sweeper.params``)
  is validated before the first job starts;
- once the config is valid, the stage's models are resolved (``resolve``: each stage module's
  ``model_sources``) into frozen ``models.loading.ModelSource`` values carried on the ``Plan``
  (per job for ``-m``), so a model that cannot be resolved (an adapter without its base) is one
  line too. Resolving writes nothing (a packaged model is converted when first loaded).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import OmegaConf

from simpo_cli.config.checks import group_overrides, validate_stage, writable
from simpo_cli.config.recipes import finish, published_values
from simpo_cli.config.schema import CONF_DIR, group_options
from simpo_cli.config.store import register_configs
from simpo_cli.errors import ConfigError, UserError
from simpo_cli.files import CHECKPOINTS_DIR, META_FILE
from simpo_cli.run.rundir import RunRecord
from simpo_cli.run.train_run import train_run_overrides
from simpo_cli.training.reliability import resume_checkpoint

if TYPE_CHECKING:
    from simpo_cli.models.loading import ModelSource

    Sources = dict[str, ModelSource]  # role ("policy", "reference") -> its source

# Hydra flags that take a value (everything else starting with '-' is a bare flag).
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc"}
_NO_RUN_FLAGS = {"--cfg", "-c", "--info", "-i", "--hydra-help", "--help", "-h", "--shell-completion",
                 "-sc", "--version"}
_SAFE_VALUE = re.compile(r"^[\w/.+\-~]+$")
MAX_SWEEP_CHECKS = 256


@dataclass
class Plan:
    """What the CLI hands to ``hydra.main``: the (rewritten) arguments, and for a single run the
    pinned run directory and whether it existed before this command."""

    args: list[str]
    run_dir: Path | None = None
    existed: bool = True
    root: Path | None = None  # the nearest ancestor of run_dir that existed before the command
    cfg: object = None
    validated: bool = True  # False: the job validates itself (search sweeps, whose trials are not known yet)
    warnings: list[str] = field(default_factory=list)
    sources: "Sources | None" = None  # a single run's models, resolved here (None: not resolved)
    # -m: each validated job's sources, keyed by its task overrides as Hydra lists them
    job_sources: "dict[tuple[str, ...], Sources]" = field(default_factory=dict)
    checked_jobs: "set[tuple[str, ...]] | None" = None  # -m: the jobs validated here (None: every job)

    def checked(self, task_overrides) -> bool:
        """Whether preflight validated the job with these task overrides (else the job validates itself)."""
        return self.validated and (self.checked_jobs is None or tuple(task_overrides) in self.checked_jobs)

    def sources_for(self, task_overrides) -> "Sources | None":
        """The sources preflight resolved for the job with these task overrides (Hydra's
        ``overrides.task``); ``None`` where it resolved none for that job (then the stage resolves
        them at its start)."""
        if self.sources is not None:
            return self.sources
        return self.job_sources.get(tuple(task_overrides))


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra's flags (with their values) from the overrides."""
    flags, overrides, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            flags.append(a)
            if a in _VALUE_FLAGS and "=" not in a and i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
        else:
            overrides.append(a)
        i += 1
    return flags, overrides


def translate_run_dir(args: list[str]) -> list[str]:
    """``run_dir=DIR`` → ``hydra.run.dir=DIR`` (and ``hydra.sweep.dir`` under ``-m``), for every stage.
    ``output_dir=DIR`` (generate-pairs' former spelling) is one line naming ``run_dir=``."""
    multirun = bool({"-m", "--multirun"} & set(args))
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    out = []
    for a in args:
        if a.startswith("output_dir="):
            raise ConfigError([f"{a}: output_dir= is gone; use run_dir={a.split('=', 1)[1]}"])
        out.append(f"{key}={a.split('=', 1)[1]}" if a.startswith("run_dir=") else a)
    return out


def handoff_overrides(config_name: str, args: list[str]) -> list[str]:
    """A stage's output is its run directory, and the next stage takes it as the input it provides,
    the same way for every stage: ``model=<sft or train run>`` (the run's ``model/``, on the run's
    model preset) and ``data=<generate-pairs run>`` (its pairs); ``simpo eval model=<train run>``
    composes over that run's saved config (``run/train_run.py``). ``model=<path>`` that is no run
    directory is one line naming ``model.name_or_path=``."""
    out, train_run = [], None
    for a in args:
        key, sep, value = a.partition("=")
        if key == "run" and sep and config_name == "eval":
            raise ConfigError([f"{a}: run= is gone; evaluate a train run with model={value}"])
        record = _run_record(value) if sep and key in ("model", "data") else None
        if record is None:
            if sep and key == "model" and _looks_like_path(value):
                raise ConfigError([f"{a}: not a simpo run directory (no {META_FILE}); for a model directory "
                                   f"or Hub id use model.name_or_path={value}"])
            out.append(a)
            continue
        stage, where = record.meta.get("stage"), quote(str(record.path))
        if key == "model" and config_name == "eval" and stage == "train":
            train_run = record
        elif key == "model" and record.model_dir.is_dir():
            saved = record.config()
            preset = saved.get("model", {}).get("name") if saved is not None else None
            out += ([f"model={preset}"] if preset in group_options("model") else []) + [f"model.name_or_path={where}"]
        elif key == "data" and stage == "generate-pairs":
            out += ["data=generated", f"data.path={where}"]
        else:
            raise ConfigError([f"{a}: this {stage or 'simpo'} run directory has no {key} to give "
                               f"(model=<sft or train run>, data=<generate-pairs run>)"])
    if train_run is not None:
        out = train_run_overrides(train_run, out, quote) + out
    return out


def _looks_like_path(value: str) -> bool:
    return bool(value) and "," not in value and ("/" in value or value.startswith((".", "~")))


def _run_record(value: str) -> RunRecord | None:
    """The run directory ``value`` names, if it is one (it holds ``meta.json``); else ``None``."""
    if not _looks_like_path(value):
        return None  # a group option name (or a sweep of them), not a path
    path = Path(value).expanduser()
    return RunRecord.read(path.absolute()) if (path / META_FILE).is_file() else None


def quote(value: str) -> str:
    """A Hydra override value that stays one literal string (paths with spaces, ':' or '$')."""
    if _SAFE_VALUE.match(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_error_line(e: BaseException) -> str:
    """One line for a Hydra/OmegaConf compose error."""
    if isinstance(e, MissingConfigException):
        m = re.search(r"Could not find '([^']+)'", str(e))
        missing = m.group(1) if m else (e.missing_cfg_file or "?")
        group, _, option = missing.rpartition("/")
        choices = [o for o in (e.options or []) if not o.startswith(("base_", "schema_"))]
        if group and choices:
            return f"unknown {group} option '{option}'; choose from: {', '.join(choices)}"
        return f"config not found: {missing}"
    if isinstance(e, OverrideParseException):
        lines = [ln for ln in str(e).splitlines() if ln and not ln.startswith("See https")]
        return "cannot parse override: " + " ".join(lines)
    cause = e.__cause__ or e.__context__
    full_key = getattr(cause, "full_key", None)
    if cause is not None and full_key:
        msg = str(getattr(cause, "msg", None) or cause).splitlines()[0]
        if type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError"):
            parent, _, leaf = full_key.rpartition(".")
            hint = _close_key(e, parent, leaf)
            return f"unknown key '{full_key}'" + (f"; did you mean '{hint}'?" if hint else
                                                  f" (add a new key with +{full_key}=...)")
        return f"{full_key}: {msg}"
    return " ".join(str(e).split())


def _close_key(e, parent: str, leaf: str) -> str | None:
    node = getattr(getattr(e, "__cause__", None), "parent_node", None)
    keys = list(node.keys()) if node is not None and hasattr(node, "keys") else []
    match = difflib.get_close_matches(leaf, [str(k) for k in keys], n=1)
    return f"{parent + '.' if parent else ''}{match[0]}" if match else None


def _compose(config_name: str, overrides: list[str], hydra_cfg: bool = False):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra_cfg)
    return finish(cfg, config_name, overrides)


def compose_config(config_name: str, overrides: list[str], hydra_cfg: bool = False):
    """Compose like ``hydra.main`` does; raise ``ConfigError`` with one line per bad override.

    On failure each override is retried on its own (on top of the group choices, so an option's
    keys are checked against the chosen option's schema) to report every bad one at once.
    ``SIMPO_DEBUG=1`` re-raises Hydra's own exception instead.
    """
    try:
        return _compose(config_name, overrides, hydra_cfg)
    except Exception as first:  # noqa: BLE001 - Hydra raises several unrelated types
        if os.environ.get("SIMPO_DEBUG"):
            raise
        problems, good = [], []
        groups = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0].lstrip("+~")]
        for group in groups:
            try:
                _compose(config_name, [group])
                good.append(group)
            except Exception as e:  # noqa: BLE001
                problems.append(hydra_error_line(e))
        for o in overrides:
            if o in groups:
                continue
            try:  # on top of the valid group choices only, so each bad key is reported once
                _compose(config_name, [*good, o])
            except Exception as e:  # noqa: BLE001
                problems.append(hydra_error_line(e))
        raise ConfigError(list(dict.fromkeys(problems)) or [hydra_error_line(first)]) from None


def run_dir_problems(cfg, run_dir: Path, explicit: bool) -> list[str]:
    """Checks that need the run directory: ``resume`` and an existing run's checkpoints."""
    problems = []
    resume = cfg.get("resume")
    if resume == "auto" and not explicit:
        problems.append("resume=auto needs the run directory to continue: add run_dir=<dir>")
    else:
        try:
            resume_checkpoint(resume, run_dir / CHECKPOINTS_DIR)
        except UserError as e:
            problems.append(str(e))
    if explicit and not writable(run_dir):  # else it lies under paths.output_root, checked already
        problems.append(f"run directory is not writable: {run_dir}")
    return problems


def validate_composed(stage: str, cfg, warn: bool = False) -> list[str]:
    """The stage validator's problems, as a list (empty: valid). Its warnings are muted unless
    ``warn`` (the job validates again inside Hydra, where they are logged once)."""
    logger = logging.getLogger("simpo_cli")
    level = logger.level
    if not warn:
        logger.setLevel(logging.ERROR)
    try:
        validate_stage(stage, cfg)
    except ConfigError as e:
        return list(e.problems)
    except UserError as e:
        return [str(e)]
    finally:
        logger.setLevel(level)
    return []


def preflight(stage: str, config_name: str, args: list[str], warn: bool = False,
              check: Callable[[str, object, bool], list[str]] = validate_composed,
              resolve: "Callable[[str, object], Sources] | None" = None) -> Plan:
    """Compose + validate before Hydra starts the job. Raises ``ConfigError`` (all problems).
    ``check(stage, cfg, warn)`` lists a composed config's problems (``validate_composed``; an
    experiment's is ``stages/chain.stage_problems``, which checks every stage of its chain).
    ``resolve(stage, cfg)`` resolves a valid config's models (``stages/lifecycle.stage_sources``)
    into ``Plan.sources`` (``Plan.job_sources`` under ``-m``); its ``UserError`` (one line) is
    raised as it is. Without ``resolve``, or with ``--cfg``/``--help``, nothing is resolved."""
    args = group_overrides(config_name, handoff_overrides(config_name, translate_run_dir(args)))
    flags, overrides = split_args(args)
    if _NO_RUN_FLAGS & set(flags):
        if {"--cfg", "-c"} & set(flags):
            cfg = compose_config(config_name, overrides)  # one-line errors for --cfg too
            if config_name == "config" and not {"-m", "--multirun"} & set(flags):
                # Hydra prints what it composes: the published values it cannot know go in as keys
                _, values = published_values(cfg, overrides)
                args = flags + overrides + [f"objective.{k}={v}" for k, v in values.items()]
        return Plan(args)
    if {"-m", "--multirun"} & set(flags):
        return _preflight_sweep(stage, config_name, args, overrides, warn, check, resolve)
    cfg = compose_config(config_name, overrides, hydra_cfg=True)
    try:
        run_dir = Path(OmegaConf.select(cfg, "hydra.run.dir")).expanduser().absolute()
    except Exception as e:  # noqa: BLE001 - a bad interpolation in paths.* or hydra.run.dir
        raise ConfigError([f"hydra.run.dir: {hydra_error_line(e)}"]) from None
    # A run directory a rerun finds again: given on the command line, or not time-stamped
    # (generate-pairs' is named after its settings), so resume=auto can continue it.
    stamped = "${now:" in str(OmegaConf.to_container(cfg.hydra.run, resolve=False).get("dir", ""))
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.set_struct(cfg, True)
    explicit = any(o.startswith("hydra.run.dir=") for o in overrides) or not stamped
    problems = check(stage, cfg, warn) + run_dir_problems(cfg, run_dir, explicit)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    sources = resolve(stage, cfg) if resolve is not None else None
    pinned = [a for a in args if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={quote(str(run_dir))}"]
    root = next((p for p in run_dir.parents if p.exists()), None)
    return Plan(pinned, run_dir, run_dir.exists(), root, cfg, sources=sources)


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _sweeper(config_name: str, overrides: list) -> tuple[str | None, list[str]]:
    """The sweeper a ``-m`` command runs (its ``_target_``) and a sweep file's ``hydra.sweeper.params``
    as ``key=values`` overrides, composed from the command line's fixed overrides (a sweep over
    sweep files names none: ``(None, [])``)."""
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    if any(o.is_sweep_override() and o.get_key_element().lstrip("+~") == "sweep" for o in overrides):
        return None, []
    try:
        sweeper = _compose(config_name, fixed, hydra_cfg=True).hydra.sweeper
    except Exception:  # noqa: BLE001 - e.g. a sweeper plugin not installed: Hydra says so when it runs
        return None, []
    params = sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=True) if params is not None else {}
    return sweeper.get("_target_"), [f"{k}={v}" for k, v in params.items()]


def _preflight_sweep(stage: str, config_name: str, args: list[str], overrides: list[str],
                     warn: bool = False, check=validate_composed, resolve=None) -> Plan:
    """Validate (and resolve the models of) each job of a grid, at most ``MAX_SWEEP_CHECKS``: the
    command line's sweeps and a sweep file's ``hydra.sweeper.params``, combined as Hydra's basic
    sweeper combines them (the command line wins per key). A search sweeper's trials (Optuna) are
    not known yet: they, and the jobs past the cap, validate and resolve at their start
    (``Plan.sources_for`` finds none for them)."""
    try:
        register_configs()
        GlobalHydra.instance().clear()
        # The config loader lets glob(...) sweeps (objective='glob(*)') list a group's options.
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
            parsed = parser.parse_overrides(overrides)
        target, params = _sweeper(config_name, parsed)
        if target not in (None, BASIC_SWEEPER) or any(o.is_sweep_override() and not o.is_discrete_sweep()
                                                      for o in parsed):
            return Plan(args, validated=False)  # a search sweeper's trials (Optuna)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
            parsed = parser.parse_overrides(params + overrides)
            jobs = BasicSweeper.split_arguments(parsed, None)[0]
            hydra_keys = {o.get_key_element() for o in parsed if o.is_hydra_override()}
    except Exception as e:  # noqa: BLE001
        if os.environ.get("SIMPO_DEBUG"):
            raise
        raise ConfigError([hydra_error_line(e)]) from None
    problems: list[str] = []
    job_sources, checked = {}, set()
    for job in jobs[:MAX_SWEEP_CHECKS]:
        key = tuple(o for o in job if o.partition("=")[0] not in hydra_keys)  # as Hydra names the job
        try:
            cfg = compose_config(config_name, job)
        except ConfigError as e:
            problems += e.problems
            continue
        found = check(stage, cfg, warn)
        problems += found
        if found:
            continue
        checked.add(key)
        try:
            if resolve is not None:
                job_sources[key] = resolve(stage, cfg)
        except UserError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return Plan(args, job_sources=job_sources, checked_jobs=checked)
