"""The markdown report of ``simpo eval`` (``report.md``)."""

from __future__ import annotations

from simpo_cli.evaluation import diagnostics as D, ifeval as IF


def render_report(summary: dict) -> str:
    """``report.md`` of ``simpo eval`` from its ``eval.json`` content (``summary``): the pair metrics,
    the benchmark answer files, IFEval's sections and the local judge's win rate."""
    lines = [f"# simpo eval: {summary['model_id']}", "",
             f"- model: `{summary['model']}`", f"- reference: `{summary['reference']}`"]
    if summary.get("run"):
        lines.append(f"- run: `{summary['run']}`")
    p = summary.get("pairs")
    if p:
        ra, ll, sp = p["reward_accuracy"], p["avg_logps"], p["spearman_avg_logps_vs_length"]
        fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"  # noqa: E731
        start = p.get("reference_model")
        lines += ["", f"## Preference pairs ({p['n_pairs']} pairs, {p['source']}, split `{p['split']}`"
                  + {True: ", held out", False: ", NOT held out: the run's training pairs",
                     None: ", held-out status unknown (no train run given)"}[p["held_out"]] + ")", "",
                  "| metric | value |", "|---|---|",
                  f"| reward accuracy (objective reward) | {fmt(ra['objective'])} |",
                  f"| reward accuracy (length-normalised, SimPO) | {fmt(ra['length_normalized'])} |",
                  f"| reward accuracy (summed log-prob) | {fmt(ra['summed'])} |",
                  f"| mean margin ({p['margin_reward']} reward) | {fmt(p['margins'][p['margin_reward']]['mean'])} |",
                  *([f"| reference model: reward accuracy length-normalised / summed | "
                     f"{fmt(start['reward_accuracy']['length_normalized'])} / "
                     f"{fmt(start['reward_accuracy']['summed'])} |",
                     f"| reference model: mean margin (length_normalized reward) | "
                     f"{fmt(start['margins']['length_normalized']['mean'])} |"] if start else []),
                  f"| avg log-likelihood chosen / rejected (nats/token) | {fmt(ll['chosen'])} / {fmt(ll['rejected'])} |",
                  f"| Spearman(avg log-likelihood, length) chosen / rejected | {fmt(sp['chosen'])} / {fmt(sp['rejected'])} |"]
        kl = p.get("kl_chosen")
        lines.append("| KL(π_θ‖π_ref) on chosen, per token / per response (nats) | "
                     + (f"{fmt(kl['per_token'])} / {fmt(kl['per_sequence'])} |" if kl else "n/a (no reference) |"))
        lines += ["", "![margins](margins.png)", "", "![log-likelihood vs length](loglik_vs_length.png)"]
    if summary.get("benchmarks"):
        lines += ["", "## Benchmark answers", "", "| benchmark | file | prompts | mean tokens (per turn) | hit max_new_tokens |",
                  "|---|---|---|---|---|"]
        for name, b in summary["benchmarks"].items():
            st = b["length_tokens"]
            lines.append(f"| {name} | `{b['file']}` | {b['n_prompts']} | {st.get('mean', 0):.1f} | "
                         f"{st.get('truncated_fraction', 0):.1%} |")
    for name, b in (summary.get("benchmarks") or {}).items():
        if b.get("ifeval"):
            lines += IF.report_lines(name, b["ifeval"])
    lines += diagnostics_lines(summary)
    j = summary.get("judge")
    if j:
        lines += ["", f"## Local judge ({j['benchmark']}, reward model `{j['reward_model']}`)", "",
                  f"Win rate vs `{j['baseline']}`: **{j['win_rate']:.3f}** "
                  f"({j['confidence']:.0%} bootstrap CI {j['ci'][0]:.3f}–{j['ci'][1]:.3f}; "
                  f"{j['wins']} wins, {j['ties']} ties, {j['losses']} losses of {j['n']})"]
    return "\n".join(lines) + "\n"


def _excerpt(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters, safe in a markdown table cell."""
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", r"\|")


def diagnostics_lines(summary: dict) -> list[str]:
    """The findings (with remedies), the answers' length, loop rate and distinct-n before -> after
    per benchmark, and the looping answers (``simpo_cli.evaluation.diagnostics``)."""
    out: list[str] = []
    findings = (summary.get("diagnostics") or {}).get("findings")
    if findings is not None:
        out += ["", "## Findings", ""]
        out += [f"- {line.strip()}" if not line.startswith("  ") else f"  {line.strip()}"
                for line in D.lines(findings)] or ["None: no threshold of `diagnostics.*` was crossed."]
    benches = {n: b["answers"] for n, b in (summary.get("benchmarks") or {}).items() if b.get("answers")}
    if not benches:
        return out
    pct = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
    num = lambda v: "n/a" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"  # noqa: E731
    some = next(iter(benches.values()))["after"]
    out += ["", "## Answer diagnostics", "",
            f"Loop: more than {some['repetition']['threshold']:.0%} of an answer's words repeat an earlier "
            f"{some['repetition']['n']}-word span. Before: the starting model on the same prompts (IFEval-format "
            "sets; single-turn benchmarks with `diagnostics.answers_before=true`), else n/a.", "",
            "| benchmark | answers | mean tokens before → after | loop rate before → after | "
            + " | ".join(f"{k} before → after" for k in some["distinct"]) + " |",
            "|---|---|---|---|" + "---|" * len(some["distinct"])]
    for name, a in benches.items():
        after, before = a["after"], a.get("before") or {}
        out.append(f"| {name} | {after['n']} | {num(before.get('mean_tokens'))} → {num(after['mean_tokens'])} | "
                   f"{pct(before.get('repetition_rate'))} → {pct(after['repetition_rate'])} | "
                   + " | ".join(f"{num((before.get('distinct') or {}).get(k))} → {num(v)}"
                                for k, v in after["distinct"].items()) + " |")
    limit = some["max_listed"]
    for name, a in benches.items():
        for when in ("after", "before"):
            flagged = (a.get(when) or {}).get("flagged") or []
            if not flagged:
                continue
            out += ["", f"### {name}: looping answers, {'trained model' if when == 'after' else 'starting model'} "
                        f"({len(flagged)}" + (f", first {limit} listed" if len(flagged) > limit else "") + ")", "",
                    "| id | repeated share | repeated span | prompt | answer |", "|---|---|---|---|---|"]
            out += [f"| {f['id']} | {f['share']:.0%} | {_excerpt(f['repeated'], 60)} | {_excerpt(f['prompt'], 60)} | "
                    f"{_excerpt(f['answer'], 160)} |" for f in flagged[:limit]]
    return out
