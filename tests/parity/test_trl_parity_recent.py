"""Parity of the post-SimPO objectives with TRL 1.16, to 1e-5 (the baselines' harness and setup:
tiny Llama policy seed 0, reference seed 1, ``bf16=False``, TRL's own collated batch scored by
``sequence_logps``, eval mode, before any update). AlphaPO against ``CPOTrainer``; LN-DPO
(``sigmoid_norm``), APO-zero and DiscoPOP against ``DPOTrainer``; WPO weighting against
``DPOConfig(use_weighting=True)``. SimPER has no TRL counterpart (unit tests only)."""

import copy

import pytest
import torch

from tests.parity.conftest import PAIRS, check_same_tokens, our_plain_pairs
from tests.parity.test_trl_parity_baselines import ATOL, pair_logps, policy_and_ref  # noqa: F401 (fixture)
from tests.parity.test_trl_parity_baselines import trl_dpo_loss as trl_dpo

trl = pytest.importorskip("trl")


def test_ln_dpo_matches_trl_sigmoid_norm(policy_and_ref, plain_tokenizer, tmp_path):
    """Convention: ``−log σ(β(ρ_w/|y_w| − ρ_l/|y_l|))``, ρ the summed log-ratio, lengths the
    response tokens (TRL ``loss_type="sigmoid_norm"``), batch mean; β = 2.5."""
    from simpo_cli.objectives.ln_dpo import ln_dpo

    policy, ref = policy_and_ref
    trl_loss, batch = trl_dpo(policy, ref, plain_tokenizer, tmp_path, "sigmoid_norm", 2.5)
    logps = pair_logps(policy, ref, batch)
    assert ln_dpo(logps, beta=2.5).losses.mean().item() == pytest.approx(trl_loss, abs=ATOL)


def test_apo_zero_matches_trl_up_to_its_constant(policy_and_ref, plain_tokenizer, tmp_path):
    """Convention: the paper's Eq. 7 ``−σ(βρ_w) + σ(βρ_l)``; TRL's ``apo_zero`` adds 1
    (``(1 − σ(βρ_w)) + σ(βρ_l)``), the documented departure; β = 0.5."""
    from simpo_cli.objectives.apo_zero import apo_zero

    policy, ref = policy_and_ref
    trl_loss, batch = trl_dpo(policy, ref, plain_tokenizer, tmp_path, "apo_zero", 0.5)
    logps = pair_logps(policy, ref, batch)
    assert apo_zero(logps, beta=0.5).losses.mean().item() + 1 == pytest.approx(trl_loss, abs=ATOL)


def test_discopop_matches_trl(policy_and_ref, plain_tokenizer, tmp_path):
    """Convention: ``(1 − m)(−log σ(z)) + m e^−z``, ``m = σ(z/τ)``, ``z = β(ρ_w − ρ_l)``,
    τ = ``discopop_tau`` = 0.05 (TRL's default, the paper's); β = 0.5 so the margins are of order 1."""
    from simpo_cli.objectives.discopop import discopop

    policy, ref = policy_and_ref
    trl_loss, batch = trl_dpo(policy, ref, plain_tokenizer, tmp_path, "discopop", 0.5)
    logps = pair_logps(policy, ref, batch)
    assert discopop(logps, beta=0.5, tau=0.05).losses.mean().item() == pytest.approx(trl_loss, abs=ATOL)


def test_wpo_weighting_matches_trl_use_weighting(policy_and_ref, plain_tokenizer, tmp_path):
    """Convention: DPO (sigmoid, β = 0.1) × ``exp(mean_t (log p_t − log Σ_v p_v²))`` of the chosen
    times that of the rejected response, under the policy (TRL ``use_weighting=True``; our
    ``wpo_alignment=sampled``), the sums of squared probabilities from ``sequence_logps``."""
    from simpo_cli.objectives import PreferenceLogps, get_objective
    from simpo_cli.objectives.wpo import with_wpo
    from simpo_cli.training.logps import sequence_logps

    policy, ref = policy_and_ref
    trl_loss, batch = trl_dpo(policy, ref, plain_tokenizer, tmp_path, "sigmoid", 0.1, use_weighting=True)
    unweighted, _ = trl_dpo(policy, ref, plain_tokenizer, tmp_path, "sigmoid", 0.1)
    keys = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    with torch.no_grad():
        pol = sequence_logps(policy, *keys, sum_sq_probs=True)
        rf = sequence_logps(ref, *keys)
    b = pol.logps.shape[0] // 2
    logps = PreferenceLogps(pol.logps[:b], pol.logps[b:], pol.lengths[:b], pol.lengths[b:],
                            ref_chosen=rf.logps[:b], ref_rejected=rf.logps[b:],
                            chosen_log_sum_sq=pol.log_sum_sq[:b], rejected_log_sum_sq=pol.log_sum_sq[b:])
    out = with_wpo(get_objective("dpo"), "sampled").fn(logps, beta=0.1)
    assert abs(trl_loss - unweighted) > 1e-3, "the weights should matter here"
    assert out.losses.mean().item() == pytest.approx(trl_loss, abs=ATOL)


def test_alphapo_matches_trl_cpo_trainer(tiny_model, plain_tokenizer, tmp_path):
    """Convention: SimPO's ``−log σ(r_w − r_l − γ)`` on ``r = β(1 − p^(−α))/α``, ``p`` the
    length-averaged likelihood (TRL ``CPOConfig(loss_type="alphapo")``, which sets ``cpo_alpha=0``:
    no NLL term); α = 0.25, β = 2.5, γ = 0.1 (the paper's Table 3 Mistral-Instruct values)."""
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from simpo_cli.objectives.alphapo import alphapo

    model = tiny_model.eval()
    logps, feats = our_plain_pairs(model, plain_tokenizer)
    args = CPOConfig(output_dir=str(tmp_path / "alphapo"), loss_type="alphapo", alpha=0.25, beta=2.5,
                     simpo_gamma=0.1, max_length=512, report_to="none", bf16=False, remove_unused_columns=False,
                     use_cpu=True)
    trainer = CPOTrainer(model=copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(PAIRS),
                         processing_class=plain_tokenizer)
    check_same_tokens(trainer.train_dataset, feats)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trainer.model.eval()
    with torch.no_grad():
        trl_loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
    ours = alphapo(logps, alpha=0.25, beta=2.5, gamma=0.1).losses.mean().item()
    assert ours == pytest.approx(trl_loss.item(), abs=ATOL)
