"""Score sampled responses and pick the preference pair (PAPER.md, Instruct setting: the highest
scored response becomes ``chosen``, the lowest ``rejected``).

Scorers (``scorer.type``): ``reward-model`` (any ``AutoModelForSequenceClassification`` with one
output, RLHFlow/ArmoRM-Llama3-8B-v0.1 via ``trust_remote_code``, or a tiny seeded one for tests)
and ``pairrm`` (llm-blender/PairRM; optional extra, not exercised in CI). Every scorer maps
``(prompts, candidates)`` to one float per candidate, higher = better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from simpo_cli.data.templates import plain_prompt, uses_template
from simpo_cli.errors import UserError
from simpo_cli.models.invariance import one_cpu_thread
from simpo_cli.models.loading import DTYPES, load_tokenizer
from simpo_cli.models.verifiable import VERIFIABLE_SCORERS

DROP_IDENTICAL = "all candidates identical"
DROP_FEW = "fewer than 2 distinct non-empty candidates"
DROP_TIE = "best and worst scores tie"
DROP_NONFINITE = "non-finite score"


@dataclass(frozen=True)
class Selection:
    """Indices into the candidates (``None`` when the prompt is dropped, with the reason)."""

    chosen: int | None
    rejected: int | None
    dropped: str | None = None


def select_pair(texts: list[str], scores: list[float]) -> Selection:
    """Best-scored candidate → chosen, worst → rejected.

    Duplicate texts count once (with the score of their first occurrence) and whitespace-only
    responses are never selected, so chosen and rejected always differ as text. Among equal
    scores the lowest index wins (for chosen and for rejected alike); scores are compared exactly,
    with no tolerance, which is safe because they are bit-reproducible (``RewardModel``), so a
    near tie resolves the same way on every run. Dropped (with the reason):
    all candidates identical (the paper's rule); fewer than two distinct non-empty candidates;
    best and worst scores equal (no preference); a NaN/inf score.

    Example: texts ["a", "b", "a", "c"], scores [1.0, 3.0, 9.0, -2.0] → chosen 1 ("b", 3.0),
    rejected 3 ("c", -2.0); the second "a" (9.0) is a duplicate of index 0 and is ignored.
    """
    if len(set(texts)) <= 1:
        return Selection(None, None, DROP_IDENTICAL)
    if not all(math.isfinite(s) for s in scores):
        return Selection(None, None, DROP_NONFINITE)
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        if text.strip() and text not in first:
            first[text] = i
    if len(first) < 2:
        return Selection(None, None, DROP_FEW)
    idx = sorted(first.values())
    best = max(idx, key=lambda i: (scores[i], -i))
    worst = min(idx, key=lambda i: (scores[i], i))
    if scores[best] == scores[worst]:
        return Selection(None, None, DROP_TIE)
    return Selection(best, worst)


def build_tiny_reward_model(tiny_cfg, tokenizer):
    """A randomly initialised ``*ForSequenceClassification`` (one output) from ``scorer.tiny``;
    seeded like ``modeling.build_tiny_model``, so its scores are identical on every build."""
    config = AutoConfig.for_model(
        tiny_cfg.architecture, vocab_size=len(tokenizer), hidden_size=tiny_cfg.hidden_size,
        intermediate_size=tiny_cfg.intermediate_size, num_hidden_layers=tiny_cfg.num_hidden_layers,
        num_attention_heads=tiny_cfg.num_attention_heads, num_key_value_heads=tiny_cfg.num_key_value_heads,
        max_position_embeddings=tiny_cfg.max_position_embeddings, num_labels=1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny_cfg.seed)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    return model


def reward_values(output) -> torch.Tensor:
    """The reward per sequence, ``[B]`` float32, from a model output: ``.score`` (ArmoRM's custom
    head: its preference score) if present, else ``.logits`` ``[B, 1]``.

    Raises ``UserError`` for a classifier with more than one output (not a reward model).
    """
    values = getattr(output, "score", None)
    if values is None:
        values = output.logits
    values = values.float().reshape(values.shape[0], -1)
    if values.shape[1] != 1:
        raise UserError(f"the reward model returns {values.shape[1]} values per sequence; "
                        "scorer=reward-model needs a model with a single output (num_labels=1)")
    return values[:, 0]


def load_reward_model(name_or_path: str, *, what: str, dtype: str = "float32", revision: str | None = None,
                      trust_remote_code: bool = False, attn_implementation: str | None = None):
    """``AutoModelForSequenceClassification.from_pretrained`` in evaluation mode. ``what`` names the
    config group in errors (``scorer``, ``judge``). Raises ``UserError`` for an unknown dtype or a
    model that cannot be loaded."""
    if dtype not in DTYPES:
        raise UserError(f"{what}.dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    kwargs = {"dtype": DTYPES[dtype], "revision": revision, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs).eval()
    except OSError as e:
        raise UserError(f"{what}: cannot load reward model '{name_or_path}': {str(e).splitlines()[0]}") from None


class RewardModel:
    """A sequence-classification reward model: the one wrapper behind ``simpo generate-pairs``'
    scorer (``RewardModelScorer``) and ``simpo eval``'s local judge (``RewardModelJudge``).

    ``score_groups(groups)``: ``groups[g]`` is a list of token-id sequences scored in ONE forward
    pass of shape ``[len(group), longest]`` (right padding; the model reads the last non-pad token,
    as transformers' ``*ForSequenceClassification`` and TRL's RewardTrainer do), on CPU with one
    thread (``simpo_cli.models.invariance``). A group's scores therefore depend only on that group,
    never on which other groups are scored in the same call or on the thread count: the callers
    make a group of one prompt's candidates (generate-pairs) or of a single conversation (judge).
    Returns rewards ``[len(group)]`` per group as Python floats (the model's float32 output).
    """

    def __init__(self, model, tokenizer, max_length: int, device: torch.device | str = "cpu"):
        self.tokenizer, self.max_length, self.device = tokenizer, max_length, torch.device(device)
        if getattr(model.config, "pad_token_id", None) is None:
            # Right padding needs it to find each sequence's last real token.
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.to(self.device).eval()

    def truncate(self, ids: list[int]) -> list[int]:
        """At most ``max_length`` ids: the response end, which the reward is read from, is kept,
        and a leading BOS."""
        if len(ids) <= self.max_length:
            return ids
        bos = self.tokenizer.bos_token_id
        if bos is not None and ids[0] == bos:
            return ids[:1] + ids[len(ids) - self.max_length + 1:]
        return ids[len(ids) - self.max_length:]

    @torch.inference_mode()
    def score_group(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of ``sequences`` (already truncated), in order, from one forward pass."""
        pad = self.model.config.pad_token_id
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, s in enumerate(sequences):
            input_ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            attention_mask[i, :len(s)] = 1
        with one_cpu_thread(self.device):
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device))
        return reward_values(out).cpu().tolist()

    def score_groups(self, groups: list[list[list[int]]]) -> list[list[float]]:
        return [self.score_group(g) if g else [] for g in groups]


class RewardModelScorer:
    """``scorer.type=reward-model``: a ``RewardModel`` from ``scorer.*`` (a Hub id / directory, or
    the seeded tiny model). Each prompt's candidates are one group (one forward pass), so a score
    depends only on the prompt and its candidates: not on ``scorer.batch_size``, on which prompts
    share a generation batch, or on the thread count."""

    def __init__(self, cfg, device: torch.device | str = "cpu"):
        self.cfg = cfg
        tokenizer = load_tokenizer(cfg)  # ScorerConfig has ModelConfig's tokenizer fields
        self.template = uses_template(tokenizer, "auto")
        if cfg.name_or_path is None:
            if cfg.tiny is None:
                raise UserError(f"scorer '{cfg.name}': set scorer.name_or_path or scorer.tiny")
            model = build_tiny_reward_model(cfg.tiny, tokenizer)
        else:
            model = load_reward_model(cfg.name_or_path, what="scorer", dtype=cfg.dtype,
                                      revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                                      attn_implementation=cfg.attn_implementation)
        self.reward_model = RewardModel(model, tokenizer, cfg.max_length, device)
        self.tokenizer, self.model = tokenizer, self.reward_model.model

    def encode(self, messages: list[dict]) -> list[int]:
        if self.template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
        else:
            ids = self.tokenizer(plain_prompt(messages[:-1]) + " " + messages[-1]["content"]).input_ids
        return self.reward_model.truncate(ids)

    def score_candidates(self, prompts: list[list[dict]], candidates: list[list[str]]) -> list[list[float]]:
        """``prompts[i]``: the message history; ``candidates[i]``: its responses. Returns one
        reward per candidate (same nesting)."""
        return self.reward_model.score_groups(
            [[self.encode(p + [{"role": "assistant", "content": c}]) for c in cs] for p, cs in zip(prompts, candidates)])


class PairRMScorer:
    """llm-blender/PairRM (the SimPO Instruct runs' ranker): ``Blender.rank(..., return_scores=True)``
    gives each candidate a score from pairwise comparisons with the others. UNTESTED in this
    project's CI (optional extra ``pairrm``); PairRM reads plain text, so a multi-turn history is
    flattened with ``plain_prompt``."""

    def __init__(self, cfg, device: torch.device | str = "cpu"):
        try:
            import llm_blender
        except ImportError:
            raise UserError("scorer=pairrm needs llm-blender: pip install 'simpo-cli[pairrm]'") from None
        self.cfg = cfg
        self.blender = llm_blender.Blender()
        self.blender.loadranker(cfg.name_or_path, device=str(device))

    def score_candidates(self, prompts: list[list[dict]], candidates: list[list[str]]) -> list[list[float]]:
        scores = self.blender.rank([plain_prompt(p) for p in prompts], candidates, return_scores=True,
                                   batch_size=self.cfg.batch_size)
        return [[float(s) for s in row] for row in scores]


SCORERS = {"reward-model": RewardModelScorer, "pairrm": PairRMScorer}


def load_scorer(cfg, device: torch.device | str = "cpu"):
    """The scorer named by ``cfg.type``; raises ``UserError`` for an unknown type."""
    scorers = {**SCORERS, **VERIFIABLE_SCORERS}  # ifeval, function: no model
    if cfg.type not in scorers:
        raise UserError(f"unknown scorer.type '{cfg.type}'; choose from: {', '.join(sorted(scorers))}")
    return scorers[cfg.type](cfg, device)
