"""Record layouts, tokenisation conventions, truncation and dropping."""

import json

import pytest
from omegaconf import OmegaConf

from simpo_cli.config.schema import DataConfig, HParams
from simpo_cli.data.preference import PreferenceCollator, build_preference_dataset
from simpo_cli.data.records import normalise, read_records
from simpo_cli.data.tokenize import encode_pair, truncate
from simpo_cli.errors import DataError, UserError

COLUMNS = OmegaConf.structured(DataConfig(name="x", path="x")).columns


def data_cfg(path, **kw):
    return OmegaConf.structured(DataConfig(name="t", path=str(path), **kw))


def hparams(**kw):
    base = dict(max_length=128, max_prompt_length=64)
    return OmegaConf.structured(HParams(**{**base, **kw}))


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_bundled_sharegpt_record_normalises():
    records, source = read_records("pkg:data/dpo_en_demo.json", "train")
    pair = normalise(records[0], "sharegpt", COLUMNS, source, 0)
    assert pair["prompt"][-1]["role"] == "user"
    assert pair["chosen"].startswith("That sounds like a fun")
    assert len(records) == 240


def test_ultrafeedback_layout_takes_history_as_prompt():
    rec = {"prompt": "Hi", "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A"}],
           "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "B"}]}
    pair = normalise(rec, "ultrafeedback", COLUMNS, "f.jsonl", 3)
    assert pair == {"prompt": [{"role": "user", "content": "Hi"}], "chosen": "A", "rejected": "B"}


def test_missing_field_names_file_record_and_field():
    with pytest.raises(DataError, match=r"f.jsonl: record 7: field 'rejected': missing field"):
        normalise({"prompt": "p", "chosen": "c"}, "plain", COLUMNS, "f.jsonl", 7)


def test_malformed_jsonl_names_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: malformed JSON"):
        read_records(str(f), "train")


def test_plain_convention_is_trl_cpo(tiny_tokenizer):
    """No template: tokens(prompt) with BOS + tokens(response) without specials + EOS."""
    tok = tiny_tokenizer
    pair = {"prompt": [{"role": "user", "content": "What is 2+2?"}], "chosen": " Four.", "rejected": " Five."}
    t = encode_pair(pair, tok, template=False)
    assert t.prompt == [tok.bos_token_id] + tok("What is 2+2?", add_special_tokens=False).input_ids
    assert t.chosen == tok(" Four.", add_special_tokens=False).input_ids + [tok.eos_token_id]


def test_template_response_is_the_rest_of_the_conversation(tiny_tokenizer):
    tok = tiny_tokenizer
    pair = {"prompt": [{"role": "user", "content": "Hi!"}], "chosen": "Hello.", "rejected": "Go away."}
    t = encode_pair(pair, tok, template=True)
    full = tok.apply_chat_template(pair["prompt"] + [{"role": "assistant", "content": "Hello."}], tokenize=False)
    assert tok.decode(t.prompt + t.chosen) == full
    assert t.chosen[-1] == tok.eos_token_id and t.prompt[0] == tok.bos_token_id


def test_truncation_cuts_prompt_left_keeping_bos_then_response():
    from simpo_cli.data.tokenize import PairTokens

    t = truncate(PairTokens([1, 10, 11, 12, 13, 14], [20, 21, 22, 23], [30, 31]), max_length=7,
                 max_prompt_length=3, bos_id=1)
    assert t.prompt == [1, 13, 14] and t.prompt_truncated
    assert t.chosen == [20, 21, 22, 23] and not t.response_truncated
    t = truncate(PairTokens([1, 10, 11], [20, 21, 22, 23, 24, 25], [30]), max_length=5,
                 max_prompt_length=3, bos_id=1)
    assert t.prompt == [1, 10, 11] and t.chosen == [20, 21] and t.response_truncated


def test_pairs_without_response_tokens_are_dropped_and_counted(tmp_path, tiny_tokenizer):
    long_prompt = "word " * 300
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Say hi", "chosen": "hi", "rejected": "bye"},
        {"prompt": long_prompt, "chosen": "x", "rejected": "y"},
        {"prompt": "same", "chosen": "a", "rejected": "a"},
        {"prompt": "empty", "chosen": "", "rejected": "b"},
    ])
    # Validation forbids max_prompt_length >= max_length; the dataset still guards against it.
    ds, stats = build_preference_dataset(data_cfg(f), tiny_tokenizer, hparams(max_length=64, max_prompt_length=64),
                                         str(tmp_path / "cache"))
    assert stats.records == 4 and stats.kept == 1 and ds["index"] == [0]
    assert stats.dropped == {"no response tokens left after truncation to max_length": 1,
                             "chosen identical to rejected": 1, "empty response": 1}
    with pytest.raises(DataError, match="record 1.*data.strict=true"):
        build_preference_dataset(data_cfg(f, strict=True), tiny_tokenizer, hparams(max_length=64, max_prompt_length=64),
                                 None)


def test_all_dropped_is_an_error(tmp_path, tiny_tokenizer):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "a"}])
    with pytest.raises(UserError, match="no usable preference pairs"):
        build_preference_dataset(data_cfg(f), tiny_tokenizer, hparams(), None)


def test_tokenised_dataset_is_cached(tmp_path, tiny_tokenizer, monkeypatch):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi", "chosen": "hi", "rejected": "bye"}])
    cache = str(tmp_path / "cache")
    first, _ = build_preference_dataset(data_cfg(f), tiny_tokenizer, hparams(), cache)
    import simpo_cli.data.preference as pref

    monkeypatch.setattr(pref, "read_records", lambda *a: pytest.fail("cache miss"))
    second, stats = build_preference_dataset(data_cfg(f), tiny_tokenizer, hparams(), cache)
    assert second["chosen_input_ids"] == first["chosen_input_ids"] and stats.kept == 1


def test_collator_concatenates_chosen_then_rejected():
    batch = PreferenceCollator(pad_token_id=0)([
        {"prompt_input_ids": [1, 5], "chosen_input_ids": [6, 2], "rejected_input_ids": [7, 8, 2], "index": 0},
        {"prompt_input_ids": [1], "chosen_input_ids": [9, 2], "rejected_input_ids": [2], "index": 4},
    ])
    assert batch["input_ids"].tolist() == [[1, 5, 6, 2, 0], [1, 9, 2, 0, 0], [1, 5, 7, 8, 2], [1, 2, 0, 0, 0]]
    assert batch["response_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [4, 3, 5, 2]
    assert batch["index"].tolist() == [0, 4]
