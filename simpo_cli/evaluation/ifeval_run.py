"""``simpo eval``'s IFEval step: score the answers, compare with the starting model, write the files.

Files (under the eval directory, ``ifeval/``):

- ``input_response_data.jsonl``: ``{"prompt", "response"}`` per prompt, the input of the reference
  ``instruction_following_eval/evaluation_main.py`` (so its numbers can be checked independently);
- ``eval_results_strict.jsonl``, ``eval_results_loose.jsonl``: the reference's own outputs
  (``follow_all_instructions``, ``follow_instruction_list``), plus ``key``;
- ``before/`` the same three files for the starting model, when there is one.

The starting model's answers are cached under ``<paths.cache_dir>/ifeval/<key>.json``; the key is a
SHA-256 of the model (its config, and for a local checkpoint its files' names, sizes and
modification times), the tokenizer (vocabulary and chat template), the prompts, and every decoding
setting (max new tokens, temperature, top-p, stop tokens, template on/off, seed, dtype, device
type, generation batch size). A sweep's runs share their start, so it is answered once. Scores are recomputed from the
cached answers (milliseconds), so a newer ``if-verifiable`` never reads stale scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from simpo_cli.data import ifeval as checks
from simpo_cli.data.cache import tokenizer_fingerprint
from simpo_cli.evaluation import ifeval as IF
from simpo_cli.evaluation import metrics as M
from simpo_cli.evaluation.paired import mcnemar_exact, paired_difference
from simpo_cli.files import write_atomic, write_json

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def _listing(path: Path) -> list:
    if path.is_file():
        return [[path.name, path.stat().st_size, path.stat().st_mtime_ns]]
    return sorted([str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns]
                  for p in path.rglob("*") if p.is_file())


def answers_key(model_cfg, source, tokenizer, prompts, decoding: dict) -> str:
    """The cache key of one model's answers to ``prompts`` (see the module docstring); ``source``:
    the model's ``models.loading.ModelSource``."""
    model = OmegaConf.to_container(model_cfg, resolve=True)
    weights = None
    if source.location is not None:
        loc = Path(source.location)
        weights = _listing(loc) if loc.exists() else None  # a Hub id: its name and revision are in `model`
    material = {"v": CACHE_VERSION, "model": model, "weights": weights, "tokenizer": tokenizer_fingerprint(tokenizer),
                "prompts": [[p.id, p.turns] for p in prompts], "decoding": decoding}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


def read_cached(cache_dir: str | Path, key: str, n: int):
    """``(answers, counts)`` cached under ``key``, or ``None``."""
    path = Path(cache_dir).expanduser() / "ifeval" / f"{key}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:  # written atomically: only a foreign file gets here
        return None
    if len(data.get("answers", [])) != n:
        return None
    return data["answers"], data["counts"]


def write_cached(cache_dir: str | Path, key: str, answers, counts, model: str) -> None:
    path = Path(cache_dir).expanduser() / "ifeval" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"model": model, "answers": answers, "counts": counts})


def score(prompts, answers: list[str], cache_dir: str | Path) -> tuple[list, list, str | None]:
    """Per prompt ``(strict, loose)`` instruction results and the reason NLTK's types are
    unavailable (``None`` when they are scored)."""
    reason = checks.install_punkt(cache_dir)
    unavailable = frozenset(checks.NLTK_TYPES) if reason else frozenset()
    strict, loose = [], []
    for p, a in zip(prompts, answers):
        s, l = checks.score_response(p.extra["ifeval"], a, unavailable=unavailable)
        strict.append(s)
        loose.append(l)
    return strict, loose, reason


def evaluate(out_dir: Path, prompts, answers: list[str], counts: list[int], max_new_tokens: int, *,
             cache_dir: str | Path, seed: int, before: dict | None = None, n_resamples: int = 1000,
             confidence: float = 0.95, subdir: str = "ifeval") -> tuple[dict, list[str]]:
    """Score ``answers`` (one per prompt; ``prompts``: ``BenchPrompt`` with ``extra['ifeval']``),
    write the files, and with ``before`` (``{"model", "answers", "counts"}``: the starting model's
    answers to the same prompts) add its scores, the paired differences and McNemar's test.
    The files go to ``out_dir/<subdir>/`` (the benchmark's name: two IFEval-format prompt sets,
    e.g. IFEval and a dev split, in one eval). Returns ``(summary, relative paths written)``."""
    items = [p.extra["ifeval"] for p in prompts]
    strict, loose, reason = score(prompts, answers, cache_dir)
    summary = IF.summarize(items, strict, loose, n_resamples=n_resamples, confidence=confidence, seed=seed)
    summary.update(_lengths(answers, counts, max_new_tokens), max_new_tokens=max_new_tokens,
                   unavailable_reason=reason)
    files = _write(out_dir, subdir, items, answers, strict, loose)
    if before is not None:
        b_strict, b_loose, _ = score(prompts, before["answers"], cache_dir)
        b_sum = IF.summarize(items, b_strict, b_loose, n_resamples=n_resamples, confidence=confidence, seed=seed)
        b_sum.update(_lengths(before["answers"], before["counts"], max_new_tokens), model=before["model"],
                     cache_key=before.get("cache_key"))
        summary["before"] = b_sum
        idx = IF.resample_indices(len(items), n_resamples, seed)
        after_parts, before_parts = IF.metric_parts(strict, loose), IF.metric_parts(b_strict, b_loose)
        paired = {}
        for k in IF.METRICS:
            paired[k] = paired_difference(*before_parts[k], *after_parts[k], idx, confidence)
            if k.startswith("prompt"):
                # prompts with no available instruction (den 0) are left out of the test too
                keep = after_parts[k][1] > 0
                paired[k]["mcnemar"] = mcnemar_exact(before_parts[k][0][keep] > 0, after_parts[k][0][keep] > 0)
        summary["paired"] = paired
        files += _write(out_dir, f"{subdir}/before", items, before["answers"], b_strict, b_loose)
    return summary, files


def _lengths(answers, counts, max_new_tokens) -> dict:
    return {"length_tokens": M.length_stats(counts, max_new_tokens),
            "length_words": M.length_stats([checks.count_words(a) for a in answers])}


def _write(out_dir: Path, folder: str, items, answers, strict, loose) -> list[str]:
    texts = {f"{folder}/input_response_data.jsonl": IF.response_lines(items, answers),
             f"{folder}/eval_results_strict.jsonl": IF.result_lines(items, answers, strict),
             f"{folder}/eval_results_loose.jsonl": IF.result_lines(items, answers, loose)}
    for rel, text in texts.items():
        write_atomic(Path(out_dir) / rel, text)
    return list(texts)
