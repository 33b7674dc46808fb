"""IFEval (Zhou et al. 2023, arXiv 2311.07911): the four metrics, their bootstrap intervals, the
files in the reference's layout and the report section. The records and their checks are
``simpo_cli.data.ifeval``'s.

- **prompt-level** accuracy: the fraction of prompts whose every instruction is followed;
- **instruction-level**: followed instructions / all instructions (micro average over prompts);

each strict and loose. Intervals: percentile bootstrap over prompts (one set of resamples for all
four metrics). Unavailable instructions (``None``) count in no numerator or denominator.
"""

from __future__ import annotations

import json
import math

import numpy as np

from simpo_cli.data.ifeval import NLTK_TYPES, IFEvalPrompt

METRICS = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")


# --------------------------------------------------------------------------- metrics


def counts(results: list[list[bool | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, ``(followed, available)`` instruction counts, ``[N]`` each. Unavailable
    instructions (``None``) count in neither."""
    followed = np.array([sum(1 for r in rs if r) for rs in results], dtype=np.float64)
    available = np.array([sum(1 for r in rs if r is not None) for rs in results], dtype=np.float64)
    return followed, available


def prompt_level(results: list[list[bool | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, ``(all followed, 1)``; prompts with no available instruction get ``(0, 0)``
    so they count nowhere."""
    followed, available = counts(results)
    ok = (available > 0).astype(np.float64)
    return ((followed == available) & (available > 0)).astype(np.float64), ok


def metric_parts(strict: list, loose: list) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each metric as a per-prompt ratio ``sum(numerator) / sum(denominator)``, the form the
    bootstrap resamples (prompts are the unit, whatever the metric)."""
    return {"prompt_strict": prompt_level(strict), "prompt_loose": prompt_level(loose),
            "instruction_strict": counts(strict), "instruction_loose": counts(loose)}


def ratio(num, den) -> float:
    d = float(np.sum(den))
    return float(np.sum(num)) / d if d else math.nan


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``[n_resamples, n]`` prompt indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_ratio(num, den, idx: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``sum(num[i]) / sum(den[i])`` over resampled prompt sets ``idx``
    (``[R, N]``). NaNs when there are no prompts."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if not num.size:
        return math.nan, math.nan
    d = den[idx].sum(axis=1)
    vals = np.divide(num[idx].sum(axis=1), d, out=np.full(d.shape, np.nan), where=d > 0)
    lo, hi = np.nanquantile(vals, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def summarize(prompts: list[IFEvalPrompt], strict: list, loose: list, *, n_resamples: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> dict:
    """The four metrics with percentile-bootstrap intervals (prompts resampled; one set of
    resamples for all four), the per-instruction-type table and the unavailable count."""
    idx = resample_indices(len(prompts), n_resamples, seed) if prompts else np.zeros((0, 0), int)
    metrics = {}
    for name, (num, den) in metric_parts(strict, loose).items():
        lo, hi = bootstrap_ratio(num, den, idx, confidence)
        metrics[name] = {"value": ratio(num, den), "ci": [lo, hi]}
    by_type: dict[str, dict] = {}
    for p, s, l in zip(prompts, strict, loose):
        for iid, a, b in zip(p.instruction_id_list, s, l):
            row = by_type.setdefault(iid, {"n": 0, "strict": 0, "loose": 0, "unavailable": 0})
            if a is None:
                row["unavailable"] += 1
                continue
            row["n"] += 1
            row["strict"] += int(a)
            row["loose"] += int(b)
    for row in by_type.values():
        row["strict_accuracy"] = row["strict"] / row["n"] if row["n"] else math.nan
        row["loose_accuracy"] = row["loose"] / row["n"] if row["n"] else math.nan
    unavailable = sum(r["unavailable"] for r in by_type.values())
    return {"n_prompts": len(prompts), "n_instructions": sum(len(p.instruction_id_list) for p in prompts),
            "n_unavailable": unavailable, "metrics": metrics, "confidence": confidence,
            "n_resamples": n_resamples, "by_type": dict(sorted(by_type.items()))}


# --------------------------------------------------------------------------- files


def response_lines(prompts: list[IFEvalPrompt], responses: list[str]) -> str:
    """``input_response_data.jsonl``: ``{"prompt", "response"}`` per line, the file the reference
    ``evaluation_main.py --input_response_data`` reads."""
    return "".join(json.dumps({"prompt": p.prompt, "response": r}, ensure_ascii=False) + "\n"
                   for p, r in zip(prompts, responses))


def result_lines(prompts: list[IFEvalPrompt], responses: list[str], follow: list[list]) -> str:
    """``eval_results_{strict,loose}.jsonl`` as the reference writes them (``instruction_id_list``,
    ``prompt``, ``response``, ``follow_all_instructions``, ``follow_instruction_list``), plus
    ``key``; an unavailable instruction is ``null`` in the list and left out of ``follow_all``."""
    lines = []
    for p, r, f in zip(prompts, responses, follow):
        avail = [x for x in f if x is not None]
        lines.append(json.dumps({"key": p.key, "instruction_id_list": list(p.instruction_id_list), "prompt": p.prompt,
                                 "response": r, "follow_all_instructions": bool(avail) and all(avail),
                                 "follow_instruction_list": f}, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def report_lines(name: str, s: dict) -> list[str]:
    """Markdown for one IFEval result (``benchmarks.<name>.ifeval`` of ``eval.json``)."""
    fmt = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"  # noqa: E731
    m = s["metrics"]
    c = f"{s['confidence']:.0%}"
    lines = ["", f"## IFEval ({name}: {s['n_prompts']} prompts, {s['n_instructions']} instructions, "
             f"greedy, max {s['max_new_tokens']} new tokens)", "",
             f"| metric | value | {c} bootstrap interval |", "|---|---|---|"]
    for k in METRICS:
        lines.append(f"| {k} | {fmt(m[k]['value'])} | {fmt(m[k]['ci'][0])} – {fmt(m[k]['ci'][1])} |")
    lt, lw = s["length_tokens"], s["length_words"]
    lines += ["", f"Response length: {lt.get('mean', 0):.1f} tokens (median {lt.get('median', 0):.0f}), "
              f"{lw.get('mean', 0):.1f} words (median {lw.get('median', 0):.0f}); "
              f"{lt.get('truncated_fraction', 0):.1%} of responses hit max_new_tokens."]
    if s.get("unavailable_reason"):
        lines += ["", f"**{s['n_unavailable']} instructions unavailable** ({', '.join(NLTK_TYPES)}): "
                  f"{s['unavailable_reason']}. They count in no metric."]
    before = s.get("before")
    if before:
        d = s["paired"]
        lines += ["", f"### Before → after (starting model `{before['model']}`, same prompts)", "",
                  f"| metric | before | after | difference | {c} paired bootstrap interval |", "|---|---|---|---|---|"]
        for k in METRICS:
            lines.append(f"| {k} | {fmt(before['metrics'][k]['value'])} | {fmt(m[k]['value'])} | "
                         f"{d[k]['difference']:+.4f} | {fmt(d[k]['ci'][0])} – {fmt(d[k]['ci'][1])} |")
        for k in ("prompt_strict", "prompt_loose"):
            mc = d[k]["mcnemar"]
            lines.append(f"\nMcNemar exact test, {k}: {mc['gained']} prompts gained, {mc['lost']} lost, "
                         f"p = {mc['p_value']:.4g}")
    lines += ["", "| instruction type | n | strict | loose |", "|---|---|---|---|"]
    for iid, row in s["by_type"].items():
        na = f" ({row['unavailable']} unavailable)" if row["unavailable"] else ""
        lines.append(f"| `{iid}` | {row['n']}{na} | {fmt(row['strict_accuracy'])} | {fmt(row['loose_accuracy'])} |")
    return lines
