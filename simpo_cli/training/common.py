"""What the training stages (``train``, ``sft``) share around transformers' Trainer: the training
arguments, the batch arithmetic, the wandb setup and teardown, and saving the final model."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from transformers import TrainingArguments

from simpo_cli.errors import UserError
from simpo_cli.models import adapters
from simpo_cli.training.batching import LENGTH_COLUMN
from simpo_cli.training.precision import use_cpu


def gradient_accumulation(hp, world: int | None = None) -> int:
    """Micro-batches per optimizer step: ``global_batch_size / (per_device_train_batch_size x world)``
    when the global batch is set, else ``gradient_accumulation_steps``. ``world`` defaults to the
    launcher's ``WORLD_SIZE`` (1 without one). Raises ``UserError`` if it does not divide."""
    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    if hp.get("global_batch_size") is None:
        return hp.gradient_accumulation_steps
    per_step = hp.per_device_train_batch_size * world
    if hp.global_batch_size % per_step:
        raise UserError(f"hparams.global_batch_size ({hp.global_batch_size}) is not divisible by "
                        f"per_device_train_batch_size x processes ({per_step})")
    return hp.global_batch_size // per_step


def training_arguments(cfg, run, group_by_length: bool | None = None) -> TrainingArguments:
    """transformers' ``TrainingArguments`` of a training stage (``train``, ``sft``): ``cfg.hparams`` and
    ``cfg.trainer``, checkpoints under ``run.checkpoints``, the run named ``<model>/<run dir>``.
    ``group_by_length``: the resolved ``batching.length_grouping`` (``run_train`` passes it); None
    reads ``trainer.group_by_length`` with null = off. An adapter scales the learning rate by
    ``adapter.learning_rate_scale``."""
    hp, tr = cfg.hparams, cfg.trainer
    report_to = ["wandb"] if cfg.logger.name == "wandb" else "none"
    return TrainingArguments(
        output_dir=str(run.checkpoints),
        run_name=f"{cfg.model.name}/{run.path.name}",
        seed=cfg.seed,
        learning_rate=hp.learning_rate * adapters.learning_rate_scale(cfg),
        lr_scheduler_type=hp.lr_scheduler_type,
        warmup_steps=hp.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        optim=hp.optim,
        num_train_epochs=hp.num_train_epochs,
        max_steps=tr.max_steps,
        per_device_train_batch_size=hp.per_device_train_batch_size,
        per_device_eval_batch_size=hp.per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation(hp),
        gradient_checkpointing=tr.gradient_checkpointing,
        bf16=tr.bf16,
        fp16=tr.fp16,
        use_cpu=use_cpu(tr),  # bf16 autocast on a CPU-only machine needs it
        logging_steps=tr.logging_steps,
        save_strategy="steps" if tr.save_steps > 0 else "no",
        save_steps=tr.save_steps if tr.save_steps > 0 else 500,
        save_total_limit=tr.save_total_limit,
        dataloader_num_workers=tr.dataloader_num_workers,
        remove_unused_columns=False,
        report_to=report_to,
        disable_tqdm=not tr.progress_bar,
        train_sampling_strategy="group_by_length" if (tr.get("group_by_length") if group_by_length is None
                                                      else group_by_length) else "random",
        length_column_name=LENGTH_COLUMN,
    )


def setup_wandb(cfg, run) -> None:
    """With ``logger=wandb``, point wandb at ``cfg.logger`` (project, entity, mode) and the run directory
    through its environment variables (the Trainer's wandb callback reads them)."""
    if cfg.logger.name != "wandb":
        return
    os.environ.setdefault("WANDB_MODE", cfg.logger.mode)
    os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
    os.environ.setdefault("WANDB_DIR", str(run.path))
    if cfg.logger.entity:
        os.environ.setdefault("WANDB_ENTITY", cfg.logger.entity)


@contextmanager
def wandb_run(cfg) -> Iterator[None]:
    """Close the wandb run (``finish_wandb``) however the body ends."""
    try:
        yield
    finally:
        finish_wandb(cfg)


def finish_wandb(cfg) -> None:
    """Close the wandb run ``setup_wandb`` started (no-op without ``logger=wandb``)."""
    if cfg.logger.name == "wandb":
        import wandb

        wandb.finish()


def save_model(trainer, tokenizer, model_dir: Path, adapter_cfg=None) -> None:
    """Save the trained weights and the tokenizer to ``model_dir``, replacing it atomically (written
    to ``<model_dir>.tmp``, then renamed). A LoRA run saves its adapter there; with
    ``adapter.merge=true`` the adapter goes to ``<run>/adapter`` and ``model_dir`` holds the merged
    full model (``adapters.save_merged``).

    Every process must call it: under ZeRO-3/FSDP ``trainer.save_model`` gathers the sharded weights
    (a collective); only the main process (``trainer.is_world_process_zero()``) writes files."""
    model_dir = Path(model_dir)
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(tmp))
        if adapters.enabled(adapter_cfg) and adapter_cfg.merge:
            adapters.save_merged(trainer.model, tokenizer, tmp, model_dir.parent / adapters.ADAPTER_DIR)
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp.rename(model_dir)
