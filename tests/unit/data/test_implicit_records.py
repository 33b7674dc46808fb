"""HH-RLHF / TRL implicit-prompt pairs: the shared transcript becomes the prompt's messages."""

from __future__ import annotations

import json

import pytest

from simpo_cli.config.schema import DataColumns
from simpo_cli.data.records import detect_format, normalise, resolve_path
from simpo_cli.errors import DataError

COLUMNS = DataColumns()
SHARED = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you need to?\n\nHuman: I locked myself out."


def test_shared_prefix_becomes_user_and_assistant_messages():
    record = {"chosen": SHARED + "\n\nAssistant: Call a locksmith.",
              "rejected": SHARED + "\n\nAssistant: Insert a tension wrench and rake the pins."}
    assert detect_format(record, COLUMNS) == "implicit"
    pair = normalise(record, "implicit", COLUMNS, "hh.jsonl", 0)
    assert pair == {"prompt": [{"role": "user", "content": "How do I pick a lock?"},
                               {"role": "assistant", "content": "Why do you need to?"},
                               {"role": "user", "content": "I locked myself out."}],
                    "chosen": "Call a locksmith.",
                    "rejected": "Insert a tension wrench and rake the pins."}


def test_answers_sharing_their_first_words_keep_them():
    # The common prefix runs into the answers ("Call a "); the prompt must stop at "Assistant:".
    record = {"chosen": SHARED + "\n\nAssistant: Call a locksmith.",
              "rejected": SHARED + "\n\nAssistant: Call a friend."}
    pair = normalise(record, "implicit", COLUMNS, "hh.jsonl", 0)
    assert (pair["chosen"], pair["rejected"]) == ("Call a locksmith.", "Call a friend.")


def test_pair_diverging_before_the_last_turn_names_record_and_field():
    record = {"chosen": SHARED + "\n\nAssistant: Call a locksmith.",
              "rejected": SHARED + "\n\nAssistant: Sure.\n\nHuman: thanks\n\nAssistant: Bye."}
    with pytest.raises(DataError, match=r"hh.jsonl: record 7: field 'rejected': the pair diverges"):
        normalise(record, "implicit", COLUMNS, "hh.jsonl", 7)


def test_plain_records_are_not_taken_for_implicit_ones():
    assert detect_format({"prompt": "q", "chosen": "a", "rejected": "b"}, COLUMNS) == "plain"
    assert detect_format({"chosen": "a", "rejected": "b"}, COLUMNS) == "plain"  # -> "prompt: missing field"


def test_bundled_hh_sample_parses_entirely_as_implicit():
    lines = open(resolve_path("pkg:data/hh-rlhf-harmless-base/train.jsonl")).read().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 300 and {detect_format(r, COLUMNS) for r in records} == {"implicit"}
    for i, record in enumerate(records):
        pair = normalise(record, "implicit", COLUMNS, "train.jsonl", i)
        assert pair["prompt"][-1]["role"] == "user" and pair["prompt"][0]["role"] == "user"
        assert "\n\nHuman:" not in pair["chosen"] and "\n\nAssistant:" not in pair["rejected"]
