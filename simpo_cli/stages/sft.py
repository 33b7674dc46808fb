"""``simpo sft``: supervised fine-tuning on conversations, loss on assistant tokens only.

The paper's Base setting fine-tunes a base model on UltraChat-200k before preference optimisation;
``<run dir>/model`` (weights + tokenizer with its chat template) is what ``simpo train`` and the
other stages take as ``model.name_or_path`` (the run directory itself works too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DataCollatorWithFlattening, set_seed

from simpo_cli.data.cache import data_fingerprint
from simpo_cli.data.sft import IGNORE_INDEX, SFTCollator, build_sft_dataset, ensure_chat_template, split_heldout
from simpo_cli.evaluation.plots import training_curves
from simpo_cli.models import adapters
from simpo_cli.models.loading import (ModelSource, load_model, load_tokenizer, model_fingerprint, model_source,
                                      use_source)
from simpo_cli.run.rundir import RunDir, open_run
from simpo_cli.training.common import save_model, setup_wandb, training_arguments, wandb_run
from simpo_cli.training.reliability import prepare_resume
from simpo_cli.training.trainer import MetricsJsonlCallback, SFTTrainer

log = logging.getLogger(__name__)


@dataclass
class SFTResult:
    run_dir: Path
    steps: int
    final_loss: float | None
    heldout_before: float | None  # mean NLL per held-out assistant token (nats), before training
    heldout_after: float | None
    heldout_size: int
    heldout_source: str  # "<eval_split>" or "<eval_size> of <split>"

    @property
    def heldout_reduction(self) -> float | None:
        """Relative drop of the held-out loss: 0.3 = 30% lower after training."""
        if self.heldout_before is None or self.heldout_after is None:
            return None
        return 1.0 - self.heldout_after / self.heldout_before


def assistant_token_loss(trainer, dataset) -> float:
    """Mean negative log-likelihood (nats) per assistant token over all of ``dataset``.

    Token-weighted over the whole set (a long reply counts for its length), unlike Trainer's
    ``eval_loss``, which averages per-batch means. The model's own loss is a mean over the batch's
    scored tokens (``labels[:, 1:] != -100``), so mean x count is the batch's sum. Summed across
    processes.
    """
    model = trainer.model
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=trainer.args.device)
    for batch in trainer.get_eval_dataloader(dataset):
        batch = trainer._prepare_inputs(batch)
        count = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        with torch.no_grad():
            loss = model(**batch).loss
        total += torch.stack([loss.double() * count, count.double()])
    model.train(was_training)
    total = trainer.accelerator.reduce(total, reduction="sum")
    return (total[0] / total[1].clamp(min=1)).item()


def _collator(cfg, tokenizer):
    if cfg.hparams.packing:
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
    return SFTCollator(tokenizer.pad_token_id)


def model_sources(cfg) -> dict[str, ModelSource]:
    """The model ``run_sft`` loads, resolved once: ``policy`` (``model.*``). Pure: preflight calls it."""
    return {"policy": model_source(cfg.model)}


def run_sft(cfg, run_dir: str | Path, sources: dict[str, ModelSource] | None = None) -> SFTResult:
    """Fine-tune ``cfg.model`` on ``cfg.data`` (assistant tokens only); everything lands in ``run_dir``.

    ``sources``: as preflight resolved them (``model_sources``); ``None`` resolves them here.
    Raises ``ConfigError``/``UserError``/``DataError`` for user mistakes (before any model loads
    where possible). Returns the step count, the final training loss and the held-out
    assistant-token loss before and after training.
    """
    source = use_source(cfg.model, (sources if sources is not None else model_sources(cfg))["policy"])
    run = RunDir(run_dir)
    checkpoint = prepare_resume(cfg, run)
    with open_run(run, cfg, "sft"), wandb_run(cfg):
        run.update(model_source={"policy": source.as_dict()})
        if checkpoint:
            run.update(resumed_from=checkpoint)
        set_seed(cfg.seed)
        tokenizer = load_tokenizer(cfg.model, source)
        if ensure_chat_template(tokenizer, cfg.default_chat_template):
            log.info("tokenizer has no chat template: using default_chat_template=%s (saved with the model)",
                     cfg.default_chat_template if len(cfg.default_chat_template) < 40 else "<custom>")
        hp, data = cfg.hparams, cfg.data
        train_ds, stats = build_sft_dataset(data, tokenizer, hp.max_length, cfg.paths.cache_dir)
        if data.eval_split:
            eval_ds, _ = build_sft_dataset(data, tokenizer, hp.max_length, cfg.paths.cache_dir,
                                           split=data.eval_split)
            heldout_source = data.eval_split
        else:
            train_ds, eval_ds = split_heldout(train_ds, data.eval_size, cfg.seed)
            heldout_source = f"{len(eval_ds)} of {data.split} (data.eval_size={data.eval_size})"
        train_ds, eval_ds = train_ds.remove_columns("index"), eval_ds.remove_columns("index")
        model = adapters.wrap(load_model(cfg.model, tokenizer, cfg.adapter, source), cfg.adapter,
                              cfg.trainer.gradient_checkpointing)
        run.update(data={"fingerprint": data_fingerprint(data, data.split), **stats.as_dict(),
                         "train": len(train_ds), "heldout": len(eval_ds), "heldout_source": heldout_source},
                   model={"name": cfg.model.name, "name_or_path": cfg.model.name_or_path,
                          "fingerprint": model_fingerprint(cfg.model, model, source), "adapter": cfg.adapter.name,
                          **adapters.parameter_counts(model)},
                   chat_template=tokenizer.chat_template)
        setup_wandb(cfg, run)
        trainer = SFTTrainer(
            model=model,
            args=training_arguments(cfg, run),
            data_collator=_collator(cfg, tokenizer),
            train_dataset=train_ds,
            processing_class=tokenizer,
            callbacks=[MetricsJsonlCallback(run.metrics)],
            nan_skip_budget=cfg.trainer.nan_skip_budget,
        )
        before = after = None
        if cfg.trainer.evaluate:
            before = assistant_token_loss(trainer, eval_ds)
            trainer.log({"heldout_loss": before})
        output = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.raise_if_interrupted(run.path)
        if cfg.trainer.evaluate:
            after = assistant_token_loss(trainer, eval_ds)
            trainer.log({"heldout_loss": after})
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        if trainer.is_world_process_zero():
            training_curves(run.metrics, run.path / "curves.png", f"{cfg.model.name}, sft: {run.path.name}")
        if cfg.trainer.save_model:
            # every rank: a collective under ZeRO-3/FSDP
            save_model(trainer, tokenizer, run.model_dir, cfg.adapter)
        result = SFTResult(run.path, output.global_step, losses[-1] if losses else output.training_loss, before, after,
                           len(eval_ds), heldout_source)
        run.finish("completed", steps=result.steps, final_loss=result.final_loss,
                   heldout_loss_before=before, heldout_loss_after=after,
                   heldout_reduction=result.heldout_reduction)
        return result

