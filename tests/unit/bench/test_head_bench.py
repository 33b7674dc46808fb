"""``bench/head.py`` at a tiny shape: every implementation gives the reference's loss and gradients
(to 1e-5), each run reports time and peak RSS, and the table carries the ratios."""

from __future__ import annotations

import importlib.util

import pytest

from bench.head import run, table


def test_head_bench_rows_agree_with_full_logits():
    rows = run(configs=[(8, 64)], impls=("ours", "chunked", "full"), repeats=1, threads=1)
    assert [r["impl"] for r in rows] == ["ours", "chunked", "full"]
    for r in rows:
        assert "error" not in r, r
        assert r["reference"] == "full"
        assert r["max_abs_diff"] <= 1e-5, r
        assert r["seconds"] > 0 and r["peak_rss_gb"] > 0
        assert r["x_bound"] == pytest.approx(r["seconds"] / r["flop_bound_s"])
    text = table(rows)
    assert "| 8 / 64 | ours |" in text and "FLOP bound" in text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="liger-kernel not installed (bench extra)")
def test_head_bench_liger_agrees_and_gives_ratios():
    rows = run(configs=[(8, 64)], impls=("ours", "liger", "full"), repeats=1, threads=1)
    by_impl = {r["impl"]: r for r in rows}
    assert by_impl["liger"]["max_abs_diff"] <= 1e-5
    assert by_impl["ours"]["x_liger_time"] == pytest.approx(by_impl["ours"]["seconds"] / by_impl["liger"]["seconds"])
