"""What each stage prints when it ends (one table, then plain lines with the paths, so a path is
never wrapped or cut by the table's width), and the number it hands a sweeper (Optuna)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from simpo_cli.evaluation.diagnostics import lines as finding_lines
from simpo_cli.sweeps.job import metric_value


def print_train(result) -> None:
    table = Table(title="simpo train", show_header=False)
    table.add_row("steps", str(result.steps))
    if result.final_loss is not None:
        table.add_row("final loss", f"{result.final_loss:.4f}")
    if result.after:  # one row names the pairs, so no label is long enough to wrap at 80 columns
        table.add_row("pairs before -> after", result.pairs_split)
    for key in ("rewards/accuracies", "rewards/margins", "loss"):
        if key in result.after:
            table.add_row(key, f"{result.before[key]:.4f} -> {result.after[key]:.4f}")
    _diagnostic_rows(table, result.diagnostics.get("pairs"))
    Console().print(table)
    _print_findings(result.diagnostics.get("findings"))
    print(f"run directory: {result.run_dir}")


def _diagnostic_rows(table, pairs: dict | None) -> None:
    """Chosen and rejected log-likelihood before -> after and how they moved (diagnostics)."""
    if not pairs:
        return
    for side in ("chosen", "rejected"):
        table.add_row(f"log-likelihood {side}", f"{pairs[side + '_before']:.4f} -> {pairs[side + '_after']:.4f} "
                                                f"({pairs[side + '_change']:+.4f}) {pairs['unit']}")
    table.add_row("chosen and rejected", pairs["movement"])


def _print_findings(findings: list | None) -> None:
    """Each finding and its remedies (plain lines: a message must not be cut by the table)."""
    if findings:
        print(f"findings ({len(findings)}):")
        for line in finding_lines(findings):
            print(f"  {line}")


def train_value(result, cfg):
    return metric_value(result, cfg.sweep.metric)


def print_sft(result) -> None:
    table = Table(title="simpo sft", show_header=False)
    table.add_row("steps", str(result.steps))
    if result.final_loss is not None:
        table.add_row("final training loss", f"{result.final_loss:.4f}")
    if result.heldout_after is not None:
        table.add_row(f"held-out assistant-token loss ({result.heldout_size} records: {result.heldout_source})",
                      f"{result.heldout_before:.4f} -> {result.heldout_after:.4f} "
                      f"({100 * result.heldout_reduction:.1f}% lower)")
    Console().print(table)
    print(f"run directory: {result.run_dir}")
    print(f"next: simpo train model={result.run_dir}")


def sft_value(result, cfg):
    return result.heldout_after


def print_generate_pairs(result) -> None:
    table = Table(title="simpo generate-pairs", show_header=False)
    table.add_row("output directory", str(result.run_dir))
    table.add_row("prompts", str(result.prompts))
    table.add_row("pairs", str(result.pairs))
    for reason, count in sorted(result.dropped.items()):
        table.add_row(f"dropped: {reason}", str(count))
    if result.shards_done_before:
        table.add_row("shards already done (resumed)", str(result.shards_done_before))
    if result.samples_per_second:
        table.add_row("samples/s", f"{result.samples_per_second:.2f}")
    table.add_row("train on it", f"simpo train data=generated data.path={result.run_dir}")
    Console().print(table)


def generate_pairs_value(result, cfg):
    return result.pairs


def print_eval(result) -> None:
    s = result.summary
    table = Table(title="simpo eval", show_header=False)
    pairs = s.get("pairs")
    if pairs:
        start = pairs.get("reference_model")  # the starting model, beside the trained one
        for key, value in pairs["reward_accuracy"].items():
            if isinstance(value, float):
                was = start["reward_accuracy"].get(key) if start else None
                table.add_row(f"reward accuracy ({key})", f"{value:.4f}" + (f" (reference {was:.4f})"
                                                                              if isinstance(was, float) else ""))
        if start:
            table.add_row("mean margin (length_normalized)", f"{pairs['margins']['length_normalized']['mean']:.4f} "
                          f"(reference {start['margins']['length_normalized']['mean']:.4f})")
        kl = pairs.get("kl_chosen")
        if kl:
            table.add_row("KL(policy||ref) per token, chosen", f"{kl['per_token']:.4f}")
    for name, b in s.get("benchmarks", {}).items():
        table.add_row(f"{name} answers", f"{b['file']} ({b['n_prompts']} prompts)")
        for label, value in _ifeval_rows(b.get("ifeval")):
            table.add_row(label, value)
        for label, value in _answer_rows(b.get("answers")):
            table.add_row(label, value)
    if s.get("judge"):
        j = s["judge"]
        table.add_row("judge win rate", f"{j['win_rate']:.3f} [{j['ci'][0]:.3f}, {j['ci'][1]:.3f}]")
    Console().print(table)
    _print_findings((s.get("diagnostics") or {}).get("findings"))
    print(f"eval directory: {result.out_dir}")


def _answer_rows(a: dict | None) -> list[tuple[str, str]]:
    """Mean answer length and loop rate, before -> after where the starting model answered too."""
    if not a:
        return []
    after, before = a["after"], a.get("before")
    fmt = lambda st, key, f: "n/a" if not st or st.get(key) is None else format(st[key], f)  # noqa: E731
    arrow = lambda key, f: (f"{fmt(before, key, f)} -> " if before else "") + fmt(after, key, f)  # noqa: E731
    return [("  mean answer tokens" + (" (start -> trained)" if before else ""), arrow("mean_tokens", ".1f")),
            ("  looping answers" + (" (start -> trained)" if before else ""),
             arrow("repetition_rate", ".1%") + (f" ({len(after['flagged'])} of {after['n']} answers, listed in "
                                                "report.md)" if after["flagged"] else ""))]


def _ifeval_rows(s: dict | None) -> list[tuple[str, str]]:
    """The four IFEval metrics with intervals, and with a starting model its score, the paired
    difference with its interval and McNemar's p (``simpo_cli.evaluation.ifeval_run``)."""
    rows = []
    for k, m in (s or {}).get("metrics", {}).items():
        rows.append((f"ifeval {k}", f"{m['value']:.4f} [{m['ci'][0]:.4f}, {m['ci'][1]:.4f}]"))
        if s.get("before"):
            d, was = s["paired"][k], s["before"]["metrics"][k]["value"]
            text = f"{was:.4f}; after - before {d['difference']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
            if "mcnemar" in d:
                text += f", McNemar p={d['mcnemar']['p_value']:.3g}"
            rows.append(("  starting model", text))
    if s and s.get("unavailable_reason"):
        rows.append(("ifeval unavailable", f"{s['n_unavailable']} instructions (NLTK data): counted nowhere"))
    return rows


def eval_value(result, cfg):
    return (result.summary.get("pairs") or {}).get("reward_accuracy", {}).get("objective")


def print_run(result) -> None:
    """One row per step: its directory, status, whether this command ran it, its headline numbers."""
    table = Table(title=f"simpo run: {result.name}")
    for column in ("stage", "directory", "status", "this run", "headline"):
        table.add_column(column)
    for step in result.steps:
        shown = {k: v for k, v in step["metrics"].items()
                 if "/" not in k or k.count("/") == 1 and k.endswith(("prompt_loose", "prompt_strict"))}
        table.add_row(str(step["index"]), step["dir"], str(step["status"]),
                      "ran" if step["index"] in result.ran else "skipped",
                      ", ".join(f"{k} {v:.4g}" for k, v in list(shown.items())[:6]))
    Console().print(table)
    print(f"experiment directory: {result.run_dir}")


def run_value(result, cfg):
    metric = cfg.sweep.get("metric")
    return result.metrics.get(metric) if metric else None
