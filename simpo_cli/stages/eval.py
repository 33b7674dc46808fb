"""``simpo eval``: the paper's analysis metrics on held-out pairs, and benchmark answers for the
external judges.

Outputs (all written atomically into ``out_dir``):

- ``eval.json``: every number below plus the settings used; ``report.md``: a short summary.
- ``pairs.jsonl``: per pair, summed log-probs, response lengths and rewards of chosen and rejected.
- ``margins.png`` (reward-margin histogram), ``loglik_vs_length.png`` (paper Fig. 2b/c).
- ``alpaca_eval/model_outputs.json``, ``arena-hard-v0.1/model_answer/<id>.jsonl``,
  ``mt_bench/model_answer/<id>.jsonl`` in each tool's own format (see ``simpo_cli.evaluation.benchmarks``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import set_seed

from simpo_cli.config.checks import resolve_objective
from simpo_cli.data.preference import PreferenceCollator, build_preference_dataset
from simpo_cli.data.templates import uses_template
from simpo_cli.errors import UserError
from simpo_cli.evaluation import benchmarks as B, diagnostics as D, ifeval_run, metrics as M, plots
from simpo_cli.evaluation.report import render_report
from simpo_cli.evaluation.judge import RewardModelJudge, judge_answers, read_answers
from simpo_cli.models.invariance import one_cpu_thread
from simpo_cli.models.loading import ModelSource, ensure_files, load_model, load_tokenizer, model_source, use_source
from simpo_cli.objectives import PreferenceLogps, get_objective
from simpo_cli.files import write_atomic, write_json
from simpo_cli.run.rundir import RunDir, RunRecord, open_run
from simpo_cli.training.logps import sequence_logps

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    out_dir: Path
    summary: dict = field(default_factory=dict)  # eval.json's content
    files: list[str] = field(default_factory=list)  # relative paths written


# --------------------------------------------------------------------------- config


def train_run_info(cfg) -> dict | None:
    """With ``cfg.source_run`` (``simpo eval model=<train run>``, whose saved config preflight made
    the base of ``cfg``): ``{"path", "start_model", "trained_on"}``, else ``None``. ``start_model``:
    the run's starting model, the reference, loaded with the settings in effect now (so
    ``model.dtype=...`` applies to both) whatever the policy's path is overridden to;
    ``trained_on``: the run's ``(data.path, data.split)``."""
    if not cfg.get("source_run"):
        return None
    saved = RunRecord.read(cfg.source_run).config()
    start_model = OmegaConf.create(OmegaConf.to_container(cfg.model))
    for key in ("name_or_path", "tokenizer", "tiny"):
        if key in saved.get("model", {}):
            start_model[key] = saved.model[key]
    trained_on = (saved.data.path, saved.data.split) if "data" in saved else None
    return {"path": cfg.source_run, "start_model": start_model, "trained_on": trained_on}


# --------------------------------------------------------------------------- pair metrics


@torch.no_grad()
def score_pairs(model, dataset, pad_token_id: int, path: str = "auto") -> dict:
    """Summed response log-probs (nats) and response lengths (tokens) of every pair, ``[B]`` numpy
    arrays ``chosen``, ``rejected``, ``chosen_lengths``, ``rejected_lengths``, ``index``; computed
    with ``PreferenceCollator`` + ``sequence_logps``, exactly as in training.

    Each pair is its own forward pass (its chosen and rejected padded together), on CPU with one
    thread (``simpo_cli.models.invariance``): a pair's log-probs depend only on that pair, not on
    the dataset order or the thread count."""
    collate = PreferenceCollator(pad_token_id)
    model.eval()
    device = next(model.parameters()).device
    out = {k: [] for k in ("chosen", "rejected", "chosen_lengths", "rejected_lengths", "index")}
    for s in range(len(dataset)):
        batch = collate([dataset[s]])
        b = batch["index"].shape[0]
        with one_cpu_thread(device):
            res = sequence_logps(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                 batch["response_mask"].to(device), path=path)
        logps, lengths = res.logps.float().cpu(), res.lengths.cpu()
        out["chosen"].append(logps[:b]), out["rejected"].append(logps[b:])
        out["chosen_lengths"].append(lengths[:b]), out["rejected_lengths"].append(lengths[b:])
        out["index"].append(batch["index"])
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def pair_metrics(cfg, pol: dict, ref: dict | None, bins: int) -> tuple[dict, dict]:
    """The paper's held-out metrics from per-pair log-probs. Returns ``(summary, per_pair_arrays)``.

    Rewards: the run's objective (its own ``fn`` on these log-probs; ``None`` when it needs a
    reference and there is none), SimPO's length-normalised ``β·log π(y|x)/|y|`` (Eq. 4) and the
    summed ``log π(y|x)``."""
    spec = get_objective(cfg.objective.name)
    t = {k: torch.as_tensor(v) for k, v in pol.items()}
    logps = PreferenceLogps(t["chosen"], t["rejected"], t["chosen_lengths"], t["rejected_lengths"],
                            torch.as_tensor(ref["chosen"]) if ref else None,
                            torch.as_tensor(ref["rejected"]) if ref else None)
    beta = float(cfg.objective.get("beta", 1.0))  # an objective without β (IPO, ORPO...): unscaled
    avg_c = M.average_logps(pol["chosen"], pol["chosen_lengths"])
    avg_r = M.average_logps(pol["rejected"], pol["rejected_lengths"])
    rewards = {"length_normalized": (beta * avg_c, beta * avg_r), "summed": (pol["chosen"], pol["rejected"])}
    if not spec.needs_reference or ref is not None:
        out = spec.fn(logps, **spec.kwargs(cfg.objective))
        rewards["objective"] = (out.chosen_rewards.numpy().astype(np.float64),
                                out.rejected_rewards.numpy().astype(np.float64))
    margins = {k: c - r for k, (c, r) in rewards.items()}
    lengths_all = np.concatenate([pol["chosen_lengths"], pol["rejected_lengths"]])
    summary = {
        "n_pairs": int(len(avg_c)),
        "reward_accuracy": {k: M.reward_accuracy(*rewards[k]) if k in rewards else None
                            for k in ("objective", "length_normalized", "summed")},
        "margins": {k: M.margin_summary(m, bins) for k, m in margins.items()},
        "avg_logps": {"chosen": float(avg_c.mean()), "rejected": float(avg_r.mean())},
        "summed_logps": {"chosen": float(pol["chosen"].mean()), "rejected": float(pol["rejected"].mean())},
        "response_length": {"chosen": M.length_stats(pol["chosen_lengths"]),
                            "rejected": M.length_stats(pol["rejected_lengths"])},
        "spearman_avg_logps_vs_length": {
            "chosen": M.spearman(avg_c, pol["chosen_lengths"]),
            "rejected": M.spearman(avg_r, pol["rejected_lengths"]),
            "all": M.spearman(np.concatenate([avg_c, avg_r]), lengths_all)},
        "kl_chosen": M.kl_estimate(pol["chosen"], ref["chosen"], pol["chosen_lengths"]) if ref else None,
    }
    if "objective" not in rewards:
        summary["reward_accuracy"]["objective_note"] = (f"objective '{spec.name}' needs a reference model "
                                                        "and none was available")
    arrays = {"avg_c": avg_c, "avg_r": avg_r, "rewards": rewards, "margins": margins}
    return summary, arrays


def reference_pair_metrics(cfg, ref: dict, bins: int) -> dict:
    """The reference model's (by default the run's starting model's) reward accuracy, margins and
    average log-likelihoods on the same pairs, as ``pair_metrics`` computes them for the policy;
    its objective reward needs no reference only for reference-free objectives (SimPO, ORPO...)."""
    summary, _ = pair_metrics(cfg, ref, None, bins)
    return {k: summary[k] for k in ("reward_accuracy", "margins", "avg_logps")}


def pair_rows(pol: dict, ref: dict | None, arrays: dict) -> str:
    rows = []
    for i in range(len(pol["index"])):
        row = {"index": int(pol["index"][i]),
               "chosen_logps": float(pol["chosen"][i]), "rejected_logps": float(pol["rejected"][i]),
               "chosen_length": int(pol["chosen_lengths"][i]), "rejected_length": int(pol["rejected_lengths"][i]),
               "chosen_avg_logps": float(arrays["avg_c"][i]), "rejected_avg_logps": float(arrays["avg_r"][i])}
        for name, (c, r) in arrays["rewards"].items():
            row[f"chosen_reward_{name}"], row[f"rejected_reward_{name}"] = float(c[i]), float(r[i])
        if ref is not None:
            row["ref_chosen_logps"], row["ref_rejected_logps"] = float(ref["chosen"][i]), float(ref["rejected"][i])
        rows.append(json.dumps(row))
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- the stage


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"eval.device: unknown device '{name}' (auto, cpu, cuda, cuda:N)") from None


def _reference_cfg(cfg, run_info: dict | None):
    """The reference model's config (see ``config.eval.EvalReferenceConfig``), or ``None``."""
    if not cfg.reference.enabled:
        return None
    if cfg.reference.name_or_path:
        ref = OmegaConf.create(OmegaConf.to_container(cfg.model))
        ref.name_or_path, ref.tokenizer = cfg.reference.name_or_path, None
        return ref
    return run_info["start_model"] if run_info else None


def _start_model_answers(cfg, ref_cfg, ref_source, tokenizer, prompts, bench_cfg, device, max_new: int,
                         temperatures: list | None = None) -> dict:
    """The reference (by default the run's starting) model's answers to ``prompts``, decoded
    exactly as the policy's, from the cache (``evaluation.ifeval_run``) or generated and cached.
    ``temperatures``: the per-prompt temperatures of a sampled benchmark (part of the cache key;
    IFEval's single temperature is ``bench_cfg.temperature``)."""
    template = uses_template(tokenizer, cfg.data.chat_template)
    decoding = {"max_new_tokens": max_new, "temperature": bench_cfg.temperature, "top_p": bench_cfg.top_p,
                "stop_token_ids": list(cfg.eval.stop_token_ids), "template": template, "seed": cfg.seed,
                "device": device.type, "batch_invariant": cfg.eval.batch_invariant,
                # batched answers may differ at a near-tie token with the batch size or thread count
                # (models/generate.py), so both are part of the key
                "batch_size": cfg.eval.generation_batch_size, "threads": torch.get_num_threads()}
    if temperatures is not None:
        decoding["temperatures"] = temperatures
    # the key lists the weights' files: a packaged model's must exist before (ensure_files)
    key = ifeval_run.answers_key(ref_cfg, ensure_files(ref_source), tokenizer, prompts, decoding)
    label = ref_cfg.name_or_path or f"tiny:{ref_cfg.name} (seed {ref_cfg.tiny.seed})"
    cached = ifeval_run.read_cached(cfg.paths.cache_dir, key, len(prompts))
    if cached is not None:
        log.info("%s: starting model's answers from the cache (%s)", bench_cfg.name, key)
        answers, counts = cached
    else:
        ref_model = load_model(ref_cfg, tokenizer, source=ref_source).eval().to(device)
        set_seed(cfg.seed)
        started = time.perf_counter()
        nested, nested_counts, _ = B.answer_benchmark(
            ref_model, tokenizer, prompts, bench_cfg, cfg.model.name, max_new_tokens=max_new,
            batch_size=cfg.eval.generation_batch_size, stop_token_ids=list(cfg.eval.stop_token_ids),
            template=template, seed=cfg.seed, batch_invariant=cfg.eval.batch_invariant)
        seconds = time.perf_counter() - started
        del ref_model
        answers, counts = [a[0] for a in nested], [c[0] for c in nested_counts]
        ifeval_run.write_cached(cfg.paths.cache_dir, key, answers, counts, label)
        log.info("ifeval: starting model answered %d prompts in %.0f s (%.1f tokens/s)", len(prompts), seconds,
                 sum(counts) / max(seconds, 1e-9))
    return {"model": label, "answers": answers, "counts": counts, "cache_key": key}


def answer_records(prompts, answers: list[list[str]], counts: list[list[int]]) -> list[dict]:
    """Every turn's answer as a diagnostics record ``{"id", "prompt", "answer", "tokens"}``; a
    multi-turn prompt's turns are ``<id>/turn<k>``."""
    return [{"id": p.id if len(a) == 1 else f"{p.id}/turn{k + 1}", "prompt": p.turns[k], "answer": a[k],
             "tokens": c[k]} for p, a, c in zip(prompts, answers, counts) for k in range(len(a))]


def pairs_as_train_metrics(avg_logps: dict, margins: dict) -> dict:
    """An eval's pair summary in the trainer's names (``logps/*`` in nats/token, ``rewards/margins``:
    the length-normalised margin), so ``diagnostics.pair_diagnostics`` reads both stages alike."""
    return {"logps/chosen": avg_logps["chosen"], "logps/rejected": avg_logps["rejected"],
            "rewards/margins": margins["length_normalized"]["mean"]}


def model_sources(cfg) -> dict[str, ModelSource]:
    """The models ``run_eval`` loads, each resolved once: ``policy`` (``model.*``) and, where
    there is one, ``reference`` (``_reference_cfg``). Pure: preflight calls it."""
    ref_cfg = _reference_cfg(cfg, train_run_info(cfg))
    sources = {"policy": model_source(cfg.model)}
    if ref_cfg is not None:
        sources["reference"] = model_source(ref_cfg)
    return sources


def run_eval(cfg, out_dir: str | Path, sources: dict[str, ModelSource] | None = None) -> EvalResult:
    """Evaluate a model; everything lands in ``out_dir`` (see the module docstring).

    ``sources``: as preflight resolved them (``model_sources``); ``None`` resolves them here.
    Raises ``ConfigError``/``UserError``/``DataError`` for user mistakes, before loading a model
    where possible."""
    run_info = train_run_info(cfg)
    resolve_objective(cfg)
    sources = sources if sources is not None else model_sources(cfg)
    source, ref_source = use_source(cfg.model, sources["policy"]), sources.get("reference")
    ev = cfg.eval
    ref_cfg = _reference_cfg(cfg, run_info)
    device = _device(ev.device)
    out = RunDir(out_dir)
    files: list[str] = []
    model_id = ev.model_id or f"{cfg.model.name}-{cfg.objective.name}"
    with open_run(out, cfg, "eval"):
        set_seed(cfg.seed)
        out.update(model_source={role: s.as_dict() for role, s in (('policy', source), ('reference', ref_source))
                                 if s is not None})
        tokenizer = load_tokenizer(cfg.model, source)
        model = load_model(cfg.model, tokenizer, source=source).eval().to(device)
        summary = {"model_id": model_id, "model": cfg.model.name_or_path or f"tiny:{cfg.model.name}",
                   "reference": None, "run": run_info["path"] if run_info else None,
                   "objective": cfg.objective.name, "beta": cfg.objective.get("beta"),
                   "gamma": cfg.objective.get("gamma"), "seed": cfg.seed, "device": str(device)}
        findings: list[dict] = []  # diagnostics over pairs and answers (simpo_cli/evaluation/diagnostics.py)

        if ev.pairs:
            split = ev.split or cfg.data.eval_split or cfg.data.split
            ds, stats = build_preference_dataset(cfg.data, tokenizer, cfg.hparams, cfg.paths.cache_dir, split=split)
            if len(ds) == 0:
                raise UserError(f"data {cfg.data.path} [{split}]: no usable pairs (dropped: "
                                f"{dict(stats.dropped) or 'none'}); pass eval.pairs=false to skip pair metrics")
            pol = score_pairs(model, ds, tokenizer.pad_token_id, ev.logps_path)
            ref = None
            if ref_cfg is not None:
                ref_model = load_model(ref_cfg, tokenizer, source=ref_source).eval().to(device)
                if ref_model.get_input_embeddings().num_embeddings != model.get_input_embeddings().num_embeddings:
                    raise UserError("reference model's vocabulary differs from the policy's; "
                                    "KL needs the same tokenizer (set reference.enabled=false)")
                ref = score_pairs(ref_model, ds, tokenizer.pad_token_id, ev.logps_path)
                del ref_model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                summary["reference"] = ref_cfg.name_or_path or f"tiny:{ref_cfg.name} (seed {ref_cfg.tiny.seed})"
            # Held out unless these are the very pairs the run trained on (same file/Hub id, same split).
            train_split = run_info is not None and run_info["trained_on"] == (cfg.data.path, split)
            pairs, arrays = pair_metrics(cfg, pol, ref, ev.histogram_bins)
            margin_reward = "objective" if "objective" in arrays["margins"] else "length_normalized"
            held_out = None if run_info is None or run_info["trained_on"] is None else not train_split
            pairs.update(source=cfg.data.path, split=split, held_out=held_out, data=stats.as_dict(),
                         margin_reward=margin_reward)
            if ref is not None:  # the starting model (or reference.name_or_path), for before -> after
                pairs["reference_model"] = reference_pair_metrics(cfg, ref, ev.histogram_bins)
                start = pairs["reference_model"]
                pair_diag = D.pair_diagnostics(pairs_as_train_metrics(start["avg_logps"], start["margins"]),
                                               pairs_as_train_metrics(pairs["avg_logps"], pairs["margins"]),
                                               cfg.diagnostics, pairs="held-out" if held_out else "eval-pair")
                findings += pair_diag.pop("findings", [])
                pairs["diagnostics"] = pair_diag
            if train_split:
                log.warning("eval pairs are the run's training pairs (%s, split '%s'): the metrics are not "
                            "held out; pass data.path=<held-out file> or data.eval_split", cfg.data.path, split)
            summary["pairs"] = pairs
            write_atomic(out.path / "pairs.jsonl", pair_rows(pol, ref, arrays))
            plots.margin_histogram(out.path / "margins.png", arrays["margins"][margin_reward], ev.histogram_bins,
                                   f"{model_id}: reward margins ({margin_reward} reward)", "r(y_w) − r(y_l)")
            plots.loglik_vs_length(
                out.path / "loglik_vs_length.png",
                {"chosen": (pol["chosen_lengths"], arrays["avg_c"], pairs["spearman_avg_logps_vs_length"]["chosen"]),
                 "rejected": (pol["rejected_lengths"], arrays["avg_r"],
                              pairs["spearman_avg_logps_vs_length"]["rejected"])},
                f"{model_id}: average log-likelihood vs length")
            files += ["pairs.jsonl", "margins.png", "loglik_vs_length.png"]

        generated = {}
        summary["benchmarks"] = {}
        for name in ev.benchmarks:
            bc = cfg.benchmarks[name]
            prompts = B.load_prompts(bc, ev.limit)
            max_new = B.max_new_tokens_for(bc, cfg.model.name, ev.max_new_tokens)
            set_seed(cfg.seed)  # each benchmark's samples reproducible on its own
            started = time.perf_counter()
            answers, counts, temps = B.answer_benchmark(
                model, tokenizer, prompts, bc, cfg.model.name, max_new_tokens=max_new,
                batch_size=ev.generation_batch_size, stop_token_ids=list(ev.stop_token_ids),
                template=uses_template(tokenizer, cfg.data.chat_template), seed=cfg.seed,
                batch_invariant=ev.batch_invariant)
            seconds = time.perf_counter() - started
            rel, text = B.format_answers(bc.format, prompts, answers, counts, model_id)
            if bc.format == "ifeval":  # each IFEval-format prompt set in a directory of its name
                rel = f"{bc.name}/{Path(rel).name}"
            write_atomic(out.path / rel, text)
            files.append(rel)
            generated[name] = (prompts, answers)
            flat_tokens = [n for c in counts for n in c]
            flat_chars = [len(a) for ans in answers for a in ans]
            summary["benchmarks"][name] = {
                "file": rel, "format": bc.format, "n_prompts": len(prompts), "n_turns": len(flat_tokens),
                "max_new_tokens": max_new, "top_p": bc.top_p, "batch_invariant": ev.batch_invariant,
                # what the answers depend on unless batch_invariant (models/generate.py)
                "generation_batch_size": ev.generation_batch_size, "threads": torch.get_num_threads(),
                "temperatures": {str(t): temps.count(t) for t in sorted(set(temps))},
                "length_tokens": M.length_stats(flat_tokens, max_new), "length_chars": M.length_stats(flat_chars),
                # wall time of the answers' generation and its rate (new tokens, all turns)
                "generation_seconds": round(seconds, 1), "tokens_per_second": round(sum(flat_tokens) / max(seconds, 1e-9), 1)}
            log.info("%s: %d prompts answered -> %s", name, len(prompts), rel)
            if bc.format == "ifeval":
                before = None
                if ref_cfg is not None:  # the starting model on the same prompts, same decoding
                    before = _start_model_answers(cfg, ref_cfg, ref_source, tokenizer, prompts, bc, device, max_new)
                res, written = ifeval_run.evaluate(out.path, prompts, [a[0] for a in answers], flat_tokens, max_new,
                                                   cache_dir=cfg.paths.cache_dir, seed=cfg.seed, before=before,
                                                   subdir=bc.name)
                summary["benchmarks"][name]["ifeval"] = res
                files += [f for f in written if f not in files]
            # Length, loops and diversity of the answers, before (where the starting model
            # answered the same prompts: IFEval-format sets, and single-turn benchmarks with
            # diagnostics.answers_before) and after.
            start = None
            if bc.format != "ifeval":
                before = None
                if ref_cfg is not None and cfg.diagnostics.answers_before:
                    if any(len(p.turns) > 1 for p in prompts):
                        log.info("%s: multi-turn prompts; diagnostics.answers_before covers single-turn "
                                 "benchmarks only", name)
                    else:
                        before = _start_model_answers(cfg, ref_cfg, ref_source, tokenizer, prompts, bc, device,
                                                      max_new, temps)
            if before is not None:
                start = D.answer_stats(answer_records(prompts, [[a] for a in before["answers"]],
                                                      [[c] for c in before["counts"]]), cfg.diagnostics)
            stats = D.answer_stats(answer_records(prompts, answers, counts), cfg.diagnostics)
            summary["benchmarks"][name]["answers"] = {"after": stats, "before": start}
            findings += D.answer_findings(name, stats, start, cfg.diagnostics)

        if cfg.judge.reward_model:
            j = cfg.judge
            judge = RewardModelJudge(j.reward_model, j.max_length, device)
            prompts, answers = generated[j.benchmark]
            key = "instruction" if cfg.benchmarks[j.benchmark].format == "alpaca_eval" else "question_id"
            res = judge_answers(judge, prompts, answers, read_answers(j.baseline), key=key,
                                n_resamples=j.n_resamples, confidence=j.confidence, seed=cfg.seed)
            summary["judge"] = {"benchmark": j.benchmark, "reward_model": j.reward_model, "baseline": j.baseline, **res}

        summary["diagnostics"] = {"findings": findings}
        summary["files"] = files + ["eval.json", "report.md"]
        write_json(out.path / "eval.json", summary)
        write_atomic(out.path / "report.md", render_report(summary))
        files += ["eval.json", "report.md"]
        out.finish("completed", files=files)
        return EvalResult(out.path, summary, files)
