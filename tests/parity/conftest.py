"""Shared setup of the TRL-parity tests: the tiny tokenizer without a chat template (both sides
tokenise plain strings), and the pairs both sides score (``PAIRS``)."""

from __future__ import annotations

import copy

import pytest
import torch

PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": " The capital of France is Paris.",
     "rejected": " It is London, I think."},
    {"prompt": "Give me a word that rhymes with cat.", "chosen": " Hat rhymes with cat.",
     "rejected": " Dog."},
    {"prompt": "Describe a process of making crepes.",
     "chosen": " Whisk flour, eggs and milk, then cook thin layers in a hot pan.",
     "rejected": " Crepes are made."},
    {"prompt": "How many legs does a spider have?", "chosen": " Eight.", "rejected": " Six legs, like insects."},
]


@pytest.fixture
def plain_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    return tok


def our_plain_pairs(model, tokenizer):
    """Our tokenisation (no chat template: prompt with BOS, response + EOS) and summed log-probs."""
    from omegaconf import OmegaConf

    from simpo_cli.config.schema import DataConfig
    from simpo_cli.data.preference import PreferenceCollator
    from simpo_cli.data.records import normalise
    from simpo_cli.data.tokenize import encode_pair
    from simpo_cli.objectives import PreferenceLogps
    from simpo_cli.training.logps import sequence_logps

    columns = OmegaConf.structured(DataConfig(name="x", path="x")).columns
    feats = []
    for i, rec in enumerate(PAIRS):
        t = encode_pair(normalise(rec, "plain", columns, "pairs", i), tokenizer, template=False)
        feats.append({"prompt_input_ids": t.prompt, "chosen_input_ids": t.chosen, "rejected_input_ids": t.rejected})
    batch = PreferenceCollator(tokenizer.pad_token_id)(feats)
    with torch.no_grad():
        out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    b = len(PAIRS)
    return PreferenceLogps(out.logps[:b], out.logps[b:], out.lengths[:b], out.lengths[b:]), feats


def check_same_tokens(trl_ds, feats):
    """TRL tokenised ``PAIRS`` to the very ids we did, so the comparisons are like for like."""
    for i, f in enumerate(feats):
        assert trl_ds[i]["chosen_input_ids"] == f["prompt_input_ids"] + f["chosen_input_ids"]
        assert trl_ds[i]["rejected_input_ids"] == f["prompt_input_ids"] + f["rejected_input_ids"]
