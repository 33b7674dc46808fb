"""``PreferenceTrainer``: transformers' ``Trainer`` with one concatenated chosen+rejected forward
per step and an objective taken from the registry. It never looks at the objective's name: it asks
the spec whether reference log-probs are needed and which reduction the reward uses."""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from simpo_cli.models.adapters import adapters_disabled, has_adapter
from simpo_cli.objectives import ObjectiveSpec, PreferenceLogps
from simpo_cli.training.fused_head import fused_preference_loss, supports_fused
from simpo_cli.training.logps import sequence_logps
from simpo_cli.training.reliability import ReliableTrainerMixin

BATCH_KEYS = ("input_ids", "attention_mask", "response_mask")


class PreferenceTrainer(ReliableTrainerMixin, Trainer):
    def __init__(self, *args, objective: ObjectiveSpec, objective_kwargs: dict,
                 logps_path: str = "auto", ref_model=None,
                 padding_free: bool | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # A live reference (reference.mode=live); None when its log-probs come with the batch.
        self.ref_model = None if ref_model is None else self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        self.objective = objective
        self.objective_kwargs = objective_kwargs
        self.logps_path = logps_path
        self.padding_free = padding_free  # None: padding_free_default(model)
        # compute_loss returns a per-micro-batch mean; Trainer then divides by the accumulation
        # steps, so batch 4 x GA 1 and batch 2 x GA 2 give the same gradient.
        self.model_accepts_loss_kwargs = False
        self._sums: dict[str, dict[str, float]] = {"train": defaultdict(float), "eval": defaultdict(float)}
        self._window_start = time.perf_counter()

    def preference_logps(self, model, inputs) -> tuple[PreferenceLogps, torch.Tensor]:
        """One forward over the ``[2B, L]`` batch → ``PreferenceLogps`` (summed, ``[B]`` each) and
        the per-row mean logits ``[2B]``."""
        sum_sq = self.objective.needs_sum_sq_probs
        out = sequence_logps(model, *(inputs[k] for k in BATCH_KEYS), path=self.logps_path,
                             padding_free=self.padding_free, sum_sq_probs=sum_sq)
        b = inputs["input_ids"].shape[0] // 2
        logps = PreferenceLogps(
            chosen=out.logps[:b], rejected=out.logps[b:],
            chosen_lengths=out.lengths[:b], rejected_lengths=out.lengths[b:],
            ref_chosen=inputs.get("ref_chosen_logps"), ref_rejected=inputs.get("ref_rejected_logps"),
            chosen_log_sum_sq=out.log_sum_sq[:b] if sum_sq else None,
            rejected_log_sum_sq=out.log_sum_sq[b:] if sum_sq else None,
        )
        self._fill_reference(model, inputs, logps)
        return logps, out.logits_mean

    def _fill_reference(self, model, inputs, logps: PreferenceLogps) -> None:
        if self.objective.needs_reference:
            self._reference_logps(model, inputs, logps)
        if self.objective.needs_reference and logps.ref_chosen is None:
            raise RuntimeError(f"objective '{self.objective.name}' needs reference log-probs")

    @torch.no_grad()
    def _reference_logps(self, model, inputs, logps: PreferenceLogps) -> None:
        """Fill ``ref_*`` from the live reference, and for ``needs_mismatched`` the mismatched rows'
        ``kl`` (policy, no gradient: z_ref is detached) and ``ref_kl``."""
        ref_model = self.ref_model
        if ref_model is None and logps.ref_chosen is None and has_adapter(model):
            ref_model = model  # live reference of a LoRA run: the same model, adapter disabled
        if ref_model is not None:
            with adapters_disabled(model) if ref_model is model else contextlib.nullcontext():
                ref = sequence_logps(ref_model, *(inputs[k] for k in BATCH_KEYS), path=self.logps_path).logps
            b = ref.shape[0] // 2
            logps.ref_chosen, logps.ref_rejected = ref[:b], ref[b:]
        if self.objective.needs_mismatched:
            kl_batch = [inputs["kl_" + k] for k in BATCH_KEYS]
            logps.kl = sequence_logps(model, *kl_batch, path=self.logps_path).logps
            if ref_model is None:
                logps.ref_kl = inputs.get("ref_kl_logps")
            else:
                with adapters_disabled(model) if ref_model is model else contextlib.nullcontext():
                    logps.ref_kl = sequence_logps(ref_model, *kl_batch, path=self.logps_path).logps

    def _fused_head(self, model) -> bool:
        """Log-probs, loss and head gradients in one pass (``fused_head``) when training a model
        whose head allows it (path ``auto`` only: ``chunked``/``plain`` force those paths)."""
        return (self.logps_path == "auto" and torch.is_grad_enabled() and self.objective.pairwise
                and supports_fused(model))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._fused_head(model):
            loss, logps, result, logits_mean = fused_preference_loss(
                model, inputs, self.objective, self.objective_kwargs,
                lambda logps: self._fill_reference(model, inputs, logps), padding_free=self.padding_free)
        else:
            logps, logits_mean = self.preference_logps(model, inputs)
            result = self.objective.fn(logps, **self.objective_kwargs)
            loss = result.losses.mean()
        mode = "train" if model.training else "eval"
        self._accumulate(mode, logps, result, logits_mean, inputs["attention_mask"])
        return (loss, {}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _accumulate(self, mode, logps: PreferenceLogps, result, logits_mean, attention_mask):
        """Sum per-example values over every process (so metrics cover the global batch)."""
        b = logps.chosen.shape[0]
        mean = self.objective.logp_reduction == "mean"
        per_example = torch.stack([
            result.chosen_rewards, result.rejected_rewards,
            (result.chosen_rewards > result.rejected_rewards).float(),
            result.chosen_rewards - result.rejected_rewards,
            (logps.chosen_avg if mean else logps.chosen).detach(),
            (logps.rejected_avg if mean else logps.rejected).detach(),
            logits_mean[:b], logits_mean[b:],
        ]).float()
        names = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                 "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected")
        if result.weights is not None:  # a modifier's weights (WPO)
            per_example = torch.cat([per_example, result.weights.detach().float()[None]])
            names += ("wpo/weight",)
        extra = torch.stack([torch.tensor(float(b), device=per_example.device),
                             attention_mask.sum().float()])
        totals = self.accelerator.reduce(torch.cat([per_example.sum(1), extra]), reduction="sum")
        names += ("_n", "_tokens")
        for name, value in zip(names, totals.tolist()):
            self._sums[mode][name] += value

    def _averages(self, mode: str, prefix: str = "") -> dict[str, float]:
        sums, self._sums[mode] = self._sums[mode], defaultdict(float)
        n = sums.pop("_n", 0)
        tokens = sums.pop("_tokens", 0)
        if not n:
            return {}
        out = {f"{prefix}{k}": v / n for k, v in sums.items()}
        if mode == "train":
            now = time.perf_counter()
            out["tokens_per_second"] = tokens / max(now - self._window_start, 1e-9)
            self._window_start = now
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self._averages("train"))
        elif "eval_loss" in logs:
            logs.update(self._averages("eval", "eval_"))
        super().log(logs, start_time)

    def pair_metrics(self, dataset) -> dict[str, float]:
        """Objective loss and ``rewards/*``/``logps/*`` averaged over every pair of ``dataset``
        (no gradient; the model is left in the mode it was in)."""
        model = self.model
        was_training = model.training
        model.eval()
        self._sums["eval"] = defaultdict(float)
        loss_sum, count = 0.0, 0
        for batch in self.get_eval_dataloader(dataset):
            batch = self._prepare_inputs(batch)
            with torch.no_grad():
                loss = self.compute_loss(model, batch)
            b = batch["input_ids"].shape[0] // 2
            loss_sum, count = loss_sum + loss.item() * b, count + b
        model.train(was_training)
        # Each process scored its shard of the pairs: sum over processes, like the rewards.
        loss_sum, count = self.accelerator.reduce(
            torch.tensor([loss_sum, float(count)], device=self.args.device), reduction="sum").tolist()
        return {"loss": loss_sum / max(count, 1), **self._averages("eval")}


class MetricsJsonlCallback(TrainerCallback):
    """Appends every log record to ``metrics.jsonl`` (main process only), one JSON object a line."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            record = {"step": state.global_step, "epoch": state.epoch, **logs}
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


class SFTTrainer(ReliableTrainerMixin, Trainer):
    """``simpo sft``'s trainer: transformers' causal-LM loss with the same atomic checkpoints,
    signal handling (resume=auto) and non-finite guard as ``PreferenceTrainer``."""
