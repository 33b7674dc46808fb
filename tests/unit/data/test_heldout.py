"""Which pairs the before/after metrics of ``simpo train`` are on (simpo_cli/data/heldout.py)."""

from __future__ import annotations

import random

import datasets
import pytest

from simpo_cli.data.heldout import carve_count, metric_pairs, sample_indices
from simpo_cli.errors import UserError


def pairs(n):
    return datasets.Dataset.from_dict({"index": list(range(n)), "prompt_input_ids": [[i] for i in range(n)]})


def test_carve_count_hand_values():
    assert carve_count(0.05, 16, 256) == 1  # round(0.8)
    assert carve_count(0.05, 1000, 256) == 50
    assert carve_count(0.05, 60_000, 256) == 256  # 3,000 capped
    assert carve_count(0.01, 10, None) == 1  # round(0.1) = 0, at least one
    assert carve_count(7, 100, None) == 7 and carve_count(7, 100, 5) == 5  # a count
    with pytest.raises(UserError, match=r"data.eval_size=0.5 holds out 1 of the 1 training pairs"):
        carve_count(0.5, 1, 256)
    with pytest.raises(UserError, match="eval_size=20"):
        carve_count(20, 20, None)


def test_sample_indices_is_seeded_sorted_and_python_random():
    got = sample_indices(10, 3, seed=42)
    assert got == sorted(random.Random(42).sample(range(10), 3)) and len(set(got)) == 3
    assert sample_indices(10, 3, seed=42) == got and sample_indices(10, 3, seed=1) != got
    assert sample_indices(4, None, 0) == sample_indices(4, 9, 0) == [0, 1, 2, 3]


def test_carved_pairs_leave_training_and_keep_its_order():
    train, held, info = metric_pairs(pairs(20), None, split="train", eval_split=None, eval_size=0.1,
                                     cap=256, seed=3)
    expected = sample_indices(20, 2, 3)
    assert held["index"] == expected
    assert train["index"] == [i for i in range(20) if i not in expected]  # order kept, none shared
    assert info.as_dict() == {"split": "train", "held_out": True, "count": 2, "of": 20, "carved": True}
    assert info.label() == "2 held-out pairs carved from train (of 20)"


def test_eval_split_is_sampled_not_carved():
    train = pairs(8)
    same, held, info = metric_pairs(train, pairs(500), split="train", eval_split="test_prefs", eval_size=0.05,
                                    cap=256, seed=0)
    assert same is train and len(held) == 256 and held["index"] == sample_indices(500, 256, 0)
    assert info.as_dict() == {"split": "test_prefs", "held_out": True, "count": 256, "of": 500, "carved": False}


def test_eval_size_zero_scores_training_pairs_and_says_so():
    train = pairs(300)
    same, scored, info = metric_pairs(train, None, split="train", eval_split=None, eval_size=0, cap=100, seed=0)
    assert same is train and len(scored) == 100 and not info.held_out
    assert info.label() == "100 training pairs of train (of 300), NOT held out"
