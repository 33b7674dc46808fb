"""``python -m bench``'s one table, its ratios and the issue's targets (no timed runs here)."""

from __future__ import annotations

import sys

import pytest

from bench.run import head_rows, targets, targets_table, unified_table


def rows():
    return [
        {"part": "head", "config": "H576/V49152", "impl": "ours", "s": 6.0, "peak_rss_gb": 1.0, "flop_bound_s": 3.0},
        {"part": "head", "config": "H576/V49152", "impl": "liger", "s": 8.0, "peak_rss_gb": 4.0},
        {"part": "step", "config": "V512 b4 L4+4", "impl": "simpo", "vocab": 512, "s_per_step": 1.0,
         "peak_rss_gb": 0.5, "flop_bound_s": 0.25},
        {"part": "step", "config": "V512 b4 L4+4", "impl": "trl-cpo-simpo", "vocab": 512, "s_per_step": 4.0,
         "peak_rss_gb": 2.0, "flop_bound_s": 0.25},
        {"part": "step", "config": "V512 b4 L4+4", "impl": "dpo-cached", "vocab": 512, "skipped": "no dpo"},
        {"part": "smollm2", "config": "SmolLM2-135M", "impl": "simpo", "s_per_step": 3.0, "peak_rss_gb": 2.0,
         "wall_s": 30.0, "train_s": 20.0, "pairs": {"count": 1, "held_out": True}},
        {"part": "smollm2", "config": "SmolLM2-135M", "impl": "trl-cpo-simpo", "s_per_step": 10.0,
         "peak_rss_gb": 8.0, "wall_s": 41.0, "train_s": 40.0},
    ]


def test_one_table_with_ratios_to_each_parts_baseline_and_the_bound():
    text = unified_table(rows())
    assert "| head | H576/V49152 | ours | 6.000 | 1.00 | 0.75x | 0.25x | 3.000 | 2.00x |" in text
    assert "| head | H576/V49152 | liger | 8.000 | 4.00 | base | base | - | - |" in text
    assert "| step | V512 b4 L4+4 | simpo | 1.000 | 0.50 | 0.25x | 0.25x | 0.250 | 4.00x |" in text
    assert "| step | V512 b4 L4+4 | dpo-cached | | | | | | | skipped: no dpo |" in text
    assert ("| smollm2 | SmolLM2-135M | simpo | 3.000 | 2.00 | 0.30x | 0.25x | - | - | "
            "wall 30 s / train 20 s = 1.50x; pair metrics on 1 held-out |") in text
    # TRL's wall_s is its train() call alone, not a whole run: no run-overhead note
    assert "| smollm2 | SmolLM2-135M | trl-cpo-simpo | 10.000 | 8.00 | base | base | - | - |  |" in text


def test_targets_from_the_rows():
    got = {name: (value, limit) for name, value, limit in targets(rows())}
    assert got["head H576/V49152: ours s / Liger s"] == (pytest.approx(0.75), 0.9)
    assert got["head H576/V49152: ours memory / Liger"] == (pytest.approx(0.25), 0.5)
    assert got["head H576/V49152: ours s / FLOP bound"] == (pytest.approx(2.0), 1.5)
    assert got["step V512 (target stated at V128256): simpo s/step / TRL"] == (pytest.approx(0.25), 0.25)
    assert got["SmolLM2: simpo s/step / TRL"] == (pytest.approx(0.3), 0.4)
    assert got["SmolLM2: 4-step run wall / training time"] == (pytest.approx(1.5), 1.5)
    assert not any(name.startswith("head H64") for name in got)  # not measured, not claimed
    text = targets_table(targets(rows()))
    assert "| head H576/V49152: ours s / FLOP bound | 2.00x | <= 1.5x | no |" in text
    assert "| step V512 (target stated at V128256): simpo s/step / TRL | 0.25x | <= 0.25x | yes |" in text


def test_head_part_is_a_skipped_row_without_bench_head(monkeypatch):
    monkeypatch.setitem(sys.modules, "bench.head", None)  # import raises ModuleNotFoundError
    (row,) = head_rows(quick=True)
    assert row["part"] == "head" and "bench/head.py" in row["skipped"]
    assert "skipped: bench/head.py" in unified_table([row])


def test_head_rows_come_from_bench_head(monkeypatch):
    import types

    fake = types.ModuleType("bench.head")
    fake.rows = lambda quick: [{"impl": "ours", "hidden": 64, "vocab": 128256, "s": 1.0, "quick": quick}]
    monkeypatch.setitem(sys.modules, "bench.head", fake)
    (row,) = head_rows(quick=True)
    assert row["config"] == "H64/V128256" and row["part"] == "head" and row["quick"] is True
