"""The README's lists of objectives follow the registry (simpo_cli/objectives), so a new objective
cannot be left out of them unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

from simpo_cli.objectives import OBJECTIVES

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_the_group_table_lists_every_objective():
    (row,) = re.findall(r"^\| `objective` \| (.*?) \|", README, re.M)
    assert sorted(re.findall(r"`([^`]+)`", row)) == sorted(OBJECTIVES)


def test_the_reference_model_list_is_the_objectives_that_need_one():
    (listed,) = re.findall(r"Objectives with a reference model \(([^)]*)\)", README.replace("\n", " "))
    assert sorted(n.strip() for n in listed.split(",")) == sorted(n for n, s in OBJECTIVES.items() if s.needs_reference)


def test_every_objective_after_the_paper_has_a_row_in_the_objective_table():
    paper = {"simpo", "dpo", "ipo", "kto", "orpo", "rdpo", "cpo", "rrhf", "slic-hf"}  # PAPER.md Table 3
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \| .*\| (?:yes|no) \|", README, re.M))
    assert rows == set(OBJECTIVES) - paper
