"""Token by token, with SmolLM2's real tokenizer (ChatML, bos = <|im_start|>, pad == eos == <|im_end|>):
each response ends with the end-of-turn token and it is scored; the prompt carries exactly the start
tokens its template writes, never an extra BOS. Plus the same promises for the bundled tiny tokenizer
(a template that writes ``bos_token`` itself) and for the plain (no template) convention."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from simpo_cli.data.preference import PreferenceCollator
from simpo_cli.data.templates import prompt_ids, prompt_text, response_ids
from simpo_cli.data.tokenize import encode_pair, truncate
from simpo_cli.models.generate import encode_prompt

PAIR = {"prompt": [{"role": "user", "content": "What is the capital of France?"},
                   {"role": "assistant", "content": "Paris."},
                   {"role": "user", "content": "And of Italy?"}],
        "chosen": "Rome.", "rejected": "The capital of Italy is Milan, a city in the north."}


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_smollm2_tokenizer_is_what_the_tests_assume(tok):
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tok.pad_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_prompt_has_exactly_the_templates_start_tokens(tok):
    ids = prompt_ids(PAIR["prompt"], tok, template=True)
    text = prompt_text(PAIR["prompt"], tok, template=True)
    start = tok.convert_tokens_to_ids("<|im_start|>")
    # system (the template's default), user, assistant, user, and the generation header
    assert text.count("<|im_start|>") == 5 and ids.count(start) == 5
    assert ids[0] == start and ids[1] != start  # one start token, not BOS + template's BOS
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
    assert encode_prompt(PAIR["prompt"], tok, template=True) == ids  # generate-pairs asks the same


def test_responses_end_with_im_end_and_it_is_scored(tok):
    tokens = truncate(encode_pair(PAIR, tok, template=True), 512, 256, tok.bos_token_id)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for response, text in ((tokens.chosen, PAIR["chosen"]), (tokens.rejected, PAIR["rejected"])):
        assert response[-1] == end and response.count(end) == 1
        assert tok.decode(response[:-1]) == text  # nothing of the template's trailing "\n"
    assert response_ids(PAIR["prompt"], "Rome.", tok, True) == tokens.chosen
    batch = PreferenceCollator(tok.pad_token_id)([{"prompt_input_ids": tokens.prompt, "chosen_input_ids": tokens.chosen,
                                                   "rejected_input_ids": tokens.rejected, "index": 0}])
    chosen_len = len(tokens.prompt) + len(tokens.chosen)
    row, mask, attn = batch["input_ids"][0], batch["response_mask"][0], batch["attention_mask"][0]
    assert len(tokens.rejected) > len(tokens.chosen)  # so the chosen row is padded with pad == eos
    assert row[chosen_len - 1] == end and mask[chosen_len - 1] == 1 and attn[chosen_len - 1] == 1
    assert (row[chosen_len:] == end).all() and mask[chosen_len:].sum() == 0 and attn[chosen_len:].sum() == 0
    assert mask.sum() == len(tokens.chosen) and mask[: len(tokens.prompt)].sum() == 0


def test_tiny_template_writes_its_bos_once(tiny_tokenizer):
    ids = prompt_ids(PAIR["prompt"], tiny_tokenizer, template=True)
    assert ids[0] == tiny_tokenizer.bos_token_id and ids.count(tiny_tokenizer.bos_token_id) == 1
    tokens = encode_pair(PAIR, tiny_tokenizer, template=True)
    assert tokens.chosen[-1] == tiny_tokenizer.eos_token_id


def test_plain_convention_adds_one_bos_id(tok, tiny_tokenizer):
    for t in (tok, tiny_tokenizer):
        ids = prompt_ids(PAIR["prompt"][:1], t, template=False)
        assert ids[0] == t.bos_token_id and ids.count(t.bos_token_id) == 1
        assert t.decode(ids[1:]) == PAIR["prompt"][0]["content"]
        assert response_ids(PAIR["prompt"], "Rome.", t, False)[-1] == t.eos_token_id
