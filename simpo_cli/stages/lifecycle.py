"""How a stage command runs, the same for every stage (``StageSpec`` rows of ``stages/spec.py``):

1. ``preflight`` composes and validates the config (``config/checks.validate_stage``, once) before
   any run directory exists, then resolves the stage's models (``model.*`` and its reference's)
   into frozen ``models.loading.ModelSource`` values (``stage_sources``: the stage module's
   ``model_sources``); a mistake in either is one line and exit code 2;
2. ``hydra.main`` makes the run directory and calls the stage's task: ``run(cfg, run_dir,
   sources=...)`` of the stage module with the sources preflight resolved for this job, then its
   summary; the stage names its model after the source (``use_source``, before ``config.yaml`` is
   written), records the sources in ``meta.json`` (``model_source``) and hands them to every
   loader. Multirun bookkeeping (``sweeps/job.py``) and the ``accelerate`` re-launch
   (``run/launch.py``, whose every process runs this whole sequence, preflight included) wrap the
   task where the stage supports them. The stage resolves its models itself at its start, with
   the same ``model_sources``, only where preflight resolved none for the job: a search-sweep
   trial (Optuna), a job of a sweep file's ``hydra.sweeper.params`` or past
   ``preflight.MAX_SWEEP_CHECKS``, a job Hydra runs in another process than the one that ran
   preflight, and direct calls of the stage function. ``simpo run``'s steps each run as their
   own ``simpo <stage>`` command, so a step that takes an earlier step's model resolves it in its
   own preflight, once that model exists;
3. a user mistake inside the job removes the run directory this command created (never one that
   existed before) and exits 2; ``SIMPO_DEBUG=1`` re-raises instead.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import hydra
from hydra.core.hydra_config import HydraConfig

from simpo_cli.config.checks import validate_stage
from simpo_cli.config.recipes import finish
from simpo_cli.config.schema import CONF_DIR
from simpo_cli.config.store import register_configs
from simpo_cli.data.preference import check_preference_data
from simpo_cli.errors import UserError
from simpo_cli.models.loading import load_tokenizer
from simpo_cli.run.launch import is_main_process, launches, num_processes
from simpo_cli.run.preflight import preflight
from simpo_cli.stages import summaries
from simpo_cli.stages.chain import stage_problems
from simpo_cli.stages.spec import BY_NAME, StageSpec
from simpo_cli.sweeps.job import failed_jobs, sweep_job
from simpo_cli.training.common import gradient_accumulation

_PLAN = None  # preflight.Plan of the running command: lets a failed job remove its fresh run dir


def fail(message: str, code: int = 2) -> None:
    print(f"simpo: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def guard(fn: Callable) -> Callable:
    """Turn user mistakes into one line and exit code 2 (SIMPO_DEBUG=1 re-raises)."""

    def wrapped(cfg):
        try:
            return fn(cfg)
        except UserError as e:
            if not e.keep_outputs:
                remove_fresh_run_dir()
            if os.environ.get("SIMPO_DEBUG"):
                raise
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:  # Ctrl-C outside the training loop (inside it, a checkpoint is written)
            if os.environ.get("SIMPO_DEBUG"):
                raise
            fail("interrupted by SIGINT outside the training loop (no checkpoint written)", 130)

    return wrapped


def remove_fresh_run_dir() -> None:
    """Delete the run directory this command created (and the empty parents it created), so a
    user mistake leaves no partial outputs. Never touches a directory that existed before."""
    plan = _PLAN
    if plan is None or plan.run_dir is None or plan.existed:
        return
    try:
        out = Path(HydraConfig.get().runtime.output_dir).absolute()
    except Exception:  # noqa: BLE001 - not inside a Hydra job
        return
    if out != plan.run_dir:
        return
    shutil.rmtree(out, ignore_errors=True)
    for parent in out.parents:
        if parent == plan.root or plan.root is None or plan.root not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def precheck_train(cfg) -> None:
    """What only the parent of a distributed run can check: the global batch divides by
    per-device batch x the processes about to start (the config itself was validated in preflight)."""
    gradient_accumulation(cfg.hparams, world=num_processes(cfg))


def stage_module(spec: StageSpec):
    """The stage's module. What its import prints goes to the debug log, not stdout: with
    ``WANDB_MODE=offline`` set, transformers prints "[INFO] Running in WANDB offline mode" as it
    loads its integrations, and stdout carries what ``--cfg job`` prints and the run's summary
    (stderr, a user mistake's one line)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        module = importlib.import_module(spec.module)
    if printed.getvalue().strip():
        logging.getLogger(__name__).debug("importing %s printed: %s", spec.module, printed.getvalue().strip())
    return module


def stage_sources(stage: str, cfg) -> dict:
    """The models ``stage`` loads, resolved (role -> ``models.loading.ModelSource``) by its module's
    ``model_sources`` (``StageSpec.sources``); ``{}`` for a stage that loads none. Preflight's
    ``resolve``. Raises ``UserError`` for a model that cannot be resolved."""
    spec = BY_NAME[stage]
    if spec.sources is None:
        return {}
    return getattr(stage_module(spec), spec.sources)(cfg)


def make_task(spec: StageSpec) -> Callable:
    """The Hydra task of a stage: run it in the job's directory, print its summary (rank 0)."""
    run = getattr(stage_module(spec), spec.run)
    printer, value = getattr(summaries, spec.printer), getattr(summaries, spec.value)

    def task(cfg):
        hc = HydraConfig.get()
        finish(cfg, spec.config, hc.overrides.task)  # as preflight composed it: the published values
        if _PLAN is None or not _PLAN.checked(hc.overrides.task):  # a search trial, a job past the cap or on another host
            validate_stage(spec.name, cfg)
        kwargs = {}
        if spec.sources:  # the models preflight resolved for this job (None: the stage resolves them)
            kwargs["sources"] = _PLAN.sources_for(hc.overrides.task) if _PLAN is not None else None
        result = run(cfg, hc.runtime.output_dir, **kwargs)
        if is_main_process():  # one summary per run, not one per process
            printer(result)
        return value(result, cfg)

    if spec.distributed:
        task = launches(spec.name, precheck=precheck_train if spec.name == "train" else None)(task)
    if spec.sweeps:
        task = sweep_job(task)  # multirun: skip completed jobs, record a failed one and go on
    return guard(task)


def run_stage(name: str, args: list[str]) -> None:
    """``simpo <name> ARGS``: preflight, then Hydra runs the stage's task; exits 1 if a sweep job failed."""
    global _PLAN
    spec = BY_NAME[name]
    try:  # compose + validate before Hydra creates the run directory (a bad recipe file is one line too)
        register_configs()
        _PLAN = preflight(spec.name, spec.config, args, check=stage_problems, resolve=stage_sources)
    except UserError as e:
        if os.environ.get("SIMPO_DEBUG"):
            raise
        fail(str(e), e.exit_code)
    saved = sys.argv
    sys.argv = [f"simpo-{spec.name}", *_PLAN.args]
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=spec.config)(make_task(spec))()
    finally:
        sys.argv = saved
    failed = failed_jobs()
    if failed:
        fail(f"{len(failed)} sweep job(s) failed: "
             + ", ".join(f"#{j.get('job')} ({' '.join(j.get('overrides', []))})" for j in failed), 1)


def validate(stage: str, args: list[str], check_data: bool) -> None:
    """``simpo validate``: every check a run makes before loading a model; reads the data too."""
    def check(_):
        logging.basicConfig(level=logging.WARNING, format="simpo: warning: %(message)s")
        register_configs()
        plan = preflight(stage, BY_NAME[stage].config, args, warn=True, check=stage_problems,
                         resolve=stage_sources)
        cfg = plan.cfg
        print(f"config: ok ({stage}" + (f", run directory {plan.run_dir}" if plan.run_dir else "") + ")")
        if check_data and cfg is not None and cfg.get("data") is not None and cfg.get("model") is not None:
            splits = [cfg.data.split] + ([cfg.data.eval_split] if cfg.data.get("eval_split") else [])
            tokenizer = load_tokenizer(cfg.model, (plan.sources or {}).get("policy"))
            for split in splits:
                source, stats = check_preference_data(cfg.data, tokenizer, cfg.hparams, split)
                print(f"data: ok ({source}: {stats.records} records, {stats.kept} pairs kept, "
                      f"dropped {dict(stats.dropped) or 'none'})")

    guard(check)(None)
