"""Verifiable rewards for ``simpo generate-pairs``: scorers that check answers with a program
instead of a reward model (no weights, no GPU, exact and reproducible).

- ``scorer=ifeval``: the fraction of the prompt's IFEval instructions a candidate follows
  (``scorer.mode=loose|strict``, IFEval's two rules; checks by ``if-verifiable``, see
  ``simpo_cli.data.ifeval``). Each prompt record carries IFEval's ``instruction_id_list``
  and ``kwargs``.
- ``scorer=function scorer.function=package.module:name``: any Python reward function with TRL's
  reward-function convention (TRL 1.16 ``GRPOTrainer._calculate_rewards``), so one written for
  ``GRPOTrainer(reward_funcs=[fn])`` works unchanged::

      fn(prompts=..., completions=..., completion_ids=..., **columns, trainer_state=None,
         log_extra=..., log_metric=...) -> list[float | None]

  One entry per candidate, the candidates of a prompt consecutive (TRL's order for the
  generations of a prompt). ``columns``: every column of the prompt records except ``prompt``,
  ``completion``, ``completion_ids``, as a list with the record's value repeated per candidate.
  Conversational records (``prompt`` a message list, or ShareGPT/UltraFeedback histories) get
  ``prompts`` as message lists and ``completions`` as ``[{"role": "assistant", "content": text}]``;
  a plain-string ``prompt`` gets strings for both, as TRL does. ``completion_ids`` are the
  candidate texts re-encoded with the policy's tokenizer (the sampler returns text). ``None`` →
  NaN, and a prompt with a non-finite score is dropped and counted (``select_pair``).

The pair is then selected by ``models.reward.select_pair``: ties and all-equal prompts are dropped
and counted under the same rules as for a reward model.
"""

from __future__ import annotations

import importlib
import logging
import math
import os

from simpo_cli.data import ifeval
from simpo_cli.errors import UserError

log = logging.getLogger(__name__)
TRL_RESERVED = ("prompt", "completion", "completion_ids")


class IFEvalScorer:
    """``scorer.type=ifeval``: reward = followed instructions / instructions of the prompt, by
    ``scorer.mode`` (``loose``, the default, or ``strict``); in ``[0, 1]``."""

    uses_records = True

    def __init__(self, cfg, device=None, cache_dir: str | None = None):
        if cfg.mode not in ("loose", "strict"):
            raise UserError(f"scorer.mode must be loose or strict, got '{cfg.mode}'")
        self.mode, self.ifeval = cfg.mode, ifeval
        cache_dir = cache_dir or os.environ.get("SIMPO_CACHE") or os.path.expanduser("~/.cache/simpo-cli")
        reason = ifeval.install_punkt(cache_dir)
        self.unavailable = frozenset(ifeval.NLTK_TYPES) if reason else frozenset()
        if reason:
            log.warning("scorer=ifeval: %s; instructions of type %s are left out of the reward",
                        reason, ", ".join(ifeval.NLTK_TYPES))

    @staticmethod
    def check_records(records, source: str) -> list:
        """Each prompt record (``data.prompts.PromptRecord``) as an ``IFEvalPrompt``; raises
        ``DataError`` naming the file, record and field (``instruction_id_list``/``kwargs``)."""
        return [ifeval.parse_record(r.record, source, r.index, prompt_field=None) for r in records]

    def score_candidates(self, prompts, candidates, *, records, source: str = "prompts", tokenizer=None):
        out = []
        for rec, item, cands in zip(records, self.check_records(records, source), candidates):
            # The prompt text: the last user turn (combination:repeat_prompt compares against it).
            item = type(item)(item.key, rec.messages[-1]["content"], item.instruction_id_list, item.kwargs)
            scores = []
            for text in cands:
                strict, loose = self.ifeval.score_response(item, text, unavailable=self.unavailable)
                follow = [x for x in (loose if self.mode == "loose" else strict) if x is not None]
                scores.append(sum(follow) / len(follow) if follow else math.nan)
            out.append(scores)
        return out


def import_function(spec: str):
    """``package.module:name`` → the callable. Raises ``UserError`` for a bad spec or import."""
    module_name, _, name = (spec or "").partition(":")
    if not module_name or not name:
        raise UserError(f"scorer.function must be 'package.module:name', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except ImportError as e:
        raise UserError(f"scorer.function={spec}: cannot import {module_name}: {e}") from None
    except AttributeError:
        raise UserError(f"scorer.function={spec}: {module_name} has no attribute '{name}'") from None
    if not callable(fn):
        raise UserError(f"scorer.function={spec}: not callable")
    return fn


class FunctionScorer:
    """``scorer.type=function``: a TRL-style reward function (see the module docstring)."""

    uses_records = True

    def __init__(self, cfg, device=None):
        self.spec = cfg.function
        self.fn = import_function(cfg.function)
        self.extra: list[dict] = []  # what the function passed to log_extra / log_metric

    def _log_extra(self, column: str, values: list) -> None:
        self.extra.append({"column": column, "values": list(values)})

    def _log_metric(self, name: str, value: float) -> None:
        log.debug("scorer.function %s: %s = %s", self.spec, name, value)

    def score_candidates(self, prompts, candidates, *, records, source: str = "prompts", tokenizer=None):
        flat_prompts, flat_completions, flat_ids = [], [], []
        columns: dict[str, list] = {}
        keys = sorted({k for r in records for k in r.record} - set(TRL_RESERVED))
        for messages, rec, cands in zip(prompts, records, candidates):
            raw = rec.record.get("prompt")
            conversational = not isinstance(raw, str)
            for text in cands:
                flat_prompts.append(messages if conversational else raw)
                flat_completions.append([{"role": "assistant", "content": text}] if conversational else text)
                flat_ids.append(tokenizer(text, add_special_tokens=False).input_ids if tokenizer is not None else None)
                for k in keys:
                    columns.setdefault(k, []).append(rec.record.get(k))
        rewards = self.fn(prompts=flat_prompts, completions=flat_completions, completion_ids=flat_ids, **columns,
                          trainer_state=None, log_extra=self._log_extra, log_metric=self._log_metric)
        rewards = list(rewards) if rewards is not None else []
        if len(rewards) != len(flat_completions):
            raise UserError(f"scorer.function={self.spec} returned {len(rewards)} rewards for "
                            f"{len(flat_completions)} completions (one per completion expected)")
        out, i = [], 0
        for cands in candidates:
            out.append([_as_float(r, self.spec) for r in rewards[i:i + len(cands)]])
            i += len(cands)
        return out


def _as_float(value, spec: str) -> float:
    if value is None:
        return math.nan  # TRL: None -> NaN (here: the prompt is dropped, "non-finite score")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"scorer.function={spec} returned {value!r}, not a number") from None


VERIFIABLE_SCORERS = {"ifeval": IFEvalScorer, "function": FunctionScorer}


def check_scorer_inputs(scorer_cfg, prompts, source: str) -> None:
    """Before any model loads: ``scorer=ifeval`` needs IFEval fields in every record,
    ``scorer=function`` an importable function. Raises ``DataError``/``UserError``."""
    if scorer_cfg.type == "ifeval":
        IFEvalScorer.check_records(prompts, source)
    elif scorer_cfg.type == "function":
        import_function(scorer_cfg.function)
