"""Shared setup of the TRL-parity tests: the tiny tokenizer without a chat template (both sides
tokenise plain strings), and the pairs both sides score (``PAIRS``)."""

from __future__ import annotations

import copy

import pytest

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
