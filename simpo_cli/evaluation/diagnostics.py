"""Run diagnostics: turn what a run records into plain-language findings about the ways preference
runs usually go wrong (issue 29).

Three sources, each read by pure functions over plain records (dicts and lists), so a test can
feed synthetic histories:

- the held-out pair metrics before and after training (``meta.json["pairs_before"|"pairs_after"]``,
  the trainer's ``logps/*`` and ``rewards/*`` names): ``pair_diagnostics``;
- the training log ``metrics.jsonl`` over steps: ``step_findings``;
- benchmark answers after (and, where ``simpo eval`` has them, before) training: ``answer_stats``
  and ``answer_findings``.

A finding is a ``Finding``: a ``code`` (stable, for tables and tests), a ``message`` that names the
numbers, and the usual remedies with their source. Every threshold is a field of
``DiagnosticsConfig`` (the ``diagnostics`` section of the ``train`` and ``eval`` configs), whose
docstring gives each default's reason.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List

# The remedies practitioners are pointed to, with where the advice comes from.
SIMPO_README = "princeton-nlp/SimPO README, 'Hyperparameter tuning'"
SIMPO_ISSUE_42 = "princeton-nlp/SimPO issue #42"


@dataclass(frozen=True)
class Remedy:
    text: str
    source: str


LOWER_LR = Remedy("a lower learning rate (hparams.learning_rate; the SimPO authors grid-search 3e-7, 5e-7, 1e-6 "
                  "and report that a large one, e.g. 1e-5, gives incoherent or repetitive answers)", SIMPO_README)
LARGER_BETA = Remedy("a larger β (objective.beta; SimPO needs a much larger β than DPO, often 10 does better "
                     "than 2-2.5)", SIMPO_README)
SFT_WEIGHT = Remedy("an SFT term on the chosen answer (objective.sft_weight > 0, e.g. 1.0), which keeps its "
                    "likelihood up", SIMPO_ISSUE_42)
DRIFT_REMEDIES = (LOWER_LR, LARGER_BETA, SFT_WEIGHT)


@dataclass
class DiagnosticsConfig:
    """Thresholds of every finding (config section ``diagnostics``; each is a field, so
    ``diagnostics.chosen_drop=0.05`` on the command line changes it).

    ``chosen_drop`` (0.02): the held-out chosen log-likelihood must fall by more than this *share
    of its starting value* (a relative drop, so the same threshold holds for objectives that log
    the length-averaged log-likelihood, nats/token, and for those that log the summed one,
    nats/response: the pairs and their lengths are the same before and after). At SmolLM2's
    ~ -2.6 nats/token, 2% is ~0.05 nats/token, i.e. the chosen answers' per-token probability
    fell by ~5%: the README's 12-step SmolLM2 run (-2.571 -> -2.679, 4.2%, margin up) is flagged,
    a run whose chosen likelihood moved by under 1% is not.

    ``falling_fraction`` (0.5) and ``min_logged_steps`` (4): ``rewards/chosen`` and
    ``rewards/rejected`` "fall together for most of the run" when both are below their first
    logged value at more than half of the later logged training steps, and there are at least 4
    such steps (fewer cannot show "most of a run").

    ``spike_factor`` (3.0), ``spike_window`` (5), ``spike_min_history`` (3): a logged ``loss`` or
    ``grad_norm`` spikes when it exceeds 3x the median of the up to 5 values logged before it
    (at least 3 of them). The median of a short window follows a slowly falling loss and ignores
    one earlier outlier; 3x is above the batch-to-batch spread of a logged average (each logged
    value already averages ``trainer.logging_steps`` batches) and well below the order-of-magnitude
    jumps of a diverging run.

    ``repetition_n`` (4) and ``repetition_threshold`` (0.25): an answer loops when more than a
    quarter of its words are covered by 4-word spans that already occurred earlier in it
    (``repetition_share``). Four words rarely repeat by accident in prose ("one of the most" once
    is 8% of a 50-word answer); a sentence said twice covers ~50%, three times ~67%.

    ``repetition_rate`` (0.05): ``answers_repeat`` is reported when at least 5% of the answers
    loop after training (and, with the starting model's answers, more than before).

    ``length_growth`` (0.2): ``answers_longer`` when the mean answer length in tokens grew by more
    than 20% over the starting model's, the length exploitation SimPO's length normalisation is
    meant to prevent (PAPER.md).

    ``distinct_n`` ([1, 2]): the n of the distinct-n ratios reported (Li et al. 2016).

    ``max_listed`` (10): at most this many flagged answers are listed in ``report.md`` (all are in
    ``eval.json``).

    ``answers_before`` (false; ``simpo eval`` only): the starting model also answers the
    single-turn benchmarks (AlpacaEval, Arena-Hard), decoded as the trained model's and cached as
    IFEval's are, so their loop rate and length have a "before" too. Off by default: it doubles
    their generation time. IFEval-format sets always have it.
    """

    chosen_drop: float = 0.02
    falling_fraction: float = 0.5
    min_logged_steps: int = 4
    spike_factor: float = 3.0
    spike_window: int = 5
    spike_min_history: int = 3
    repetition_n: int = 4
    repetition_threshold: float = 0.25
    repetition_rate: float = 0.05
    length_growth: float = 0.2
    distinct_n: List[int] = field(default_factory=lambda: [1, 2])
    max_listed: int = 10
    answers_before: bool = False


def config_problems(cfg) -> list[str]:
    """Every out-of-range ``diagnostics.*`` threshold, one line each (for the stage validators)."""
    c = _cfg(cfg)
    checks = [("chosen_drop", c.chosen_drop >= 0, ">= 0"),
              ("falling_fraction", 0 <= c.falling_fraction < 1, "in [0, 1)"),
              ("min_logged_steps", c.min_logged_steps >= 1, ">= 1"),
              ("spike_factor", c.spike_factor > 1, "> 1"),
              ("spike_window", c.spike_window >= 1, ">= 1"),
              ("spike_min_history", 1 <= c.spike_min_history <= c.spike_window, "in [1, spike_window]"),
              ("repetition_n", c.repetition_n >= 1, ">= 1"),
              ("repetition_threshold", 0 <= c.repetition_threshold < 1, "in [0, 1)"),
              ("repetition_rate", 0 <= c.repetition_rate <= 1, "in [0, 1]"),
              ("length_growth", c.length_growth >= 0, ">= 0"),
              ("distinct_n", all(n >= 1 for n in c.distinct_n), "a list of n >= 1"),
              ("max_listed", c.max_listed >= 0, ">= 0")]
    return [f"diagnostics.{key} must be {rule}, got {getattr(c, key)}" for key, ok, rule in checks if not ok]


@dataclass
class Finding:
    # likelihood_displacement | rewards_fall_together | loss_spike | grad_norm_spike | answers_repeat
    # | answers_longer
    code: str
    message: str  # plain language, with the numbers
    remedies: list[Remedy] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def lines(findings: list[dict | Finding]) -> list[str]:
    """One line per finding (``code: message``) and one per remedy (``- text (source)``), for the
    terminal and ``report.md``; accepts findings as written to JSON."""
    out = []
    for f in findings:
        f = f.as_dict() if isinstance(f, Finding) else f
        out.append(f"{f['code']}: {f['message']}")
        out += [f"  - try {r['text']} ({r['source']})" for r in f.get("remedies", [])]
    return out


def _cfg(cfg) -> DiagnosticsConfig:
    """A ``DiagnosticsConfig`` from ``None`` (defaults), itself, or a config node/dict."""
    if cfg is None:
        return DiagnosticsConfig()
    if isinstance(cfg, DiagnosticsConfig):
        return cfg
    return DiagnosticsConfig(**{k: (list(v) if k == "distinct_n" else v) for k, v in dict(cfg).items()})


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------- held-out pairs


def _movement(chosen: float, rejected: float) -> str:
    """How the two log-likelihoods moved: together (``both fell``/``both rose``) or ``apart``."""
    if chosen < 0 and rejected < 0:
        return "both fell"
    if chosen > 0 and rejected > 0:
        return "both rose"
    word = lambda d: "rose" if d > 0 else "fell" if d < 0 else "unchanged"  # noqa: E731
    return f"apart (chosen {word(chosen)}, rejected {word(rejected)})"


def pair_diagnostics(before: dict, after: dict, cfg=None, *, unit: str = "nats/token",
                     pairs: str = "held-out") -> dict:
    """Compare the pair metrics before and after training (``trainer.pair_metrics``: keys
    ``logps/chosen``, ``logps/rejected``, ``rewards/margins``).

    ``unit``: what ``logps/*`` are in (``nats/token`` for length-averaged objectives,
    ``nats/response`` for summed ones); ``pairs``: what they are, for the message (``held-out``,
    ``training-pair``). Returns ``{"unit", "chosen_before", "chosen_after",
    "chosen_change", "rejected_before", "rejected_after", "rejected_change", "margin_change",
    "movement", "findings"}`` (``movement``: ``both fell``, ``both rose``, or ``apart (chosen
    rose, rejected fell)`` and the like), or ``{}`` when either side lacks the numbers (e.g.
    ``trainer.evaluate=false``).
    The finding ``likelihood_displacement``: the chosen log-likelihood fell by more than
    ``chosen_drop`` of its magnitude while the margin grew."""
    c = _cfg(cfg)
    keys = ("logps/chosen", "logps/rejected", "rewards/margins")
    if not all(_finite((before or {}).get(k)) and _finite((after or {}).get(k)) for k in keys):
        return {}
    cb, ca = before["logps/chosen"], after["logps/chosen"]
    rb, ra = before["logps/rejected"], after["logps/rejected"]
    mb, ma = before["rewards/margins"], after["rewards/margins"]
    out = {"unit": unit, "chosen_before": cb, "chosen_after": ca, "chosen_change": ca - cb,
           "rejected_before": rb, "rejected_after": ra, "rejected_change": ra - rb,
           "margin_before": mb, "margin_after": ma, "margin_change": ma - mb,
           "movement": _movement(ca - cb, ra - rb), "findings": []}
    drop = (cb - ca) / abs(cb) if cb else 0.0  # relative: the same threshold for both units
    if drop > c.chosen_drop and ma > mb:
        out["findings"].append(Finding(
            "likelihood_displacement",
            f"{pairs} chosen log-likelihood fell {cb:.4f} -> {ca:.4f} {unit} ({ca - cb:+.4f}, {100 * drop:.1f}% "
            f"> {100 * c.chosen_drop:g}%) while the margin grew {mb:.4f} -> {ma:.4f}; rejected {rb:.4f} -> {ra:.4f} "
            f"({ra - rb:+.4f}): {out['movement']}. The margin grew because the rejected answers lost likelihood "
            "faster, not because the chosen ones gained it (likelihood displacement)",
            list(DRIFT_REMEDIES),
            {"chosen_change": ca - cb, "rejected_change": ra - rb, "margin_change": ma - mb,
             "chosen_drop_fraction": drop}).as_dict())
    return out


# --------------------------------------------------------------------------- training steps


def read_records(path: str | Path) -> list[dict]:
    """``metrics.jsonl`` as a list of dicts (a missing file: ``[]``; a partial last line, left by
    a killed run, is skipped)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _steps(steps: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(s) for s in steps[:limit])
    return shown + (f", ... ({len(steps)} in all)" if len(steps) > limit else "")


def step_findings(records: list[dict], cfg=None) -> list[dict]:
    """Findings over the training log (``metrics.jsonl`` records; the training ones are those
    with ``loss``): ``rewards_fall_together`` and ``loss_spike`` / ``grad_norm_spike`` (see
    ``DiagnosticsConfig`` for the definitions). Each names the steps."""
    c = _cfg(cfg)
    train = [r for r in records if _finite(r.get("loss"))]
    findings: list[dict] = []
    both = [r for r in train if _finite(r.get("rewards/chosen")) and _finite(r.get("rewards/rejected"))]
    if len(both) - 1 >= c.min_logged_steps:
        first, later = both[0], both[1:]
        fell = [r for r in later if r["rewards/chosen"] < first["rewards/chosen"]
                and r["rewards/rejected"] < first["rewards/rejected"]]
        share = len(fell) / len(later)
        if share > c.falling_fraction:
            last = later[-1]
            findings.append(Finding(
                "rewards_fall_together",
                f"rewards/chosen and rewards/rejected were both below their first logged values (step "
                f"{first.get('step')}: {first['rewards/chosen']:.4f} / {first['rewards/rejected']:.4f}) at "
                f"{len(fell)} of {len(later)} logged steps ({100 * share:.0f}% > {100 * c.falling_fraction:g}%): "
                f"steps {_steps([r.get('step') for r in fell])}; last logged {last['rewards/chosen']:.4f} / "
                f"{last['rewards/rejected']:.4f}. The margin can grow while both answers become less likely",
                list(DRIFT_REMEDIES),
                {"share": share, "steps": [r.get("step") for r in fell]}).as_dict())
    for key, code in (("loss", "loss_spike"), ("grad_norm", "grad_norm_spike")):
        spikes = []
        values = [(r.get("step"), r[key]) for r in train if _finite(r.get(key))]
        for i, (step, v) in enumerate(values):
            history = [x for _, x in values[max(0, i - c.spike_window):i]]
            if len(history) < c.spike_min_history:
                continue
            ref = statistics.median(history)
            if ref > 0 and v > c.spike_factor * ref:
                spikes.append((step, v, ref))
        if spikes:
            detail = "; ".join(f"step {s}: {v:.4g} (median before {ref:.4g})" for s, v, ref in spikes[:8])
            findings.append(Finding(
                code, f"{key} spiked above {c.spike_factor:g}x the median of the preceding logged values at "
                      f"{len(spikes)} logged step(s): {detail}",
                [LOWER_LR], {"steps": [s for s, _, _ in spikes]}).as_dict())
    return findings


# --------------------------------------------------------------------------- answers

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: a tokenizer-free unit, so rates compare across
    models."""
    return _WORD.findall(text.lower())


def repetition_share(text: str, n: int = 4) -> tuple[float, str]:
    """The share of ``text``'s words (``words``) covered by an n-gram that already occurred at an
    earlier position of the same text, and the first such n-gram (``""`` if none).

    A span said k times covers ``(k-1)/k`` of itself (its first occurrence is not a repeat).
    No library in the project's environment has this metric (NLTK gives n-grams, not loop
    coverage), hence this short function."""
    toks = words(text)
    seen: set[tuple] = set()
    covered = [False] * len(toks)
    first = ""
    for i in range(len(toks) - n + 1):
        gram = tuple(toks[i:i + n])
        if gram in seen:
            covered[i:i + n] = [True] * n
            first = first or " ".join(gram)
        seen.add(gram)
    return (sum(covered) / len(toks) if toks else 0.0), first


def distinct_n(texts: list[str], n: int) -> float | None:
    """distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
    Conversation Models"): distinct n-grams / all n-grams over every answer (``words``); ``None``
    when the answers have no n-gram."""
    grams = [tuple(t[i:i + n]) for t in map(words, texts) for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def answer_stats(answers: list[dict], cfg=None) -> dict:
    """Length, repetition and diversity of a set of answers, each ``{"id", "prompt", "answer",
    "tokens"}`` (tokens: the generated token count). Returns ``{"n", "mean_tokens",
    "repetition_rate", "distinct": {"distinct-1": ...}, "flagged": [{"id", "prompt", "share",
    "repeated", "answer"}]}``: ``repetition_rate`` is the share of answers whose
    ``repetition_share`` exceeds ``repetition_threshold``."""
    c = _cfg(cfg)
    flagged = []
    for a in answers:
        share, gram = repetition_share(a["answer"], c.repetition_n)
        if share > c.repetition_threshold:
            flagged.append({"id": a["id"], "prompt": a["prompt"], "share": share, "repeated": gram,
                            "answer": a["answer"]})
    tokens = [a["tokens"] for a in answers if _finite(a.get("tokens"))]
    return {"n": len(answers), "mean_tokens": sum(tokens) / len(tokens) if tokens else None,
            "repetition_rate": len(flagged) / len(answers) if answers else None,
            "repetition": {"n": c.repetition_n, "threshold": c.repetition_threshold},
            "distinct": {f"distinct-{k}": distinct_n([a["answer"] for a in answers], k) for k in c.distinct_n},
            "flagged": flagged, "max_listed": c.max_listed}


def answer_findings(name: str, after: dict, before: dict | None = None, cfg=None) -> list[dict]:
    """Findings on one benchmark's answers (``answer_stats`` after training, and before where the
    starting model answered the same prompts): ``answers_repeat`` and ``answers_longer``."""
    c = _cfg(cfg)
    findings: list[dict] = []
    rate, was = after.get("repetition_rate"), (before or {}).get("repetition_rate")
    if rate is not None and rate >= c.repetition_rate and (was is None or rate > was):
        since = f" (starting model: {was:.1%})" if was is not None else " (no starting-model answers to compare)"
        ids = ", ".join(str(f["id"]) for f in after["flagged"][:5])
        findings.append(Finding(
            "answers_repeat",
            f"{name}: {len(after['flagged'])} of {after['n']} answers ({rate:.1%}) loop: more than "
            f"{c.repetition_threshold:.0%} of their words repeat an earlier {c.repetition_n}-word span{since}; "
            f"e.g. {ids}",
            [LOWER_LR], {"rate": rate, "rate_before": was}).as_dict())
    now, then = after.get("mean_tokens"), (before or {}).get("mean_tokens")
    if _finite(now) and _finite(then) and then > 0 and (now - then) / then > c.length_growth:
        findings.append(Finding(
            "answers_longer",
            f"{name}: mean answer length grew {then:.1f} -> {now:.1f} tokens ({(now - then) / then:+.0%} > "
            f"+{c.length_growth:.0%})",
            [LOWER_LR], {"mean_tokens": now, "mean_tokens_before": then}).as_dict())
    return findings
