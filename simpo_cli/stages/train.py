"""``simpo train``: preference optimisation with any registered objective."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback, set_seed

from simpo_cli.config.checks import resolve_objective
from simpo_cli.config.recipes import announce
from simpo_cli.data.heldout import metric_pairs
from simpo_cli.data.cache import data_fingerprint
from simpo_cli.data.unpaired import build_dataset
from simpo_cli.evaluation import diagnostics
from simpo_cli.evaluation.plots import training_curves
from simpo_cli.models import adapters
from simpo_cli.models.loading import (ModelSource, load_model, load_tokenizer, model_fingerprint, model_source,
                                      use_source)
from simpo_cli.objectives import get_objective
from simpo_cli.objectives.wpo import configured
from simpo_cli.run.launch import is_main_process, world_size
from simpo_cli.run.rundir import RunDir, open_run
from simpo_cli.training.batching import add_length_column, length_grouping
from simpo_cli.training.common import save_model, setup_wandb, training_arguments, wandb_run
from simpo_cli.training.reference import make_collator, prepare_reference, reference_source
from simpo_cli.training.precision import check_precision
from simpo_cli.training.reliability import prepare_resume
from simpo_cli.training.trainer import MetricsJsonlCallback, PreferenceTrainer

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float | None
    before: dict = field(default_factory=dict)  # pair metrics before training
    after: dict = field(default_factory=dict)  # ... and after
    # What before/after are on: PairsInfo.label(), e.g. "1 held-out pairs carved from train (of 16)".
    pairs_split: str = "train"
    # Findings on the pairs before/after and the training log (simpo_cli/evaluation/diagnostics.py).
    diagnostics: dict = field(default_factory=dict)


def batch_plan(hp, args) -> dict:
    """Per-device batch, processes, accumulation and the resulting global batch (pairs per
    optimizer step), as recorded in ``meta.json["batch"]`` and logged at start."""
    world = world_size()
    plan = {"per_device_train_batch_size": args.per_device_train_batch_size, "world_size": world,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch_size": args.per_device_train_batch_size * world * args.gradient_accumulation_steps}
    if is_main_process():
        log.info("batch: %(per_device_train_batch_size)d per device x %(world_size)d process(es) x "
                 "%(gradient_accumulation_steps)d accumulation = %(global_batch_size)d pairs per step", plan)
    return plan


def prepared_in_train(trainer) -> bool:
    """True when the model can only run once ``Trainer.train`` has prepared it: DeepSpeed (the
    engine places it and, under ZeRO-3, installs the hooks that gather its partitioned weights)
    and FSDP (the wrapper shards it)."""
    return bool(trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled)


def _pair_metrics_at_start(trainer, pairs):
    """A callback that scores ``pairs`` at ``on_train_begin``: after the model is prepared, before
    the first optimizer step, so the numbers are the same "before" metrics."""
    class PairMetricsAtStart(TrainerCallback):
        metrics: dict = {}  # set on_train_begin

        def on_train_begin(self, args, state, control, **kwargs):
            self.metrics = trainer.pair_metrics(pairs)

    return PairMetricsAtStart()


def run_diagnostics(cfg, spec, before: dict, after: dict, metrics_path: Path, held_out: bool = True) -> dict:
    """``{"pairs": ..., "findings": [...]}``: the held-out pair metrics before -> after (in the unit
    the objective logs ``logps/*``) and the findings on them and on ``metrics.jsonl``."""
    unit = "nats/token" if spec.logp_reduction == "mean" else "nats/response"
    pairs = diagnostics.pair_diagnostics(before, after, cfg.diagnostics, unit=unit,
                                         pairs="held-out" if held_out else "training-pair")
    findings = pairs.pop("findings", []) + diagnostics.step_findings(
        diagnostics.read_records(metrics_path), cfg.diagnostics)
    return {"pairs": pairs, "findings": findings}


def model_sources(cfg) -> dict[str, ModelSource]:
    """The models ``run_train`` loads, each resolved once: ``policy`` (``model.*``) and, for an
    objective with a reference, ``reference`` (``training.reference.reference_source``). Pure:
    preflight calls it before the run directory exists."""
    policy = model_source(cfg.model)
    spec = configured(get_objective(cfg.objective.name), cfg.objective)
    return {"policy": policy, **({"reference": reference_source(cfg, policy)} if spec.needs_reference else {})}


def run_train(cfg, run_dir: str | Path, sources: dict[str, ModelSource] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` with ``cfg.objective``; everything lands in ``run_dir``.

    ``sources``: the models as preflight resolved them (``model_sources``); ``None`` resolves them
    here. Raises ``ConfigError``/``UserError``/``DataError`` for user mistakes (before any model
    loads where possible). Returns the step count, final loss and the pair metrics before and after.
    """
    resolve_objective(cfg)
    sources = sources if sources is not None else model_sources(cfg)
    source = use_source(cfg.model, sources["policy"])
    spec = configured(get_objective(cfg.objective.name), cfg.objective)  # with its modifiers (WPO)
    run = RunDir(run_dir)
    checkpoint = prepare_resume(cfg, run)
    with open_run(run, cfg, "train"), wandb_run(cfg):
        run.update(model_source={role: s.as_dict() for role, s in sources.items()})
        if checkpoint:
            run.update(resumed_from=checkpoint)
        if is_main_process():  # the recipe table (value, source) once, and its record in meta.json
            run.update(**announce(cfg))
        set_seed(cfg.seed)
        # Before the model loads: it sets up the process group and, under ZeRO-3, makes
        # from_pretrained create the model already partitioned.
        grouped = length_grouping(cfg.trainer.get("group_by_length"), spec)
        args = training_arguments(cfg, run, group_by_length=grouped)
        run.update(batch=batch_plan(cfg.hparams, args), group_by_length=grouped)
        tokenizer = load_tokenizer(cfg.model, source)
        # Rank 0 tokenises and fills the cache; the other ranks then read it (no concurrent writes).
        with args.main_process_first(desc="tokenising the pairs"):
            train_ds, stats = build_dataset(cfg.data, tokenizer, cfg.hparams, cfg.paths.cache_dir, spec)
            eval_ds = None
            if cfg.data.eval_split:
                eval_ds, _ = build_dataset(cfg.data, tokenizer, cfg.hparams, cfg.paths.cache_dir, spec,
                                           split=cfg.data.eval_split)
        if grouped:
            # transformers' eval sampler groups by length too, so the eval pairs need the column.
            train_ds = add_length_column(train_ds)
            eval_ds = add_length_column(eval_ds) if eval_ds is not None else None
        model = adapters.wrap(load_model(cfg.model, tokenizer, cfg.adapter, source), cfg.adapter,
                              cfg.trainer.gradient_checkpointing)
        run.update(precision=check_precision(cfg, model))
        ref_model = None
        if spec.needs_reference:
            splits = {cfg.data.split: train_ds, cfg.data.eval_split: eval_ds} if eval_ds is not None \
                else {cfg.data.split: train_ds}
            splits, ref_model, ref_info = prepare_reference(cfg, spec, tokenizer, model, splits,
                                                                sources["reference"])
            train_ds, eval_ds = splits[cfg.data.split], splits.get(cfg.data.eval_split)
            run.update(reference=ref_info)
        pairs, pairs_info = None, None
        if cfg.trainer.evaluate:
            # Held-out pairs by default, at most trainer.eval_pairs (see simpo_cli/data/heldout.py).
            train_ds, pairs, pairs_info = metric_pairs(
                train_ds, eval_ds, split=cfg.data.split, eval_split=cfg.data.eval_split,
                eval_size=cfg.data.eval_size, cap=cfg.trainer.get("eval_pairs"), seed=cfg.seed)
            run.update(pairs=pairs_info.as_dict())
        run.update(data={"fingerprint": data_fingerprint(cfg.data, cfg.data.split), **stats.as_dict()},
                   model={"name": cfg.model.name, "name_or_path": cfg.model.name_or_path,
                          "fingerprint": model_fingerprint(cfg.model, model, source), "adapter": cfg.adapter.name,
                          **adapters.parameter_counts(model)})
        setup_wandb(cfg, run)
        trainer = PreferenceTrainer(
            model=model,
            args=args,
            data_collator=make_collator(spec, tokenizer.pad_token_id),
            train_dataset=train_ds,
            processing_class=tokenizer,
            callbacks=[MetricsJsonlCallback(run.metrics)],
            objective=spec,
            objective_kwargs=spec.kwargs(cfg.objective),
            ref_model=ref_model,
            nan_skip_budget=cfg.trainer.nan_skip_budget,
            padding_free=cfg.trainer.padding_free,
        )
        if trainer.accelerator.num_processes != world_size():
            raise RuntimeError(f"WORLD_SIZE={world_size()} but accelerate formed {trainer.accelerator.num_processes} "
                               "process(es): every rank would train alone (on CPU set ACCELERATE_USE_CPU=true)")
        run.update(distributed={"name": cfg.distributed.name,
                                "type": trainer.accelerator.distributed_type.value,
                                "num_processes": trainer.accelerator.num_processes})
        start = _pair_metrics_at_start(trainer, pairs) if cfg.trainer.evaluate and prepared_in_train(trainer) else None
        if start is not None:
            trainer.add_callback(start)
        before = trainer.pair_metrics(pairs) if cfg.trainer.evaluate and start is None else {}
        output = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.raise_if_interrupted(run.path)
        before = start.metrics if start is not None else before
        after = trainer.pair_metrics(pairs) if cfg.trainer.evaluate else {}
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        if cfg.trainer.save_model:
            # every rank: a collective under ZeRO-3/FSDP
            save_model(trainer, tokenizer, run.model_dir, cfg.adapter)
        final_loss = losses[-1] if losses else output.training_loss
        if trainer.is_world_process_zero():
            training_curves(run.metrics, run.path / "curves.png", f"{cfg.model.name}, {cfg.objective.name}: {run.path.name}")
        result = TrainResult(run.path, output.global_step, final_loss, before, after,
                             pairs_info.label() if pairs_info else cfg.data.split)
        result.diagnostics = run_diagnostics(cfg, spec, before, after, run.metrics,
                                             held_out=pairs_info.held_out if pairs_info else False)
        run.finish("completed", steps=result.steps, final_loss=result.final_loss,
                   pairs_before=before, pairs_after=after, nan_skipped=trainer.nan_skipped,
                   diagnostics=result.diagnostics)
        return result
