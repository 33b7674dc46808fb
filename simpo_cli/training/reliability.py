"""Surviving interruptions: atomic checkpoints, ``resume=auto``, SIGTERM/SIGINT and the NaN guard.

Any stage built on transformers' ``Trainer`` adopts all of it with one base class::

    class MyTrainer(ReliableTrainerMixin, Trainer): ...
    trainer = MyTrainer(..., nan_skip_budget=cfg.trainer.nan_skip_budget)
    checkpoint = resume_checkpoint(cfg.get("resume"), run.checkpoints)  # before trainer.train
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.raise_if_interrupted(run.path)                             # after it returns

Resuming is transformers' own: ``train(resume_from_checkpoint=...)`` restores the weights,
optimizer, scheduler, RNG states and the data order (it skips the batches already seen), so a
resumed CPU run reproduces an uninterrupted one's loss trace exactly. What is added here:

- checkpoints are written to ``checkpoints/.staging/checkpoint-N`` and renamed into place only
  when complete, so ``checkpoints/checkpoint-*`` never holds a half-written checkpoint (a kill
  mid-save leaves only ``.staging``, which the next run deletes);
- SIGTERM/SIGINT set a flag; at the end of the current optimizer step the trainer writes a
  checkpoint and stops, and ``raise_if_interrupted`` turns that into ``Interrupted`` (one line,
  exit 128 + signal). A second signal kills the process at once;
- a non-finite loss (any micro-batch) or gradient norm stops the run before the optimizer step
  (``TrainingDiverged``: step and example indices, exit 3), or, within ``nan_skip_budget``, drops
  that step's gradient and goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import TrainerCallback
from transformers.trainer_utils import rotate_checkpoints

from simpo_cli.errors import Interrupted, TrainingDiverged, UserError
from simpo_cli.files import CONFIG_FILE, META_FILE, write_atomic

log = logging.getLogger(__name__)

STAGING = ".staging"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
RESUME_MODES = ("auto", "never")


def complete_checkpoints(checkpoints_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (only complete ones are ever renamed into
    ``checkpoints/``; a checkpoint also needs its ``trainer_state.json``, written last)."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := CHECKPOINT_RE.match(p.name)) and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


def resume_checkpoint(resume: str | None, checkpoints_dir: str | Path) -> str | None:
    """The checkpoint to resume from: ``auto`` = the newest complete one (None when there is none:
    a fresh start, so the same command works for the first submission and every requeue);
    ``never``/None = start fresh, refusing a run directory that already has checkpoints;
    a path = that checkpoint. Raises ``UserError``."""
    existing = complete_checkpoints(checkpoints_dir)
    if resume in (None, "never"):
        if existing:
            raise UserError(f"{Path(checkpoints_dir).parent} already has checkpoints (newest "
                            f"{existing[-1].name}); pass resume=auto to continue that run or choose "
                            f"another run_dir")
        return None
    if resume == "auto":
        if existing:
            log.info("resume=auto: continuing from %s", existing[-1])
            return str(existing[-1])
        meta = Path(checkpoints_dir).parent / META_FILE
        if meta.is_file() and json.loads(meta.read_text()).get("status") == "completed":
            raise UserError(f"resume=auto: {meta.parent} holds a completed run without checkpoints; "
                            f"nothing to resume (choose another run_dir to train again)")
        log.info("resume=auto: no checkpoint in %s yet; starting fresh", checkpoints_dir)
        return None
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise UserError(f"resume={resume}: not a complete checkpoint directory (no trainer_state.json); "
                        f"use resume=auto or a checkpoints/checkpoint-N directory")
    return str(path)


def clear_staging(checkpoints_dir: str | Path) -> None:
    """Delete what a killed save left behind (main process only)."""
    shutil.rmtree(Path(checkpoints_dir) / STAGING, ignore_errors=True)


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Keep only the complete records with ``step <= max_step`` (the log of a resumed run then
    continues exactly where its checkpoint was taken; 0 restarts it). Atomic."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the line a SIGKILL cut short
            continue
        if record.get("step", 0) <= max_step:
            keep.append(line)
    write_atomic(path, "".join(line + "\n" for line in keep))


def checkpoint_step(checkpoint: str | Path | None) -> int:
    m = CHECKPOINT_RE.match(Path(checkpoint).name) if checkpoint else None
    return int(m.group(1)) if m else 0


RESUME_SECTIONS = ("seed", "model", "data", "objective", "hparams", "adapter")


def prepare_resume(cfg, run) -> str | None:
    """Where a training stage starts: the checkpoint ``cfg.resume`` names (``resume_checkpoint``),
    after checking the saved config agrees (``check_resume_config``). On the main process
    (``run.main``) it also clears a killed save's staging leftovers and drops the metrics logged
    after that checkpoint (all of them on a fresh start), which are logged again."""
    checkpoint = resume_checkpoint(cfg.get("resume"), run.checkpoints)
    if checkpoint:
        check_resume_config(run.path / CONFIG_FILE, cfg)
    if run.main:
        clear_staging(run.checkpoints)
        truncate_jsonl(run.metrics, checkpoint_step(checkpoint))
    return checkpoint


def check_resume_config(saved_config: str | Path, cfg, sections=RESUME_SECTIONS) -> None:
    """Refuse to resume with a different recipe: every key under ``sections`` must equal the run's
    saved ``config.yaml`` (``trainer.*``, ``logger.*`` and ``paths.*`` may change, e.g. a larger
    ``trainer.max_steps``). Raises ``UserError`` naming the keys that differ."""
    saved_config = Path(saved_config)
    if not saved_config.is_file():
        return
    old = OmegaConf.to_container(OmegaConf.load(saved_config), resolve=False)
    new = OmegaConf.to_container(cfg, resolve=True)

    def flat(d, prefix=""):
        if not isinstance(d, dict):
            return {prefix.rstrip("."): d}
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out

    old_f = {k: v for s in sections if s in old for k, v in flat({s: old[s]}).items()}
    new_f = {k: v for s in sections if s in new for k, v in flat({s: new[s]}).items()}
    diff = [f"{k} ({old_f.get(k)!r} -> {new_f.get(k)!r})" for k in sorted(set(old_f) | set(new_f))
            if old_f.get(k) != new_f.get(k)]
    if diff:
        raise UserError(f"resume: the config differs from the run's {saved_config.name}: "
                        f"{', '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}; resume with the "
                        f"original overrides")


class _SignalCallback(TrainerCallback):
    """Installs the SIGTERM/SIGINT handlers for the duration of ``train`` and turns a received
    signal into "save a checkpoint and stop" at the end of the current optimizer step."""

    def __init__(self, trainer: "ReliableTrainerMixin"):
        self.trainer = trainer
        self.previous: dict[int, object] = {}

    def _handler(self, signum, frame):
        self.trainer.received_signal = signum
        # A second signal is not polite any more: restore the default and let it kill us.
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        log.warning("received %s: writing a checkpoint at the end of this step (send it again to "
                    "stop at once)", signal.Signals(signum).name)

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave signals to whoever owns them
            self.previous.clear()

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer.signal_pending():
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        self.previous.clear()


class ReliableTrainerMixin:
    """Mix into a ``transformers.Trainer`` subclass (before ``Trainer``): atomic checkpoints,
    signal-triggered checkpoint + stop, and the non-finite loss/gradient guard.

    ``nan_skip_budget``: how many optimizer steps with a non-finite loss or gradient may be skipped
    (their gradient dropped) before the run stops with ``TrainingDiverged``; 0 stops at the first.
    The batch's example indices come from the ``index`` column of the inputs, when present.
    """

    def __init__(self, *args, nan_skip_budget: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_skip_budget = nan_skip_budget
        self.nan_skipped: list[dict] = []
        self.received_signal: int | None = None
        self._staging = False
        self._step_bad_loss = False
        self._step_indices: list[int] = []
        self.add_callback(_SignalCallback(self))

    # -- signals ---------------------------------------------------------------------------
    def signal_pending(self) -> bool:
        """Whether any process received SIGTERM/SIGINT (agreed across processes, so every rank
        saves and stops at the same step)."""
        flag = torch.tensor(float(self.received_signal is not None), device=self.args.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        return bool(flag.item())

    def raise_if_interrupted(self, run_dir: str | Path) -> None:
        """After ``train()`` returned: raise ``Interrupted`` if a signal stopped it."""
        if self.received_signal is None:
            return
        name = signal.Signals(self.received_signal).name
        raise Interrupted(f"interrupted by {name} at step {self.state.global_step}: checkpoint "
                          f"{Path(self.args.output_dir) / f'checkpoint-{self.state.global_step}'} "
                          f"written; continue with the same command plus resume=auto "
                          f"run_dir={run_dir}", self.received_signal)

    # -- atomic checkpoints ----------------------------------------------------------------
    def _get_output_dir(self, trial):
        out = super()._get_output_dir(trial)
        return os.path.join(out, STAGING) if self._staging else out

    def _save_checkpoint(self, model, trial):
        final_root = self._get_output_dir(trial)
        name = f"checkpoint-{self.state.global_step}"
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)  # everything lands in checkpoints/.staging/
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # every rank's shards are on disk
        if self.args.should_save:
            target = os.path.join(final_root, name)
            if os.path.isdir(target):  # re-saving the same step (e.g. signal on a save step)
                shutil.rmtree(target)
            os.replace(os.path.join(final_root, STAGING, name), target)
            shutil.rmtree(os.path.join(final_root, STAGING), ignore_errors=True)
            if self.state.best_model_checkpoint and STAGING in self.state.best_model_checkpoint:
                self.state.best_model_checkpoint = self.state.best_model_checkpoint.replace(
                    os.sep + STAGING, "")
            rotate_checkpoints(output_dir=final_root, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()

    # -- non-finite guard ------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        if "index" in inputs:
            self._step_indices.extend(int(i) for i in inputs["index"].reshape(-1).tolist())
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            self._step_bad_loss = True
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm)
        bad_loss = torch.tensor(float(self._step_bad_loss), device=self.args.device)
        if self.accelerator.num_processes > 1:
            bad_loss = self.accelerator.reduce(bad_loss, reduction="sum")
        norm = float(grad_norm) if grad_norm is not None else 0.0
        indices, self._step_indices, self._step_bad_loss = self._step_indices, [], False
        if bad_loss.item() or not math.isfinite(norm):
            self._non_finite(model, "loss" if bad_loss.item() else "gradient", indices)
        return grad_norm

    def _non_finite(self, model, what: str, indices: list[int]) -> None:
        step = self.state.global_step + 1  # the optimizer step being taken (1-based, as logged)
        shown = ", ".join(map(str, indices[:16])) + (", ..." if len(indices) > 16 else "")
        if len(self.nan_skipped) < self.nan_skip_budget:
            model.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient
            self.nan_skipped.append({"step": step, "what": what, "indices": indices})
            log.warning("non-finite %s at step %d (examples %s): step skipped (%d of "
                        "trainer.nan_skip_budget=%d)", what, step, shown, len(self.nan_skipped),
                        self.nan_skip_budget)
            return
        last = complete_checkpoints(self.args.output_dir)
        keep = f"last good checkpoint {last[-1]}" if last else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"non-finite {what} at step {step} (data examples {shown}): stopped before the "
            f"optimizer step; {keep}; lower hparams.learning_rate, check those examples, or allow "
            f"skips with trainer.nan_skip_budget=N")
