"""``simpo train``: preference optimisation with any registered objective."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from simpo_cli.batching import LENGTH_COLUMN, add_length_column
from simpo_cli.data.preference import PreferenceCollator, build_preference_dataset, data_fingerprint
from simpo_cli.modeling import load_model, load_tokenizer, model_fingerprint
from simpo_cli.objectives import get_objective
from simpo_cli.rundir import RunDir
from simpo_cli.validate import resolve_hparams, validate_train

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float | None
    before: dict = field(default_factory=dict)  # pair metrics before training
    after: dict = field(default_factory=dict)  # ... and after
    pairs_split: str = "train"


def objective_kwargs(cfg) -> dict:
    """The keyword arguments of the objective function: its YAML settings plus β (and γ) from hparams."""
    spec = get_objective(cfg.objective.name)
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.objective, resolve=True).items() if k != "name"}
    for name in spec.uses:
        kwargs[name] = cfg.hparams[name]
    return kwargs


def gradient_accumulation(hp) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if hp.get("global_batch_size") is None:
        return hp.gradient_accumulation_steps
    per_step = hp.per_device_train_batch_size * world
    if hp.global_batch_size % per_step:
        from simpo_cli.errors import UserError

        raise UserError(f"hparams.global_batch_size ({hp.global_batch_size}) is not divisible by "
                        f"per_device_train_batch_size x processes ({per_step})")
    return hp.global_batch_size // per_step


def training_arguments(cfg, run: RunDir):
    from transformers import TrainingArguments

    hp, tr = cfg.hparams, cfg.trainer
    report_to = ["wandb"] if cfg.logger.name == "wandb" else "none"
    return TrainingArguments(
        output_dir=str(run.checkpoints),
        run_name=run.path.name,
        seed=cfg.seed,
        learning_rate=hp.learning_rate,
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
        use_cpu=tr.use_cpu,
        logging_steps=tr.logging_steps,
        save_strategy="steps" if tr.save_steps > 0 else "no",
        save_steps=tr.save_steps if tr.save_steps > 0 else 500,
        dataloader_num_workers=tr.dataloader_num_workers,
        remove_unused_columns=False,
        report_to=report_to,
        disable_tqdm=not tr.progress_bar,
        train_sampling_strategy="group_by_length" if tr.get("group_by_length") else "random",
        length_column_name=LENGTH_COLUMN,
    )


def _setup_wandb(cfg, run: RunDir) -> None:
    if cfg.logger.name != "wandb":
        return
    os.environ.setdefault("WANDB_MODE", cfg.logger.mode)
    os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
    os.environ.setdefault("WANDB_DIR", str(run.path))
    if cfg.logger.entity:
        os.environ.setdefault("WANDB_ENTITY", cfg.logger.entity)


def run_train(cfg, run_dir: str | Path) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.objective``; everything lands in ``run_dir``.

    Raises ``ConfigError``/``UserError``/``DataError`` for user mistakes (before any model loads
    where possible). Returns the step count, final loss and the pair metrics before and after.
    """
    from transformers import set_seed

    from simpo_cli.trainer import MetricsJsonlCallback, PreferenceTrainer

    resolve_hparams(cfg)
    validate_train(cfg)
    spec = get_objective(cfg.objective.name)
    run = RunDir(run_dir)
    run.start(cfg, "train")
    try:
        set_seed(cfg.seed)
        tokenizer = load_tokenizer(cfg.model)
        train_ds, stats = build_preference_dataset(cfg.data, tokenizer, cfg.hparams, cfg.paths.cache_dir)
        eval_ds = None
        if cfg.data.eval_split:
            eval_ds, _ = build_preference_dataset(cfg.data, tokenizer, cfg.hparams, cfg.paths.cache_dir,
                                                  split=cfg.data.eval_split)
        if cfg.trainer.group_by_length:
            # transformers' eval sampler groups by length too, so the eval pairs need the column.
            train_ds = add_length_column(train_ds)
            eval_ds = add_length_column(eval_ds) if eval_ds is not None else None
        model = load_model(cfg.model, tokenizer)
        run.update(data={"fingerprint": data_fingerprint(cfg.data, cfg.data.split), **stats.as_dict()},
                   model={"fingerprint": model_fingerprint(cfg.model, model),
                          "parameters": sum(p.numel() for p in model.parameters())})
        _setup_wandb(cfg, run)
        trainer = PreferenceTrainer(
            model=model,
            args=training_arguments(cfg, run),
            data_collator=PreferenceCollator(tokenizer.pad_token_id),
            train_dataset=train_ds,
            processing_class=tokenizer,
            callbacks=[MetricsJsonlCallback(run.metrics)],
            objective=spec,
            objective_kwargs=objective_kwargs(cfg),
            padding_free=cfg.trainer.padding_free,
        )
        pairs = eval_ds if eval_ds is not None else train_ds
        before = trainer.pair_metrics(pairs) if cfg.trainer.evaluate else {}
        output = trainer.train()
        after = trainer.pair_metrics(pairs) if cfg.trainer.evaluate else {}
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        if cfg.trainer.save_model and trainer.is_world_process_zero():
            tmp = run.path / "model.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            shutil.rmtree(run.model_dir, ignore_errors=True)
            tmp.rename(run.model_dir)
        final_loss = losses[-1] if losses else output.training_loss
        result = TrainResult(run.path, output.global_step, final_loss, before, after,
                             cfg.data.eval_split or cfg.data.split)
        run.finish("completed", steps=result.steps, final_loss=result.final_loss,
                   pairs_before=before, pairs_after=after)
        return result
    except BaseException as e:
        run.finish("failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if cfg.logger.name == "wandb":
            import wandb

            wandb.finish()
