"""``simpo run experiment=<name>``: an experiment's chain of stages in one experiment directory.

The chain (``stages/chain.py``) is checked whole in preflight before this runs. Each step then runs
as its own ``simpo <stage> ... run_dir=<experiment dir>/NN-<stage>`` subprocess of the same CLI,
with the hand-offs as run directories (``model=<dir>``, ``data=<dir>``) and its stage's own resume.
Why subprocesses: every step goes through exactly the command a user would type (preflight,
Hydra, its run directory, the ``accelerate`` re-launch of a distributed train), nothing of one
stage (Hydra's global state, a model, CUDA memory) outlives it, and a step is killed with the
runner (``PR_SET_PDEATHSIG`` on Linux), so kill -9 of ``simpo run`` never leaves a stage writing.

A step is done when its own ``meta.json`` says ``completed`` (written atomically by the stage), so
a rerun of the same command skips it, whatever the runner had recorded; any other step that was
started is resumed in its directory (``train``/``sft`` ``resume=auto`` from their newest checkpoint,
``generate-pairs`` from its done shards, ``eval`` from scratch). A step never started is reused
instead of run when another experiment (a sibling directory, e.g. the other jobs of a ``-m`` sweep,
or one named in ``reuse_from``) completed the same step with the same chain up to it (same stages,
resolved overrides and hand-offs): its directory becomes a symlink to that one, so a sweep over
``objective`` or ``learning_rate`` generates its pairs once (``reuse=false`` turns this off).
``experiment.json`` (rewritten
atomically after every change) records the chain: each step's stage, directory, inputs, status,
times and headline metrics (``sweeps/report.stage_metrics``).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from simpo_cli.errors import Interrupted, UserError
from simpo_cli.files import write_json
from simpo_cli.run.rundir import RunDir, RunRecord, now, open_run
from simpo_cli.stages.chain import Step, decide, expand, step_args
from simpo_cli.sweeps.report import EXPERIMENT_FILE, stage_metrics

log = logging.getLogger(__name__)


class StageFailed(UserError):
    """A step exited non-zero; its own error is printed above. The experiment directory stays."""

    keep_outputs = True

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ExperimentResult:
    run_dir: Path
    name: str
    steps: list[dict] = field(default_factory=list)  # experiment.json's "stages"
    ran: list[int] = field(default_factory=list)  # the steps this command ran (the rest: skipped)

    @property
    def metrics(self) -> dict:
        return self.steps[-1]["metrics"] if self.steps else {}


def _chain_record(steps: list[Step]) -> list[dict]:
    """What identifies the chain: a rerun into the same directory must have the same one."""
    return [{"index": s.index, "stage": s.stage, "round": s.round, "dir": s.dir_name,
             "overrides": s.overrides, "inputs": {k: steps[i - 1].dir_name for k, i in s.inputs.items()}}
            for s in steps]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # only written atomically: a foreign file
        raise UserError(f"{path}: not valid JSON; choose another run_dir") from None


def _module() -> str:
    """The CLI module this process runs as (``simpo_cli``, or a wrapper that imports it), so the
    steps run the same program."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None and spec.name not in ("simpo_cli.__main__",) else "simpo_cli"


def _die_with_parent(parent: int):
    """Linux: the child gets SIGKILL when the runner dies (kill -9 included)."""
    def preexec():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec if sys.platform.startswith("linux") else None


def run_step(argv: list[str]) -> int:
    """Run ``python -m <cli> ARGV`` to its end; SIGTERM to the runner is passed on (the stage
    checkpoints and exits 143), SIGINT is left to the stage (a terminal's Ctrl-C reaches both)."""
    proc = subprocess.Popen([sys.executable, "-m", _module(), *argv], preexec_fn=_die_with_parent(os.getpid()))
    old_term = signal.signal(signal.SIGTERM, lambda signum, _: proc.send_signal(signum))
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def _experiment_dirs(where: Path) -> list[Path]:
    """``where`` itself if it holds an experiment, else its subdirectories that do (a sweep)."""
    if (where / EXPERIMENT_FILE).is_file():
        return [where]
    return sorted(p.parent for p in where.glob(f"*/{EXPERIMENT_FILE}")) if where.is_dir() else []


def reusable_step(index: int, chain: list[dict], exp: Path, sources: list[Path]) -> Path | None:
    """The directory of a completed step ``index`` (0-based) of another experiment under ``sources``
    whose chain up to and including that step equals ``chain``'s, or ``None``."""
    prefix = chain[: index + 1]
    for src in sources:
        for other in _experiment_dirs(src):
            if other.resolve() == exp.resolve():
                continue
            try:
                record = json.loads((other / EXPERIMENT_FILE).read_text())
            except ValueError:
                continue
            if record.get("chain", [])[: index + 1] != prefix:
                continue
            target = (other / chain[index]["dir"]).resolve()
            if RunRecord.read(target).status == "completed":
                return target
    return None


def run_experiment(cfg, run_dir: str | Path) -> ExperimentResult:
    """Run (or continue) the experiment ``cfg`` in ``run_dir``. Raises ``UserError`` when
    ``run_dir`` holds another experiment, ``StageFailed``/``Interrupted`` when a step does not
    complete (its outputs stay, a rerun continues it)."""
    exp = Path(run_dir).absolute()
    steps = expand(OmegaConf.to_container(cfg.stages, resolve=True))
    chain = _chain_record(steps)
    path = exp / EXPERIMENT_FILE
    previous = _read_json(path)
    if previous and previous.get("chain") != chain:
        raise UserError(f"{exp} holds an experiment with another chain of stages (see {path}); rerun "
                        "with the same experiment and overrides to continue it, or pass run_dir=<new dir>")
    record = {"name": cfg.name, "experiment_dir": str(exp), "chain": chain,
              "started": previous.get("started", now()), "attempts": previous.get("attempts", 0) + 1,
              "status": "running", "ended": None,
              "stages": [{**c, "status": None, "started": None, "ended": None, "metrics": {}} for c in chain]}
    for old, new in zip(previous.get("stages", []), record["stages"]):
        new.update({k: old.get(k) for k in ("started", "ended", "args", "reused_from") if k in old})

    def refresh(i: int) -> None:
        entry, run = record["stages"][i], RunRecord.read(exp / steps[i].dir_name)
        entry["status"] = run.status
        entry["metrics"] = stage_metrics(run.path, run.meta) if run.status == "completed" else {}

    def save() -> None:
        write_json(path, record)

    sources = ([exp.parent] + [Path(p).expanduser().absolute() for p in cfg.get("reuse_from") or []]
               if cfg.get("reuse", True) else [])
    run = RunDir(exp)
    ran: list[int] = []
    with open_run(run, cfg, "run"):
        for i in range(len(steps)):
            refresh(i)
        save()
        try:
            _run_steps(steps, record, exp, refresh, save, ran, sources)
        except BaseException as e:
            record.update(status="interrupted" if isinstance(e, Interrupted) else "failed", ended=now())
            save()
            raise
        record.update(status="completed", ended=now())
        save()
        result = ExperimentResult(exp, cfg.name, record["stages"], ran)
        run.finish("completed", stages=len(steps), ran=ran, metrics=result.metrics)
        return result


def _run_steps(steps: list[Step], record: dict, exp: Path, refresh, save, ran: list[int],
               sources: list[Path]) -> None:
    """Each step in order: skip the completed, reuse or run the never started, resume the others
    (``run_experiment``)."""
    for i, step in enumerate(steps):
        entry = record["stages"][i]
        action = decide(entry["status"])
        target = None
        if action == "start" and not os.path.lexists(exp / step.dir_name):
            target = reusable_step(i, record["chain"], exp, sources)
        argv = [step.stage, *step_args(step, steps, lambda s: exp / s.dir_name), f"run_dir={exp / step.dir_name}"]
        if target is not None:
            os.symlink(target, exp / step.dir_name, target_is_directory=True)
            refresh(i)
            entry.update(reused_from=str(target), args=argv[1:])  # the command it stands for
            save()
            print(f"simpo run: {step.label}: reused, completed in {target}", file=sys.stderr)
            continue
        if action == "skip":
            print(f"simpo run: {step.label}: completed in {entry['dir']}, skipped", file=sys.stderr)
            continue
        print(f"simpo run: {step.label}: {'resuming' if action == 'resume' else 'starting'}: "
              f"simpo {' '.join(argv)}", file=sys.stderr)
        entry.update(started=entry["started"] or now(), ended=None, args=argv[1:])
        entry["status"] = "running"
        save()
        code = run_step(argv)
        ran.append(step.index)
        refresh(i)
        entry["ended"] = now()
        save()
        if code != 0 or entry["status"] != "completed":
            again = f"rerun the same command to continue ({exp})"
            if code in (128 + signal.SIGTERM, 128 + signal.SIGINT):
                raise Interrupted(f"{step.label} interrupted; {again}", code - 128)
            raise StageFailed(f"{step.label} failed (exit {code}, see its error above); fix the cause "
                              f"and {again}", code if code > 0 else 1)
