"""Pair selection (PAPER.md, Instruct setting: best-scored response -> chosen, worst -> rejected)."""

import math

import pytest

from simpo_cli.models.reward import DROP_FEW, DROP_IDENTICAL, DROP_NONFINITE, DROP_TIE, Selection, select_pair


def test_best_is_chosen_worst_is_rejected():
    """scores [0.2, 1.5, -0.7, 0.9]: max 1.5 at index 1, min -0.7 at index 2."""
    assert select_pair(["a", "b", "c", "d"], [0.2, 1.5, -0.7, 0.9]) == Selection(1, 2)


def test_duplicate_text_counts_once_with_its_first_score():
    """The docstring example: the second "a" (9.0) duplicates index 0 (1.0) and is ignored, so
    the best distinct text is "b" (3.0) and the worst "c" (-2.0)."""
    assert select_pair(["a", "b", "a", "c"], [1.0, 3.0, 9.0, -2.0]) == Selection(1, 3)


def test_equal_scores_break_ties_by_lowest_index():
    """Best 2.0 is shared by indices 0 and 1 -> 0; worst 1.0 by indices 2 and 3 -> 2."""
    assert select_pair(["a", "b", "c", "d"], [2.0, 2.0, 1.0, 1.0]) == Selection(0, 2)


def test_whitespace_only_responses_are_never_selected():
    """The empty response scores best (9.0) but is skipped: chosen "x" (1.0), rejected "y" (0.0)."""
    assert select_pair(["  ", "x", "y"], [9.0, 1.0, 0.0]) == Selection(1, 2)


@pytest.mark.parametrize("texts, scores, reason", [
    (["same", "same", "same"], [0.1, 0.5, 0.3], DROP_IDENTICAL),  # the paper's rule
    (["a", "b", "c"], [0.5, 0.5, 0.5], DROP_TIE),  # no preference between best and worst
    (["", "x", ""], [1.0, 0.0, 2.0], DROP_FEW),  # one usable response
    (["a", "b"], [math.nan, 0.0], DROP_NONFINITE),
    (["a", "b"], [math.inf, 0.0], DROP_NONFINITE),
])
def test_dropped_prompts_name_the_reason(texts, scores, reason):
    assert select_pair(texts, scores) == Selection(None, None, reason)
