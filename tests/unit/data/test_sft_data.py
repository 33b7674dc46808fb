"""SFT data: records → messages → token ids with the loss on assistant tokens only.

The mask tests write each template's rendering out by hand, split into the pieces that are learned
(assistant replies with their end-of-turn token) and the pieces that are not (BOS, system and user
turns, role headers), and compare token by token with what ``encode_conversation`` produces.
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from simpo_cli.config.schema import DataConfig
from simpo_cli.data.sft import (IGNORE_INDEX, SFTCollator, ZEPHYR_TEMPLATE, build_sft_dataset, encode_conversation,
                                ensure_chat_template, split_heldout, to_messages, truncate_sft)
from simpo_cli.errors import DataError, UserError

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another one?"},
    {"role": "assistant", "content": "Green, then red."},
]

# (text, learned) pieces of CONVERSATION rendered with the Zephyr layout (the tiny tokenizer's own
# template and simpo sft's default one).
ZEPHYR_PIECES = [
    ("<s><|system|>\nBe brief.</s>\n<|user|>\nName a colour.</s>\n<|assistant|>\n", False),
    ("Blue.</s>", True),
    ("\n<|user|>\nAnother one?</s>\n<|assistant|>\n", False),
    ("Green, then red.</s>", True),
]

# The SimPO repo's Llama-3 template (princeton-nlp/SimPO, MIT), as a model.chat_template override.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
H = "<|start_header_id|>{}<|end_header_id|>\n\n"
LLAMA3_PIECES = [
    ("<s>" + H.format("system") + "Be brief.<|eot_id|>" + H.format("user") + "Name a colour.<|eot_id|>"
     + H.format("assistant"), False),
    ("Blue.<|eot_id|>", True),
    (H.format("user") + "Another one?<|eot_id|>" + H.format("assistant"), False),
    ("Green, then red.<|eot_id|>", True),
]


def expected_tokens(tokenizer, pieces):
    ids, labels = [], []
    for text, learned in pieces:
        piece = tokenizer(text, add_special_tokens=False).input_ids
        ids += piece
        labels += piece if learned else [IGNORE_INDEX] * len(piece)
    return ids, labels


def assert_mask(tokenizer, pieces, messages=CONVERSATION):
    tokens = encode_conversation(messages, tokenizer)
    ids, labels = expected_tokens(tokenizer, pieces)
    got = list(zip(tokenizer.convert_ids_to_tokens(tokens.input_ids), [l != IGNORE_INDEX for l in tokens.labels]))
    want = list(zip(tokenizer.convert_ids_to_tokens(ids), [l != IGNORE_INDEX for l in labels]))
    assert got == want  # token by token: (token, learned)
    assert tokens.input_ids == ids and tokens.labels == labels
    # Learned tokens carry their own id; the learned text is exactly the replies + end-of-turn.
    assert all(l in (IGNORE_INDEX, i) for i, l in zip(tokens.input_ids, tokens.labels))
    learned = tokenizer.decode([i for i, l in zip(tokens.input_ids, tokens.labels) if l != IGNORE_INDEX])
    assert learned == "".join(text for text, is_learned in pieces if is_learned)
    # Nothing is lost: all tokens together are the full rendering.
    assert tokenizer.decode(tokens.input_ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    return tokens


def test_mask_with_the_tokenizers_own_template(tiny_tokenizer):
    """The tiny tokenizer carries a Zephyr template whose role markers are single special tokens."""
    tokens = assert_mask(tiny_tokenizer, ZEPHYR_PIECES)
    tok = tiny_tokenizer
    assistant, user, eos = (tok.convert_tokens_to_ids(t) for t in ("<|assistant|>", "<|user|>", "</s>"))
    learned_ids = [i for i, l in zip(tokens.input_ids, tokens.labels) if l != IGNORE_INDEX]
    assert assistant not in learned_ids and user not in learned_ids
    # 4 EOS tokens: after system and user turns (not learned), after each reply (learned).
    eos_learned = [l != IGNORE_INDEX for i, l in zip(tokens.input_ids, tokens.labels) if i == eos]
    assert eos_learned == [False, False, True, False, True]


def test_mask_with_a_template_override(tiny_tokenizer):
    """A Llama-3 style template (set as model.chat_template) whose role headers are plain text."""
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = LLAMA3_TEMPLATE
    assert_mask(tok, LLAMA3_PIECES)


def test_mask_with_the_default_template_on_a_base_tokenizer(base_tokenizer, tmp_path):
    """A tokenizer without a template gets the Zephyr default; role markers split into several
    ordinary tokens, none of them learned. The template is saved and reloaded with the tokenizer."""
    from transformers import AutoTokenizer

    import copy

    tok = copy.deepcopy(base_tokenizer)
    assert ensure_chat_template(tok, "zephyr") is True
    assert tok.chat_template == ZEPHYR_TEMPLATE
    assert len(tok("<|assistant|>\n", add_special_tokens=False).input_ids) > 1
    assert_mask(tok, ZEPHYR_PIECES)
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.chat_template == ZEPHYR_TEMPLATE
    assert encode_conversation(CONVERSATION, reloaded) == encode_conversation(CONVERSATION, tok)
    assert ensure_chat_template(reloaded, "zephyr") is False  # an existing template is kept


def test_default_template_from_a_string_or_file(base_tokenizer, tmp_path):
    import copy

    template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token + '\n' }}{% endfor %}" \
               "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    (tmp_path / "t.jinja").write_text(template)
    for spec in (template, str(tmp_path / "t.jinja")):
        tok = copy.deepcopy(base_tokenizer)
        ensure_chat_template(tok, spec)
        assert tok.chat_template == template
        assert_mask(tok, [("system: Be brief.</s>\nuser: Name a colour.</s>\nassistant: ", False),
                          ("Blue.</s>\n", True), ("user: Another one?</s>\nassistant: ", False),
                          ("Green, then red.</s>\n", True)])
    with pytest.raises(UserError, match="default_chat_template"):
        ensure_chat_template(copy.deepcopy(base_tokenizer), "no-such-template")


def test_conversation_opening_with_an_assistant_turn_learns_the_later_turns(tiny_tokenizer):
    tokens = encode_conversation([{"role": "assistant", "content": "Hello!"}] + CONVERSATION[1:], tiny_tokenizer)
    learned = tiny_tokenizer.decode([i for i, l in zip(tokens.input_ids, tokens.labels) if l != IGNORE_INDEX])
    assert learned == "Blue.</s>Green, then red.</s>"


def test_template_rejecting_a_conversation_is_a_data_error(tiny_tokenizer, tmp_path):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                         "{{ raise_exception('System role not supported') }}{% endif %}"
                         "{{ m['content'] }}{% endfor %}")
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "yo"}]}) + "\n"
                    + json.dumps({"messages": CONVERSATION}) + "\n")
    with pytest.raises(DataError) as err:
        build_sft_dataset(data_cfg(path), tok, 128, None)
    assert "record 1" in str(err.value) and "System role not supported" in str(err.value)


def test_truncation_keeps_the_first_tokens(tiny_tokenizer):
    tokens = encode_conversation(CONVERSATION, tiny_tokenizer)
    n = len(tokens.input_ids)
    cut = truncate_sft(encode_conversation(CONVERSATION, tiny_tokenizer), n - 3)
    assert cut.truncated and cut.input_ids == tokens.input_ids[:n - 3] and cut.labels == tokens.labels[:n - 3]


# --------------------------------------------------------------------------- record layouts

def columns():
    return OmegaConf.structured(DataConfig(name="t", path="x")).columns


def test_alpaca_record_appends_input_after_a_blank_line():
    record = {"instruction": "Translate.", "input": "Bonjour", "output": "Hello", "system": "Be exact."}
    assert to_messages(record, "alpaca", columns(), "f.json", 0) == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Translate.\n\nBonjour"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert to_messages({"instruction": "Hi", "input": "", "output": "Yo"}, "alpaca", columns(), "f", 0) == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]


def test_sharegpt_record_maps_roles_and_keeps_the_system_prompt():
    record = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                                {"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}],
              "system": "sys"}
    assert [(m["role"], m["content"]) for m in to_messages(record, "sharegpt", columns(), "f", 0)] == [
        ("system", "sys"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")]


@pytest.mark.parametrize("record, field, message", [
    ({"instruction": "x"}, "output", "missing field"),
    ({"instruction": "x", "output": 3}, "output", "expected a string"),
])
def test_malformed_alpaca_record_names_the_field(record, field, message):
    with pytest.raises(DataError) as err:
        to_messages(record, "alpaca", columns(), "f.json", 7)
    assert "f.json" in str(err.value) and "7" in str(err.value) and field in str(err.value)
    assert message in str(err.value)


def test_messages_without_an_assistant_turn_is_an_error():
    with pytest.raises(DataError, match="no assistant turn"):
        to_messages({"messages": [{"role": "user", "content": "hi"}]}, "messages", columns(), "f", 0)


# --------------------------------------------------------------------------- dataset

def data_cfg(path, **kw):
    return OmegaConf.structured(DataConfig(name="t", path=str(path), **kw))


def test_bundled_alpaca_dataset(tiny_tokenizer):
    ds, stats = build_sft_dataset(data_cfg("pkg:data/alpaca_en_demo.json", max_samples=40), tiny_tokenizer, 256,
                                  None)
    assert stats.records == 40 and stats.kept == 40 and len(ds) == 40
    for row in ds:
        assert len(row["input_ids"]) == len(row["labels"]) <= 256
        assert any(l != IGNORE_INDEX for l in row["labels"])
    assert 0 < stats.assistant_tokens < stats.tokens


def test_ultrachat_style_messages_file(tiny_tokenizer, tmp_path):
    """UltraChat-200k's layout: `prompt`, `prompt_id` and a multi-turn `messages` list."""
    path = tmp_path / "ultrachat.jsonl"
    path.write_text("".join(json.dumps({"prompt": "q", "prompt_id": str(i), "messages": CONVERSATION[1:]}) + "\n"
                            for i in range(3)))
    ds, stats = build_sft_dataset(data_cfg(path), tiny_tokenizer, 512, None)
    ids, labels = expected_tokens(tiny_tokenizer, [("<s>" + ZEPHYR_PIECES[0][0][len("<s><|system|>\nBe brief.</s>\n"):],
                                                    False)] + ZEPHYR_PIECES[1:])
    assert ds[0]["input_ids"] == ids and ds[0]["labels"] == labels and stats.kept == 3


def test_preference_pairs_are_refused_with_a_pointer_to_train(tiny_tokenizer):
    with pytest.raises(UserError, match="simpo train"):
        build_sft_dataset(data_cfg("pkg:data/dpo_en_demo.json"), tiny_tokenizer, 256, None)


def test_empty_replies_are_dropped_or_refused_when_strict(tiny_tokenizer, tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "  "}]))
    ds, stats = build_sft_dataset(data_cfg(path), tiny_tokenizer, 256, None)
    assert len(ds) == 1 and stats.dropped == {"empty assistant reply": 1}
    with pytest.raises(DataError, match="record 1"):
        build_sft_dataset(data_cfg(path, strict=True), tiny_tokenizer, 256, None)


def test_dataset_is_cached(tiny_tokenizer, tmp_path):
    cfg = data_cfg("pkg:data/alpaca_en_demo.json", max_samples=8)
    first, _ = build_sft_dataset(cfg, tiny_tokenizer, 128, str(tmp_path))
    (entry,) = (tmp_path / "tokenized-sft").iterdir()
    second, stats = build_sft_dataset(cfg, tiny_tokenizer, 128, str(tmp_path))
    assert first["input_ids"] == second["input_ids"] and stats.kept == 8
    build_sft_dataset(cfg, tiny_tokenizer, 64, str(tmp_path))  # max_length is part of the key
    assert len(list((tmp_path / "tokenized-sft").iterdir())) == 2


def test_heldout_split_is_seeded(tiny_tokenizer):
    ds, _ = build_sft_dataset(data_cfg("pkg:data/alpaca_en_demo.json", max_samples=40), tiny_tokenizer, 64, None)
    train, held = split_heldout(ds, 0.1, seed=42)
    assert len(held) == 4 and len(train) == 36
    assert split_heldout(ds, 0.1, seed=42)[1]["index"] == held["index"]
    assert not set(held["index"]) & set(train["index"])
    assert len(split_heldout(ds, 5, seed=0)[1]) == 5
    with pytest.raises(UserError, match="eval_size"):
        split_heldout(ds, 40, seed=0)


# --------------------------------------------------------------------------- batches

def features(tokenizer):
    other = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}]
    return [vars(encode_conversation(m, tokenizer)) for m in (CONVERSATION, other)]


def test_collator_pads_and_masks(tiny_tokenizer):
    feats = features(tiny_tokenizer)
    batch = SFTCollator(tiny_tokenizer.pad_token_id)([{k: f[k] for k in ("input_ids", "labels")} for f in feats])
    n0, n1 = (len(f["input_ids"]) for f in feats)
    assert batch["input_ids"].shape == (2, max(n0, n1))
    assert batch["attention_mask"][1].tolist() == [1] * n1 + [0] * (n0 - n1)
    assert batch["labels"][1, n1:].eq(IGNORE_INDEX).all()
    assert batch["labels"][0].tolist() == feats[0]["labels"]


def test_packed_batch_gives_the_same_loss_as_a_padded_one(tiny_tokenizer, tiny_model):
    """Padding-free packing (hparams.packing): position ids restart per conversation, so attention
    stays inside each conversation and the summed assistant-token loss equals the padded batch's."""
    from transformers import DataCollatorWithFlattening

    feats = [{k: f[k] for k in ("input_ids", "labels")} for f in features(tiny_tokenizer)]
    padded = SFTCollator(tiny_tokenizer.pad_token_id)(feats)
    packed = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)(feats)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in feats))
    tiny_model.eval()

    def summed(batch):
        count = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
        with torch.no_grad():
            return tiny_model(**batch).loss * count, count

    (a, na), (b, nb) = summed(padded), summed(packed)
    assert na == nb and torch.allclose(a, b, rtol=1e-4)
