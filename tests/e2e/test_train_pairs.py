"""``simpo train``'s before/after pair metrics are on held-out pairs by default, and the run says so."""

from __future__ import annotations

import json

from tests.helpers import FAST_TRAIN, run_dirs, run_simpo


def test_default_pair_metrics_are_on_carved_held_out_pairs(tmp_path):
    """16 pairs, data.eval_size=0.05 (default) → round(0.8) = 1 pair carved and scored; the other
    15 train (2 steps of 2). The summary table and meta.json name the pairs."""
    proc = run_simpo(["train", *FAST_TRAIN, "trainer.save_model=false", "paths.output_root=out"], tmp_path)
    (run,) = run_dirs(tmp_path / "out")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["pairs"] == {"split": "train", "held_out": True, "count": 1, "of": 16, "carved": True}
    assert meta["data"]["kept"] == 16 and meta["steps"] == 2
    assert set(meta["pairs_before"]) == set(meta["pairs_after"]) and "rewards/accuracies" in meta["pairs_after"]
    # one held-out pair: its accuracy is 0 or 1
    assert meta["pairs_after"]["rewards/accuracies"] in (0.0, 1.0)
    assert "1 held-out pairs carved from train (of 16)" in " ".join(proc.stdout.split())


def test_eval_size_zero_is_reported_as_training_pairs(tmp_path):
    proc = run_simpo(["train", *FAST_TRAIN, "trainer.max_steps=1", "trainer.save_model=false",
                      "data.eval_size=0", "trainer.eval_pairs=5", "paths.output_root=out"], tmp_path)
    (run,) = run_dirs(tmp_path / "out")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["pairs"] == {"split": "train", "held_out": False, "count": 5, "of": 16, "carved": False}
    assert "NOT held out" in proc.stdout


def test_bad_eval_settings_fail_before_loading(tmp_path):
    proc = run_simpo(["train", *FAST_TRAIN, "data.eval_size=-1", "trainer.eval_pairs=0"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "data.eval_size must be >= 0" in proc.stderr + proc.stdout
    assert "trainer.eval_pairs must be >= 1" in proc.stderr + proc.stdout
