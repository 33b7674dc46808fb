"""LN-DPO: length-normalised DPO (SimPO paper arXiv 2405.14734; Tülu 3 arXiv 2411.15124's
"DPO-norm"; TRL ``DPOTrainer(loss_type="sigmoid_norm")``)."""

from __future__ import annotations

from dataclasses import dataclass

from simpo_cli.objectives._common import bt_loss, log_ratios
from simpo_cli.objectives.base import ObjectiveOutput, PreferenceLogps
from simpo_cli.objectives.registry import register


@dataclass
class LNDPOParams:
    """Settings of ``conf/objective/ln-dpo.yaml``."""

    name: str = "ln-dpo"
    beta: float = 5.0  # Tülu 3's length-normalised DPO uses beta = 5
    label_smoothing: float = 0.0


def ln_dpo(logps: PreferenceLogps, *, beta: float, label_smoothing: float = 0.0) -> ObjectiveOutput:
    """LN-DPO loss: ``−log σ(β (ρ(y_w)/|y_w| − ρ(y_l)/|y_l|))``, DPO on length-averaged log-ratios.

    ``ρ(y) = log π_θ(y|x) − log π_ref(y|x)``, summed over the response's tokens (``logps.*``,
    ``[B]``, nats), divided by its length: nats per token. ``label_smoothing`` ε > 0 gives
    ``−(1−ε) log σ(z) − ε log σ(−z)``. Because the log-ratio is per token, β lives on SimPO's scale
    (Tülu 3: β = 5), not DPO's.

    Source: SimPO paper's length-normalised DPO ablation; Tülu 3 §5 ("length-normalized DPO");
    equal to TRL 1.16's ``loss_type="sigmoid_norm"`` (which ignores label smoothing; with ε = 0 the
    two agree).

    Returns losses ``[B]`` and rewards ``β ρ(y)/|y|`` (detached). Raises ``ValueError`` when the
    reference log-probs are missing.
    """
    chosen_ratio, rejected_ratio = log_ratios(logps, "ln-dpo")
    chosen = beta * chosen_ratio / logps.chosen_lengths.clamp(min=1)
    rejected = beta * rejected_ratio / logps.rejected_lengths.clamp(min=1)
    losses = bt_loss(chosen - rejected, label_smoothing)
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


register(
    name="ln-dpo",
    fn=ln_dpo,
    params=LNDPOParams,
    needs_reference=True,
    logp_reduction="mean",
    summary="LN-DPO: DPO on length-averaged log-ratios to a reference (TRL sigmoid_norm)",
)
