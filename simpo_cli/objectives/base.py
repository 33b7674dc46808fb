"""The contract every objective follows.

An objective is one pure function ``fn(logps, **params) -> ObjectiveOutput`` plus an
``ObjectiveSpec`` that says what it needs. The training loop reads the spec and never branches on
an objective's name (see STYLE.md, "what to absorb" 1-3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, make_dataclass
from typing import Callable, Literal

import torch


@dataclass
class PreferenceLogps:
    """Per-sequence log-probabilities of a batch of preference pairs.

    All tensors have shape ``[B]``. Log-probs are **summed** over response tokens (prompt and padding
    excluded), in nats; lengths count those response tokens, so ``chosen / chosen_lengths`` is the
    length-averaged log-likelihood of PAPER.md Eq. 4. ``ref_*`` are the reference model's summed
    log-probs of the same tokens, or ``None`` for reference-free objectives.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    # Summed log-probs of mismatched (prompt_i, response of another example) rows, ``[K]``, under
    # the policy (no gradient) and the reference: KTO's z_ref estimate. ``None`` unless the spec
    # sets ``needs_mismatched``.
    kl: torch.Tensor | None = None
    ref_kl: torch.Tensor | None = None
    # Σ over response tokens of ``log Σ_v π_θ(v | x, y_<t)²`` (the log of each position's expected
    # probability under sampling), ``[B]``, nats, detached: WPO's sampled weight alignment
    # (``simpo_cli.objectives.wpo``). ``None`` unless the spec sets ``needs_sum_sq_probs``.
    chosen_log_sum_sq: torch.Tensor | None = None
    rejected_log_sum_sq: torch.Tensor | None = None

    @property
    def chosen_avg(self) -> torch.Tensor:
        """Length-averaged chosen log-prob, ``[B]``, nats per token."""
        return self.chosen / self.chosen_lengths.clamp(min=1)

    @property
    def rejected_avg(self) -> torch.Tensor:
        """Length-averaged rejected log-prob, ``[B]``, nats per token."""
        return self.rejected / self.rejected_lengths.clamp(min=1)


@dataclass
class ObjectiveOutput:
    """What an objective returns: per-example ``losses`` (``[B]``, differentiable) and the implicit
    rewards of chosen and rejected (``[B]``, detached), used for ``rewards/*`` metrics.
    ``weights``: the per-example weights a modifier multiplied the losses by (``[B]``, detached;
    WPO's, logged as ``wpo/weight``), ``None`` without one."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    weights: torch.Tensor | None = None


@dataclass
class Modifiers:
    """Settings every objective's config accepts on top of its own (``objective.wpo=true``): they
    change how the loss is weighted, not the loss (``simpo_cli.objectives.wpo.configured``).

    ``wpo``: multiply each pair's loss by WPO's weight (arXiv 2406.11827).
    ``wpo_alignment``: ``sampled`` (the paper's weight alignment, TRL's ``use_weighting``) or
    ``none`` (the unaligned weight ``exp`` of the mean token log-prob)."""

    wpo: bool = False
    wpo_alignment: str = "sampled"


@dataclass(frozen=True)
class ObjectiveSpec:
    """Registry entry for one objective.

    ``needs_reference``: the loop must provide ``ref_chosen``/``ref_rejected``.
    ``logp_reduction``: which per-sequence log-prob the objective's reward is built on ("mean" =
    length-averaged, "sum" = summed); it decides what ``logps/chosen`` and ``logps/rejected`` log.
    ``needs_mismatched``: the loop must also provide ``kl``/``ref_kl``, the log-probs of mismatched
    prompt/response rows (KTO's z_ref); implies ``needs_reference``.
    ``accepts_unpaired``: the objective also trains on unpaired ``prompt``/``completion``/``label``
    records, which arrive as examples with one side empty (its length 0).
    ``pairwise``: example ``i``'s loss depends only on example ``i``'s log-probs (and on batch-level
    inputs computed without gradient, such as KTO's mismatched rows), so it can be evaluated one
    pair at a time; the fused LM head (``simpo_cli.training.fused_head``) relies on it.
    ``needs_sum_sq_probs``: the loop must also provide ``chosen_log_sum_sq``/``rejected_log_sum_sq``
    (set by a modifier: WPO's sampled alignment).
    ``params``: the dataclass of the objective's own settings (its ``conf/objective/<name>.yaml``
    is validated against it), β and γ included where the objective has them; every field but
    ``name`` (and ``gamma_beta_ratio``, folded into ``gamma``) is a keyword argument of ``fn``.
    The config schema (``schema``) adds the ``Modifiers`` fields, which are not arguments of ``fn``.
    """

    name: str
    fn: Callable[..., ObjectiveOutput]
    params: type
    needs_reference: bool
    logp_reduction: Literal["sum", "mean"]
    summary: str
    needs_mismatched: bool = False
    accepts_unpaired: bool = False
    pairwise: bool = True
    needs_sum_sq_probs: bool = False

    @property
    def schema(self) -> type:
        """The structured-config schema of ``conf/objective/<name>.yaml``: ``params`` plus the
        ``Modifiers`` settings."""
        return make_dataclass(self.params.__name__, [], bases=(self.params, Modifiers))

    def has(self, param: str) -> bool:
        """Whether ``param`` (e.g. ``beta``) is one of this objective's settings."""
        return param in {f.name for f in fields(self.params)}

    def kwargs(self, section: Mapping) -> dict:
        """The keyword arguments of ``fn`` from the objective's config ``section``
        (``cfg.objective``): its settings without ``name``; ``gamma_beta_ratio``, when set,
        becomes ``gamma = ratio × beta`` (the official SimPO configs' form)."""
        values = {f.name: section[f.name] for f in fields(self.params) if f.name in section}
        ratio = values.pop("gamma_beta_ratio", None)
        if ratio is not None:
            values["gamma"] = ratio * values["beta"]
        values.pop("name", None)
        return values
