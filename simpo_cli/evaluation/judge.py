"""Optional local judge: a reward model scores this model's answers and a baseline's on the same
prompts; the win rate (ties = ½) comes with a percentile-bootstrap interval.

A cheap stand-in for the GPT-4 judges of AlpacaEval / Arena-Hard / MT-Bench, e.g. to compare a
SimPO model with its SFT starting point before paying for the real judge.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoTokenizer

from simpo_cli.errors import DataError, UserError
from simpo_cli.evaluation.metrics import bootstrap_ci, win_rate
from simpo_cli.models.reward import RewardModel, load_reward_model

log = logging.getLogger(__name__)


def read_answers(path: str | Path) -> dict:
    """Conversations keyed by prompt: ``key -> [user, assistant, user, assistant, ...]`` messages.

    Accepts AlpacaEval ``model_outputs.json`` (key: the instruction) and Arena-Hard / MT-Bench
    ``model_answer/*.jsonl`` (key: ``question_id``; the user turns are not in the file, so they
    are filled in by the caller from the prompt set: values here are the assistant turns only).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"judge.baseline: file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            rows = json.loads(text)
            out = {}
            for i, r in enumerate(rows):
                if "instruction" not in r or "output" not in r:
                    raise DataError(str(path), i, "output" if "instruction" in r else "instruction", "missing")
                out[r["instruction"]] = [r["output"]]
            return out
        out = {}
        for i, line in enumerate(l for l in text.splitlines() if l.strip()):
            r = json.loads(line)
            try:
                turns = r["choices"][0]["turns"]
            except (KeyError, IndexError, TypeError):
                raise DataError(str(path), i, "choices", "expected [{index, turns}]") from None
            out[str(r["question_id"])] = [t["content"] if isinstance(t, dict) else t for t in turns]
        return out
    except json.JSONDecodeError as e:
        raise DataError(str(path), None, None, f"not valid JSON: {e}") from None


class RewardModelJudge:
    """``AutoModelForSequenceClassification`` with one output logit; the score of a conversation is
    that logit (higher = better). Conversations are rendered with the judge tokenizer's chat
    template, or as ``user\\n\\nassistant`` paragraphs when it has none; longer than ``max_length``
    tokens, they keep their end (``RewardModel.truncate``).

    Scoring is ``simpo_cli.models.reward.RewardModel``'s, one conversation per forward pass, so a
    conversation's score does not depend on the others or on the thread count."""

    def __init__(self, path: str, max_length: int = 2048, device: str = "cpu"):
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except OSError as e:
            raise UserError(f"cannot load judge.reward_model '{path}': {str(e).splitlines()[0]}") from None
        model = load_reward_model(path, what="judge", dtype="auto")  # the checkpoint's dtype
        if model.config.num_labels != 1:
            raise UserError(f"judge.reward_model '{path}' has {model.config.num_labels} labels; "
                            "a reward model has exactly 1")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        self.tokenizer = tokenizer
        self.reward_model = RewardModel(model, tokenizer, max_length, device)
        self.model = self.reward_model.model

    def _text(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n\n".join(m["content"] for m in messages)

    def score(self, conversations: list[list[dict]]) -> list[float]:
        """One float per conversation, ``[N]``."""
        ids = [self.reward_model.truncate(self.tokenizer(self._text(c), add_special_tokens=False).input_ids)
               for c in conversations]
        return [s for (s,) in self.reward_model.score_groups([[x] for x in ids])]


def conversation(user_turns: list[str], answers: list[str]) -> list[dict]:
    msgs = []
    for u, a in zip(user_turns, answers):
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return msgs


def judge_answers(judge: RewardModelJudge, prompts, model_answers: list[list[str]], baseline: dict, *,
                  key: str, n_resamples: int, confidence: float, seed: int) -> dict:
    """Win rate of ``model_answers`` over the baseline on the prompts the baseline also answers.

    ``key``: ``instruction`` (AlpacaEval) or ``question_id``. Returns ``win_rate`` (mean of
    ``metrics.win_rate``), ``ci`` (bootstrap interval), ``n``, wins / ties / losses and the mean
    scores. Raises ``UserError`` when no prompt is shared."""
    ours, theirs = [], []
    for p, a in zip(prompts, model_answers):
        k = p.turns[0] if key == "instruction" else str(p.id)
        if k in baseline:
            ours.append(conversation(p.turns, a))
            theirs.append(conversation(p.turns, baseline[k]))
    if not ours:
        raise UserError("judge.baseline shares no prompt with the generated answers "
                        f"(matched by {key}); is it the right benchmark's file?")
    s_model, s_base = judge.score(ours), judge.score(theirs)
    outcome = win_rate(s_model, s_base)
    lo, hi = bootstrap_ci(outcome, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {"n": len(ours), "win_rate": float(outcome.mean()), "ci": [lo, hi], "confidence": confidence,
            "wins": int((outcome == 1).sum()), "ties": int((outcome == 0.5).sum()),
            "losses": int((outcome == 0).sum()),
            "mean_score_model": float(sum(s_model) / len(s_model)),
            "mean_score_baseline": float(sum(s_base) / len(s_base))}
