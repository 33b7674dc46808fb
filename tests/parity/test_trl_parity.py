"""SimPO parity with the peer implementation, TRL 1.16 ``CPOTrainer(loss_type="simpo", cpo_alpha=0)``.

Convention checked: plain-string pairs without a chat template, tokens(prompt)+BOS,
tokens(response) + EOS, log-probs length-averaged over response tokens, loss
−log σ(β·(a_w − a_l) − γ). Same tiny model weights, same batch, before any update.
"""

import pytest
import torch

from tests.parity.conftest import PAIRS, check_same_tokens, our_plain_pairs

trl_cpo = pytest.importorskip("trl.experimental.cpo")

BETA, GAMMA = 2.0, 0.8


def ours(model, tokenizer):
    from simpo_cli.objectives.simpo import simpo

    logps, feats = our_plain_pairs(model, tokenizer)
    return simpo(logps, beta=BETA, gamma=GAMMA).losses.mean(), logps.chosen_avg, logps.rejected_avg, feats


def trl_side(model, tokenizer, tmp_path):
    from datasets import Dataset

    args = trl_cpo.CPOConfig(output_dir=str(tmp_path / "trl"), loss_type="simpo", cpo_alpha=0.0, beta=BETA,
                             simpo_gamma=GAMMA, max_length=512, report_to="none",
                             remove_unused_columns=False, use_cpu=True)
    trainer = trl_cpo.CPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(PAIRS),
                                 processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    chosen, rejected, *_ = trainer.concatenated_forward(model, batch)
    loss, _ = trainer.get_batch_loss_metrics(model, batch)
    return loss, chosen, rejected, trainer.train_dataset


def test_first_step_loss_and_average_logps_match_trl(tiny_model, plain_tokenizer, tmp_path):
    tiny_model.eval()
    with torch.no_grad():
        loss, chosen_avg, rejected_avg, feats = ours(tiny_model, plain_tokenizer)
        trl_loss, trl_chosen, trl_rejected, trl_ds = trl_side(tiny_model, plain_tokenizer, tmp_path)
    check_same_tokens(trl_ds, feats)  # identical token ids, so the comparison below is like for like
    torch.testing.assert_close(chosen_avg, trl_chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(rejected_avg, trl_rejected, atol=1e-5, rtol=0)
    assert abs(loss.item() - trl_loss.item()) < 1e-5
