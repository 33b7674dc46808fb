"""``simpo report <multirun dir>``: one table of a sweep's jobs, two plots and the best override line.

Reads what each job left in its directory (``simpo_cli/run/rundir.py``): ``meta.json`` (status,
``final_loss``, the pair metrics after training ``pairs_after``, the ``overrides`` stamped by
``simpo_cli/sweeps/job.py``), ``metrics.jsonl`` (the last logged training step) and ``config.yaml``
(the resolved β, γ and learning rate). Writes into ``<dir>/report/`` (``--out``), each file
atomically (temporary file + rename):

- ``report.md``: completed jobs sorted by the chosen metric, the best job's overrides as a
  ``simpo train ...`` line, the failed (or unfinished) jobs with their error, the plots;
- ``report.csv``: one row per job, failures included, every metric;
- ``heatmap.png``: the metric over β × γ, one panel per learning rate;
- ``metric_vs_gamma.png``: the metric against γ, one line per (β, learning rate).

Metric names: ``final_loss`` (last logged training loss), ``steps``, the pair metrics after training
as ``meta.json`` names them (``rewards/accuracies``, ``rewards/margins``, ``loss``, ...; evaluated on
``data.eval_split`` when set, else on the training pairs) and the last training log as
``train/<name>`` (``train/loss``, ``train/rewards/accuracies``, ...), and from the job's latest
``simpo eval`` with IFEval (``<job>/eval/<date>/<time>/eval.json``) ``ifeval/prompt_strict``,
``ifeval/prompt_loose``, ``ifeval/instruction_strict``, ``ifeval/instruction_loose``.

Diagnostics (``simpo_cli/evaluation/diagnostics.py``): ``diagnostics/chosen_change`` and
``diagnostics/rejected_change`` (held-out log-likelihood after - before training, in the unit the
objective logs), from an eval ``<benchmark>/loop_rate`` and ``<benchmark>/mean_tokens`` (and
``<benchmark>/before/...`` with the starting model's answers), and a ``findings`` column: the codes
of the job's findings (training, and its latest eval), ``none`` when it recorded diagnostics and
nothing crossed a threshold, empty for a run from before diagnostics existed.

A sweep of experiments (``simpo run -m``) has one job per experiment directory (it holds
``experiment.json``): its metrics are every completed stage's, later stages winning
(``experiment_metrics``), so the final eval's ``ifeval/prompt_loose``, ``ifeval_dev/prompt_loose``,
``ifeval/difference/prompt_loose`` ... rank it; the best line is a ``simpo run ...`` command.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from simpo_cli.errors import UserError
from simpo_cli.files import CONFIG_FILE, METRICS_FILE, write_atomic
from simpo_cli.sweeps.job import job_overrides, override_key, run_records

AXES = {"beta": "objective.beta", "gamma": "objective.gamma", "lr": "hparams.learning_rate"}
# Columns of the markdown table after the axes (the CSV has every metric).
SUMMARY_METRICS = ("rewards/accuracies", "rewards/margins", "loss", "final_loss",
                   "train/rewards/accuracies", "train/rewards/margins", "steps",
                   "diagnostics/chosen_change", "diagnostics/rejected_change")
STATUS_RANK = {"completed": 0, "failed": 1}  # which record wins when a job appears twice
TRAIN_SKIP = {"step", "epoch", "learning_rate", "tokens_per_second"}
EXPERIMENT_FILE = "experiment.json"  # an experiment directory's record (simpo run: stages/run.py)


@dataclass
class Job:
    """One job of the sweep as its directory records it."""

    dir: str  # relative to the sweep directory
    status: str  # completed | failed | running (a job killed before it could record an end)
    overrides: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    hparams: dict[str, float | None] = field(default_factory=dict)  # beta, gamma, lr (resolved)
    error: str | None = None
    ended: str | None = None
    command: str = "simpo train"  # what the overrides are given to: simpo run for an experiment
    # Codes of the job's diagnostic findings; None: the job recorded no diagnostics (an older run).
    findings: list[str] | None = None

    @property
    def params(self) -> dict[str, str]:
        return dict(o.lstrip("+~").split("=", 1) for o in self.overrides if "=" in o)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _last_train_log(path: Path) -> dict[str, float]:
    """The last training record (one with ``loss``) of ``metrics.jsonl``, keys prefixed ``train/``."""
    last: dict = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a job killed mid-write leaves a partial last line
            continue
        if "loss" in record:
            last = record
    return {f"train/{k}": float(v) for k, v in last.items()
            if k not in TRAIN_SKIP and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _resolved_hparams(job_dir: Path, params: dict[str, str]) -> dict[str, float | None]:
    """β, γ and learning rate the job trained with: its resolved ``config.yaml`` (so presets and
    ``gamma_beta_ratio`` count), else its overrides (a job that failed before writing one)."""
    saved = OmegaConf.create()
    if (job_dir / CONFIG_FILE).is_file():
        try:
            saved = OmegaConf.load(job_dir / CONFIG_FILE)
        except Exception:  # an unreadable config only costs the plots this job
            pass
    out: dict[str, float | None] = {}
    for short, key in AXES.items():
        value = OmegaConf.select(saved, key, default=params.get(key))
        try:
            out[short] = None if value is None else float(value)
        except (TypeError, ValueError):
            out[short] = None
    return out


def _latest_ifeval(job_dir: Path) -> dict[str, float]:
    """``ifeval/<metric>`` of the job's latest completed ``simpo eval`` with IFEval
    (``<job>/eval/<date>/<time>/eval.json``; directory names sort by time)."""
    for path in sorted(job_dir.glob("eval/*/*/eval.json"), key=lambda p: p.parent.parts[-2:], reverse=True):
        metrics = eval_metrics(_read_json(path) or {})
        if any(k.startswith("ifeval/") for k in metrics):
            return {k: v for k, v in metrics.items() if k.startswith("ifeval/")}
    return {}


def _diagnostic_numbers(pairs: dict | None, prefix: str) -> dict[str, float]:
    """``<prefix>chosen_change`` and ``<prefix>rejected_change`` of a diagnostics pair record."""
    return {f"{prefix}{k}": float(pairs[k]) for k in ("chosen_change", "rejected_change")
            if isinstance((pairs or {}).get(k), (int, float))}


def _answer_numbers(name: str, answers: dict | None) -> dict[str, float]:
    """``<name>/loop_rate``, ``<name>/mean_tokens`` and their ``<name>/before/...`` of an eval's
    answer diagnostics."""
    out: dict[str, float] = {}
    for when, prefix in (("after", f"{name}/"), ("before", f"{name}/before/")):
        stats = (answers or {}).get(when) or {}
        for key, metric in (("repetition_rate", "loop_rate"), ("mean_tokens", "mean_tokens")):
            if isinstance(stats.get(key), (int, float)):
                out[prefix + metric] = float(stats[key])
    return out


def eval_diagnostic_numbers(summary: dict) -> dict[str, float]:
    """An ``eval.json``'s diagnostics: each benchmark's answers (``_answer_numbers``) and the
    pairs' ``pairs/chosen_change``, ``pairs/rejected_change`` (trained - starting model)."""
    out: dict[str, float] = {}
    for name, bench in (summary.get("benchmarks") or {}).items():
        if isinstance(bench, dict):
            out.update(_answer_numbers(name, bench.get("answers")))
    out.update(_diagnostic_numbers((summary.get("pairs") or {}).get("diagnostics"), "pairs/"))
    return out


def finding_codes(record: dict | None) -> list[str] | None:
    """The codes of a ``meta.json``'s or ``eval.json``'s ``diagnostics.findings`` (``None``: the
    record has no diagnostics)."""
    diag = (record or {}).get("diagnostics")
    if not isinstance(diag, dict) or not isinstance(diag.get("findings"), list):
        return None
    return [str(f.get("code")) for f in diag["findings"] if isinstance(f, dict)]


def _merge_codes(*lists: list[str] | None) -> list[str] | None:
    known = [codes for codes in lists if codes is not None]
    if not known:
        return None
    merged: list[str] = []
    for codes in known:
        merged += [c for c in codes if c not in merged]
    return merged


def _latest_eval(job_dir: Path) -> dict:
    """The job's latest ``simpo eval`` summary (``<job>/eval/<date>/<time>/eval.json``), or ``{}``."""
    for path in sorted(job_dir.glob("eval/*/*/eval.json"), key=lambda p: p.parent.parts[-2:], reverse=True):
        summary = _read_json(path)
        if summary:
            return summary
    return {}


def eval_metrics(summary: dict) -> dict[str, float]:
    """The headline numbers of an ``eval.json``: for each IFEval-format benchmark ``<name>``
    (``ifeval``, or a prompt file in its layout such as a dev split) ``<name>/<metric>`` (the
    four metrics), ``<name>/before/<metric>`` and ``<name>/difference/<metric>`` (with a starting
    model), ``<name>/length_words`` (mean); and ``pairs/reward_accuracy`` (the objective's)."""
    out: dict[str, float] = {}
    for name, bench in (summary.get("benchmarks") or {}).items():
        res = bench.get("ifeval") if isinstance(bench, dict) else None
        if not res:
            continue
        for k, v in (res.get("metrics") or {}).items():
            if v.get("value") is not None:
                out[f"{name}/{k}"] = float(v["value"])
        for k, v in ((res.get("before") or {}).get("metrics") or {}).items():
            if v.get("value") is not None:
                out[f"{name}/before/{k}"] = float(v["value"])
        for k, v in (res.get("paired") or {}).items():
            if isinstance(v, dict) and v.get("difference") is not None:
                out[f"{name}/difference/{k}"] = float(v["difference"])
        if (res.get("length_words") or {}).get("mean") is not None:
            out[f"{name}/length_words"] = float(res["length_words"]["mean"])
    out.update(eval_diagnostic_numbers(summary))
    accuracy = ((summary.get("pairs") or {}).get("reward_accuracy") or {}).get("objective")
    if isinstance(accuracy, (int, float)):
        out["pairs/reward_accuracy"] = float(accuracy)
    return out


def experiment_findings(exp_dir: Path) -> list[str] | None:
    """The finding codes of every completed stage of an experiment (train's ``meta.json``, eval's
    ``eval.json``)."""
    record = _read_json(Path(exp_dir) / EXPERIMENT_FILE) or {}
    lists = []
    for stage in record.get("stages") or []:
        run_dir = Path(exp_dir) / str(stage.get("dir"))
        meta = _read_json(run_dir / "meta.json") or {}
        if meta.get("status") == "completed":
            lists += [finding_codes(meta), finding_codes(_read_json(run_dir / "eval.json"))]
    return _merge_codes(*lists)


def experiment_metrics(exp_dir: Path) -> dict[str, float]:
    """An experiment's numbers (``simpo run``, ``experiment.json``): every completed stage's
    ``stage_metrics``, in chain order, a later stage's value winning, so the final stage's metrics
    (an eval's ``ifeval/prompt_loose``) and the training's (``final_loss``) are both there."""
    record = _read_json(Path(exp_dir) / EXPERIMENT_FILE) or {}
    metrics: dict[str, float] = {}
    for stage in record.get("stages") or []:
        run_dir = Path(exp_dir) / str(stage.get("dir"))
        meta = _read_json(run_dir / "meta.json") or {}
        if meta.get("status") == "completed":
            metrics.update(stage_metrics(run_dir, meta))
    return metrics


def stage_metrics(run_dir: Path, meta: dict | None = None) -> dict[str, float]:
    """The headline numbers of one stage's run directory, by what it records: a training run's
    ``final_loss``, ``steps``, pair metrics after training and last training log; generate-pairs'
    ``prompts``, ``pairs`` and mean chosen/rejected scores; an eval's ``eval.json``
    (``eval_metrics``)."""
    run_dir = Path(run_dir)
    meta = meta if meta is not None else (_read_json(run_dir / "meta.json") or {})
    metrics: dict[str, float] = {}
    for key in ("final_loss", "steps", "prompts", "pairs", "score_chosen_mean", "score_rejected_mean"):
        if isinstance(meta.get(key), (int, float)) and not isinstance(meta.get(key), bool):
            metrics[key] = float(meta[key])
    metrics.update({k: float(v) for k, v in (meta.get("pairs_after") or {}).items() if v is not None})
    metrics.update(_last_train_log(run_dir / METRICS_FILE))
    metrics.update(_diagnostic_numbers((meta.get("diagnostics") or {}).get("pairs"), "diagnostics/"))
    if (run_dir / "eval.json").is_file():
        metrics.update(eval_metrics(_read_json(run_dir / "eval.json") or {}))
    return metrics


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job under ``sweep_dir`` (one per distinct override list: a completed record wins over
    a failed one, then the latest), in directory order."""
    sweep_dir = Path(sweep_dir)
    by_key: dict[tuple, Job] = {}
    experiments = {p.parent for p in sweep_dir.rglob(EXPERIMENT_FILE) if ".previous" not in p.parts}
    for path in run_records(sweep_dir):
        meta, job_dir = _read_json(path), path.parent
        if meta is None or experiments & set(job_dir.parents):  # a stage of an experiment: read with it
            continue
        if meta.get("stage") == "eval":  # an eval of a job: read with that job below
            continue
        overrides = job_overrides(job_dir, meta) or []
        if job_dir in experiments:
            metrics = experiment_metrics(job_dir)
            findings = experiment_findings(job_dir)
        else:
            metrics = stage_metrics(job_dir, meta)
            metrics.update(_latest_ifeval(job_dir))
            latest = _latest_eval(job_dir)
            metrics.update({k: v for k, v in eval_diagnostic_numbers(latest).items() if k not in metrics})
            findings = _merge_codes(finding_codes(meta), finding_codes(latest))
        job = Job(dir=job_dir.relative_to(sweep_dir).as_posix() or ".", status=meta.get("status", "running"),
                  overrides=list(overrides), metrics=metrics, error=meta.get("error"),
                  ended=meta.get("ended") or meta.get("started"),
                  command="simpo run" if job_dir in experiments else "simpo train", findings=findings)
        job.hparams = _resolved_hparams(job_dir, job.params)
        key = override_key(overrides)
        old = by_key.get(key)
        rank = (STATUS_RANK.get(job.status, 2), _neg(job.ended))
        if old is None or rank < (STATUS_RANK.get(old.status, 2), _neg(old.ended)):
            by_key[key] = job
    return sorted(by_key.values(), key=lambda j: _natural(j.dir))


def _neg(timestamp: str | None) -> tuple:
    # Later ISO timestamps sort first; None last.
    return (timestamp is None, tuple(-ord(c) for c in (timestamp or "")))


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in name.split("/"))


def sweep_axes(jobs: list[Job]) -> list[str]:
    """The override keys whose value differs between jobs, in the order they first appear."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.params if k not in keys]
    return [k for k in keys if len({j.params.get(k) for j in jobs}) > 1]


def higher_is_better(metric: str, mode: str = "auto") -> bool:
    """``mode`` max|min; ``auto``: a loss is minimised, anything else (accuracies, margins) maximised."""
    if mode not in ("auto", "max", "min"):
        raise UserError(f"--mode must be auto, max or min, got '{mode}'")
    return mode == "max" or (mode == "auto" and "loss" not in metric)


def rank_jobs(jobs: list[Job], metric: str, mode: str = "auto") -> list[Job]:
    """Completed jobs with ``metric``, best first (ties keep directory order)."""
    sign = -1.0 if higher_is_better(metric, mode) else 1.0
    done = [j for j in jobs if j.status == "completed" and _finite(j.metrics.get(metric))]
    return sorted(done, key=lambda j: sign * j.metrics[metric])


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def best_override_line(job: Job) -> str:
    """The best job as a command ready to paste (its complete override list, shell-quoted)."""
    return f"{job.command} " + " ".join(shlex.quote(o) for o in job.overrides)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _findings_cell(codes: list[str] | None) -> str:
    return "" if codes is None else ", ".join(codes) or "none"


def build_markdown(sweep_dir: Path, jobs: list[Job], metric: str, mode: str, plots: dict[str, str]) -> str:
    ranked = rank_jobs(jobs, metric, mode)
    others = [j for j in jobs if j not in ranked]
    axes = sweep_axes(jobs) or sorted({k for j in jobs for k in j.params})
    columns = [metric] + [m for m in SUMMARY_METRICS if m != metric and any(m in j.metrics for j in ranked)]
    direction = "higher is better" if higher_is_better(metric, mode) else "lower is better"
    counts = {s: sum(j.status == s for j in jobs) for s in ("completed", "failed")}
    unfinished = len(jobs) - counts["completed"] - counts["failed"]
    summary = f"{len(jobs)} jobs: {counts['completed']} completed, {counts['failed']} failed"
    if unfinished:
        summary += f", {unfinished} unfinished (running, or killed)"
    lines = [f"# Sweep report: {sweep_dir}", "", f"{summary}. Sorted by `{metric}` ({direction}).", ""]
    rows = [[str(i), j.dir, *[j.params.get(a, "") for a in axes], *[_fmt(j.metrics.get(c)) for c in columns],
             _findings_cell(j.findings)] for i, j in enumerate(ranked, 1)]
    lines += _markdown_table(["rank", "job", *axes, *columns, "findings"], rows)
    if ranked:
        lines += ["", "## Best", "", "```", best_override_line(ranked[0]), "```"]
    else:
        lines += ["", f"No completed job has `{metric}`."]
    if others:
        lines += ["", "## Failed or unfinished", ""]
        lines += _markdown_table(["job", "status", "overrides", "error"],
                                 [[j.dir, j.status, " ".join(j.overrides), j.error or ""] for j in others])
    for title, name in plots.items():
        lines += ["", f"## {title}", "", f"![{title}]({name})"]
    return "\n".join(lines) + "\n"


def build_csv(jobs: list[Job], metric: str, mode: str) -> str:
    """Ranked completed jobs first, then the rest; every override key and metric is a column."""
    ranked = rank_jobs(jobs, metric, mode)
    ordered = ranked + [j for j in jobs if j not in ranked]
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.params if k not in keys]
    metrics = sorted({m for j in jobs for m in j.metrics}, key=lambda m: (m != metric, m.startswith("train/"), m))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "job", "status", *keys, *metrics, "findings", "overrides", "error"])
    for j in ordered:
        rank = ranked.index(j) + 1 if j in ranked else ""
        writer.writerow([rank, j.dir, j.status, *[j.params.get(k, "") for k in keys],
                         *[_fmt_csv(j.metrics.get(m)) for m in metrics], _findings_cell(j.findings),
                         " ".join(j.overrides), j.error or ""])
    return buf.getvalue()


def _fmt_csv(value) -> str:
    return "" if value is None else repr(float(value))


def _save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def _grid_points(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.hparams.get("beta") is not None and j.hparams.get("gamma") is not None]


def plot_heatmap(jobs: list[Job], metric: str, path: Path) -> bool:
    """β (rows) × γ (columns) heatmap of ``metric``, one panel per learning rate; a grid point
    whose job failed is drawn blank and marked ``failed``. False when the sweep has no β/γ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    points = _grid_points(jobs)
    if not points:
        return False
    betas = sorted({j.hparams["beta"] for j in points})
    gammas = sorted({j.hparams["gamma"] for j in points})
    lrs = sorted({j.hparams.get("lr") for j in points}, key=lambda v: (v is None, v or 0.0))
    done = [j for j in points if j.status == "completed" and _finite(j.metrics.get(metric))]
    values = [j.metrics[metric] for j in done]
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    fig, axes = plt.subplots(1, len(lrs), figsize=(1.2 + 1.1 * len(gammas) * len(lrs) + 1.0, 1.0 + 0.8 * len(betas)),
                             squeeze=False, layout="constrained")
    image = None
    for ax, lr in zip(axes[0], lrs):
        grid = np.full((len(betas), len(gammas)), np.nan)
        failed = np.zeros_like(grid, dtype=bool)
        for j in points:
            if j.hparams.get("lr") != lr:
                continue
            r, c = betas.index(j.hparams["beta"]), gammas.index(j.hparams["gamma"])
            if j in done:
                grid[r, c] = j.metrics[metric]
            elif j.status != "completed":
                failed[r, c] = True
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for r in range(len(betas)):
            for c in range(len(gammas)):
                if failed[r, c] and np.isnan(grid[r, c]):
                    ax.text(c, r, "failed", ha="center", va="center", color="red", fontsize=8)
                elif not np.isnan(grid[r, c]):
                    ax.text(c, r, f"{grid[r, c]:.3g}", ha="center", va="center", fontsize=8,
                            color="white" if grid[r, c] < (vmin + vmax) / 2 else "black")
        ax.set_xticks(range(len(gammas)), [f"{g:g}" for g in gammas])
        ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.set_xlabel("γ (gamma)")
        ax.set_ylabel("β (beta)")
        ax.set_title(f"lr = {lr:g}" if lr is not None else "lr = ?")
    fig.colorbar(image, ax=axes[0].tolist(), label=metric)
    fig.suptitle(f"{metric} over β × γ")
    _save_figure(fig, path)
    plt.close(fig)
    return True


def plot_metric_vs_gamma(jobs: list[Job], metric: str, path: Path) -> bool:
    """``metric`` against γ, one line per (β, learning rate). False when no completed job has γ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [j for j in _grid_points(jobs) if j.status == "completed" and _finite(j.metrics.get(metric))]
    if not done:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[tuple, list[tuple[float, float]]] = {}
    for j in done:
        series.setdefault((j.hparams["beta"], j.hparams.get("lr")), []).append((j.hparams["gamma"], j.metrics[metric]))
    for (beta, lr), pts in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        pts.sort()
        label = f"β={beta:g}" + (f", lr={lr:g}" if lr is not None else "")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("γ (gamma)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs γ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(series) > 8 else 1)
    _save_figure(fig, path)
    plt.close(fig)
    return True


@dataclass
class Report:
    jobs: list[Job]
    ranked: list[Job]
    out_dir: Path
    files: list[Path]
    best_line: str | None


def write_report(sweep_dir: str | Path, metric: str = "rewards/accuracies", mode: str = "auto",
                 out_dir: str | Path | None = None) -> Report:
    """Collect the jobs of ``sweep_dir`` and write the report files (see the module docstring).

    Raises ``UserError`` when ``sweep_dir`` holds no run or ``metric`` is in no completed job
    (the message lists the metrics there are)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: no such directory (give the sweep directory: hydra.sweep.dir)")
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise UserError(f"{sweep_dir}: no runs found (no meta.json below it)")
    completed = [j for j in jobs if j.status == "completed"]
    known = sorted({m for j in completed for m in j.metrics})
    higher_is_better(metric, mode)  # validates mode
    if completed and metric not in known:
        raise UserError(f"--metric {metric}: not recorded by any completed job; choose from: {', '.join(known)}")
    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    files: list[Path] = []
    if plot_heatmap(jobs, metric, out / "heatmap.png"):
        plots["β × γ heatmap"] = "heatmap.png"
        files.append(out / "heatmap.png")
    if plot_metric_vs_gamma(jobs, metric, out / "metric_vs_gamma.png"):
        plots[f"{metric} vs γ"] = "metric_vs_gamma.png"
        files.append(out / "metric_vs_gamma.png")
    write_atomic(out / "report.csv", build_csv(jobs, metric, mode))
    write_atomic(out / "report.md", build_markdown(sweep_dir, jobs, metric, mode, plots))
    files = [out / "report.md", out / "report.csv", *files]
    ranked = rank_jobs(jobs, metric, mode)
    return Report(jobs, ranked, out, files, best_override_line(ranked[0]) if ranked else None)
