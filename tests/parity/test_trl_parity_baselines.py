"""Parity of the baselines with TRL 1.16, to 1e-5, wherever the two conventions agree.

Common setup: the tiny Llama (seed 0) is the policy and another tiny Llama (seed 1) the reference,
so log-ratios are not 0; TRL's configs default to ``bf16=True`` (autocast on CPU too), so
``bf16=False`` is set; plain-string pairs without a chat template; both sides score the very
same token ids (TRL's own collated batch is fed to ``simpo_cli.training.logps.sequence_logps``, or, for the
CPO/ORPO trainers, their tokenisation is checked to equal ours), in eval mode, before any update.
Each test's docstring states the convention it checks and, where the project departs from TRL
(following the paper), what differs.
"""

import copy

import pytest
import torch

from tests.parity.conftest import PAIRS, check_same_tokens, our_plain_pairs

trl = pytest.importorskip("trl")

ATOL = 1e-5


@pytest.fixture
def policy_and_ref(tiny_model, tiny_tokenizer):
    from simpo_cli.config.schema import TinyModelConfig
    from simpo_cli.models.loading import build_tiny_model

    ref = build_tiny_model(TinyModelConfig(seed=1), tiny_tokenizer)
    return tiny_model.eval(), ref.eval()


def score(model, input_ids, attention_mask, response_mask):
    from simpo_cli.training.logps import sequence_logps

    with torch.no_grad():
        return sequence_logps(model, input_ids, attention_mask, response_mask)


def pair_logps(policy, ref, batch):
    """Our ``PreferenceLogps`` of TRL's ``[2B, L]`` batch (chosen rows first, as ours)."""
    from simpo_cli.objectives import PreferenceLogps

    keys = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    pol, rf = score(policy, *keys), score(ref, *keys)
    b = pol.logps.shape[0] // 2
    return PreferenceLogps(pol.logps[:b], pol.logps[b:], pol.lengths[:b], pol.lengths[b:],
                           ref_chosen=rf.logps[:b], ref_rejected=rf.logps[b:])


def trl_dpo_loss(policy, ref, tokenizer, tmp_path, loss_type, beta, **extra):
    """TRL's DPO loss on ``PAIRS`` (eval mode, no update) and its collated batch; ``extra``: more
    ``DPOConfig`` fields (e.g. ``use_weighting=True``)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "dpo"), loss_type=[loss_type], beta=beta, report_to="none", bf16=False,
                     use_cpu=True, max_length=512, pad_to_multiple_of=None, **extra)
    # TRL patches the model's head in place: give it copies.
    trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(ref), args=args,
                         train_dataset=Dataset.from_list(PAIRS), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    return loss.item(), batch


def test_dpo_sigmoid_matches_trl(policy_and_ref, plain_tokenizer, tmp_path):
    """Convention: DPO ``−log σ(β(ρ_w − ρ_l))``, ρ = summed response log-prob minus the
    reference's (TRL ``loss_type="sigmoid"``, label_smoothing 0), mean over the batch. β = 0.1."""
    from simpo_cli.objectives.dpo import dpo

    policy, ref = policy_and_ref
    trl_loss, batch = trl_dpo_loss(policy, ref, plain_tokenizer, tmp_path, "sigmoid", 0.1)
    logps = pair_logps(policy, ref, batch)
    assert (logps.chosen - logps.ref_chosen).abs().max() > 0.1, "log-ratios should not be 0"
    assert dpo(logps, beta=0.1).losses.mean().item() == pytest.approx(trl_loss, abs=ATOL)


def test_hinge_and_slic_match_trl(policy_and_ref, plain_tokenizer, tmp_path):
    """Convention: TRL's ``loss_type="hinge"`` is ``relu(1 − β(ρ_w − ρ_l))`` on log-ratios (β = 0.5).
    Ours: ``dpo(loss_type="hinge")``, and SLiC-HF's calibration term ``max(0, δ − s_w + s_l)``
    with δ = 1/β, λ = 0, applied to the log-ratios ρ and scaled by β (Table 3's SLiC-HF applies
    it to raw summed log-probs, no reference: the same formula on other inputs)."""
    from simpo_cli.objectives import PreferenceLogps
    from simpo_cli.objectives.dpo import dpo
    from simpo_cli.objectives.slic_hf import slic_hf

    beta = 0.5
    policy, ref = policy_and_ref
    trl_loss, batch = trl_dpo_loss(policy, ref, plain_tokenizer, tmp_path, "hinge", beta)
    logps = pair_logps(policy, ref, batch)
    assert dpo(logps, beta=beta, loss_type="hinge").losses.mean().item() == pytest.approx(trl_loss, abs=ATOL)
    ratios = PreferenceLogps(logps.chosen - logps.ref_chosen, logps.rejected - logps.ref_rejected,
                             logps.chosen_lengths, logps.rejected_lengths)
    slic = beta * slic_hf(ratios, delta=1 / beta, sft_weight=0.0).losses.mean().item()
    assert 0 < trl_loss and slic == pytest.approx(trl_loss, abs=ATOL)


def test_ipo_matches_trl_on_length_averaged_log_ratios(policy_and_ref, plain_tokenizer, tmp_path):
    """Convention: IPO ``(Δ − 1/(2τ))²`` (TRL's β is τ = 0.5). TRL 1.16 takes Δ from log-ratios
    divided by each response's length; ours (the IPO paper and Table 3) from summed log-ratios.
    Fed the length-averaged log-probs, ours equals TRL; on summed ones (our default) it differs."""
    from simpo_cli.objectives import PreferenceLogps
    from simpo_cli.objectives.ipo import ipo

    tau = 0.5
    policy, ref = policy_and_ref
    trl_loss, batch = trl_dpo_loss(policy, ref, plain_tokenizer, tmp_path, "ipo", tau)
    lp = pair_logps(policy, ref, batch)
    lw, ll = lp.chosen_lengths.float(), lp.rejected_lengths.float()
    averaged = PreferenceLogps(lp.chosen / lw, lp.rejected / ll, lp.chosen_lengths, lp.rejected_lengths,
                               ref_chosen=lp.ref_chosen / lw, ref_rejected=lp.ref_rejected / ll)
    assert ipo(averaged, tau=tau).losses.mean().item() == pytest.approx(trl_loss, abs=ATOL)
    assert abs(ipo(lp, tau=tau).losses.mean().item() - trl_loss) > 1e-2  # the documented departure


def test_cpo_preference_term_matches_trl(tiny_model, plain_tokenizer, tmp_path):
    """Convention: CPO's preference term ``−log σ(β(log π(y_w) − log π(y_l)))`` on summed
    response log-probs, β = 0.1, TRL ``CPOTrainer(loss_type="sigmoid", cpo_alpha=0)`` vs ours with
    ``sft_weight=0``. Departure (not compared): TRL's NLL term is the token-mean cross-entropy over
    the batch's chosen tokens; ours is Table 3's per-example ``−λ log π(y_w|x)`` (summed)."""
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from simpo_cli.objectives.cpo import cpo

    model = tiny_model.eval()
    logps, feats = our_plain_pairs(model, plain_tokenizer)
    args = CPOConfig(output_dir=str(tmp_path / "cpo"), loss_type="sigmoid", cpo_alpha=0.0, beta=0.1,
                     max_length=512, report_to="none", bf16=False, remove_unused_columns=False, use_cpu=True)
    trainer = CPOTrainer(model=copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(PAIRS),
                         processing_class=plain_tokenizer)
    check_same_tokens(trainer.train_dataset, feats)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trainer.model.eval()
    with torch.no_grad():
        trl_chosen, trl_rejected, *_ = trainer.concatenated_forward(trainer.model, batch)
        trl_loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
    # summed log-probs of ~200 nats: float32 rounding is ~1e-5 absolute, so compare relatively
    torch.testing.assert_close(logps.chosen, trl_chosen, atol=ATOL, rtol=1e-6)
    torch.testing.assert_close(logps.rejected, trl_rejected, atol=ATOL, rtol=1e-6)
    assert cpo(logps, beta=0.1, sft_weight=0.0).losses.mean().item() == pytest.approx(trl_loss.item(), abs=ATOL)


def test_orpo_odds_ratio_term_matches_trl(tiny_model, plain_tokenizer, tmp_path):
    """Convention: ORPO's odds-ratio term ``−λ log σ(log odds(y_w) − log odds(y_l))`` with
    ``p = exp(length-averaged log-prob)``, λ = 0.5 (TRL's ``beta``). Ours minus our NLL term
    (``−mean a_w``) equals TRL's ``−mean(odds_ratio_loss)``. Departure: TRL's NLL term covers the
    prompt and chosen tokens (its labels keep the prompt); ours, as the paper, the answer only, so
    the full losses differ (checked)."""
    from datasets import Dataset
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from simpo_cli.objectives.orpo import orpo

    lam = 0.5
    model = tiny_model.eval()
    logps, feats = our_plain_pairs(model, plain_tokenizer)
    args = ORPOConfig(output_dir=str(tmp_path / "orpo"), beta=lam, max_length=512, report_to="none", bf16=False,
                      remove_unused_columns=False, use_cpu=True)
    trainer = ORPOTrainer(model=copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(PAIRS),
                          processing_class=plain_tokenizer)
    check_same_tokens(trainer.train_dataset, feats)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trainer.model.eval()
    with torch.no_grad():
        trl_chosen, trl_rejected, _, _, trl_nll = trainer.concatenated_forward(trainer.model, batch)[:5]
        trl_or, *_ = trainer.odds_ratio_loss(trl_chosen, trl_rejected)
        trl_loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
    torch.testing.assert_close(logps.chosen_avg, trl_chosen, atol=ATOL, rtol=0)
    torch.testing.assert_close(logps.rejected_avg, trl_rejected, atol=ATOL, rtol=0)
    ours = orpo(logps, odds_ratio_weight=lam).losses
    odds_term = (ours + logps.chosen_avg).mean().item()
    assert odds_term == pytest.approx(-trl_or.mean().item(), abs=ATOL)
    assert trl_loss.item() == pytest.approx(trl_nll.item() - trl_or.mean().item(), abs=ATOL)
    assert abs(ours.mean().item() - trl_loss.item()) > 1e-3  # the documented NLL departure


UNPAIRED = [
    {"prompt": "What is the capital of France?", "completion": " The capital of France is Paris.", "label": True},
    {"prompt": "Give me a word that rhymes with cat.", "completion": " Dog.", "label": False},
    {"prompt": "Describe a process of making crepes.",
     "completion": " Whisk flour, eggs and milk, then cook thin layers in a hot pan.", "label": True},
    {"prompt": "How many legs does a spider have?", "completion": " Six legs, like insects.", "label": False},
]


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 1.5)])
def test_kto_matches_trl_on_unpaired_records(policy_and_ref, plain_tokenizer, tmp_path, weights):
    """Convention: KTO (paper Eq. 8, TRL ``KTOTrainer(loss_type="kto")``): desirable records
    ``λ_D (1 − σ(β(ρ − z_0)))``, undesirable ``λ_U (1 − σ(β(z_0 − ρ)))``, mean over records;
    ``z_0 = max(0, mean(log π(y'|x) − log π_ref(y'|x)))`` over the batch's mismatched rows, the
    rows TRL's collator builds (completion of the next record); β = 0.1, one process. Both score
    TRL's batch; ours gets each record as an example with the other side empty, as
    ``simpo_cli/data/unpaired.py`` builds it."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from simpo_cli.objectives import PreferenceLogps
    from simpo_cli.objectives.kto import kto

    lambda_d, lambda_u = weights
    ref, policy = policy_and_ref  # this way round the mismatched KL estimate is > 0, so z_0 is not clamped
    args = KTOConfig(output_dir=str(tmp_path / "kto"), beta=0.1, desirable_weight=lambda_d,
                     undesirable_weight=lambda_u, report_to="none", bf16=False, use_cpu=True, max_length=512,
                     per_device_train_batch_size=4, pad_to_multiple_of=None)
    trainer = KTOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(ref), args=args,
                         train_dataset=Dataset.from_list(UNPAIRED), processing_class=plain_tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(UNPAIRED))])
    trainer.model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()

    main = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    mismatched = (batch["KL_input_ids"], batch["KL_attention_mask"], batch["KL_completion_mask"])
    pol, rf = score(policy, *main), score(ref, *main)
    label = torch.as_tensor(batch["label"], dtype=torch.bool)
    zero, zero_len = torch.zeros_like(pol.logps), torch.zeros_like(pol.lengths)
    logps = PreferenceLogps(
        chosen=torch.where(label, pol.logps, zero), rejected=torch.where(label, zero, pol.logps),
        chosen_lengths=torch.where(label, pol.lengths, zero_len),
        rejected_lengths=torch.where(label, zero_len, pol.lengths),
        ref_chosen=torch.where(label, rf.logps, zero), ref_rejected=torch.where(label, zero, rf.logps),
        kl=score(policy, *mismatched).logps, ref_kl=score(ref, *mismatched).logps)
    assert (logps.kl - logps.ref_kl).mean() > 0, "z_0 should not be clamped to 0 here"
    ours = kto(logps, beta=0.1, lambda_d=lambda_d, lambda_u=lambda_u).losses.mean().item()
    assert ours == pytest.approx(trl_loss, abs=ATOL)
