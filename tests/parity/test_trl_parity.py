"""SimPO parity with the peer implementation, TRL 1.16 ``CPOTrainer(loss_type="simpo", cpo_alpha=0)``.

Convention checked: plain-string pairs without a chat template, tokens(prompt)+BOS,
tokens(response) + EOS, log-probs length-averaged over response tokens, loss
−log σ(β·(a_w − a_l) − γ). Same tiny model weights, same batch, before any update.
"""


import pytest
import torch

from tests.parity.conftest import PAIRS

trl_cpo = pytest.importorskip("trl.experimental.cpo")

BETA, GAMMA = 2.0, 0.8


def ours(model, tokenizer):
    from omegaconf import OmegaConf

    from simpo_cli.config.schema import DataConfig, HParams
    from simpo_cli.data.preference import PreferenceCollator
    from simpo_cli.data.records import normalise
    from simpo_cli.data.tokenize import encode_pair
    from simpo_cli.training.logps import sequence_logps
    from simpo_cli.objectives import PreferenceLogps
    from simpo_cli.objectives.simpo import simpo

    columns = OmegaConf.structured(DataConfig(name="x", path="x")).columns
    feats = []
    for i, rec in enumerate(PAIRS):
        t = encode_pair(normalise(rec, "plain", columns, "pairs", i), tokenizer, template=False)
        feats.append({"prompt_input_ids": t.prompt, "chosen_input_ids": t.chosen, "rejected_input_ids": t.rejected})
    batch = PreferenceCollator(tokenizer.pad_token_id)(feats)
    out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    b = len(PAIRS)
    logps = PreferenceLogps(out.logps[:b], out.logps[b:], out.lengths[:b], out.lengths[b:])
    result = simpo(logps, beta=BETA, gamma=GAMMA)
    return result.losses.mean(), logps.chosen_avg, logps.rejected_avg, feats


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
    for i, f in enumerate(feats):  # identical token ids, so the comparison below is like for like
        assert trl_ds[i]["chosen_input_ids"] == f["prompt_input_ids"] + f["chosen_input_ids"]
        assert trl_ds[i]["rejected_input_ids"] == f["prompt_input_ids"] + f["rejected_input_ids"]
    torch.testing.assert_close(chosen_avg, trl_chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(rejected_avg, trl_rejected, atol=1e-5, rtol=0)
    assert abs(loss.item() - trl_loss.item()) < 1e-5
