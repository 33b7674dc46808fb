"""Anthropic HH-RLHF harmless-base (implicit prompts: whole transcripts, no `prompt` field) validates
and trains with `data=local` and no column or format options."""

from __future__ import annotations

import json

from tests.helpers import FAST_TRAIN, run_dirs, run_simpo

HH_TRAIN = "data.path=pkg:data/hh-rlhf-harmless-base/train.jsonl"


def test_validate_keeps_the_pairs(tmp_path):
    proc = run_simpo(["validate", "data=local", HH_TRAIN, "hparams.max_length=512"], tmp_path)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("data: ok"))
    assert "300 records, 299 pairs kept" in line and "prompt: missing field" not in proc.stdout + proc.stderr


def test_train_on_hh_pairs_writes_curves(tmp_path):
    run_simpo(["train", "data=local", HH_TRAIN, *FAST_TRAIN, "trainer.evaluate=false"], tmp_path)
    (run,) = run_dirs(tmp_path / "outputs")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["data"]["kept"] == 16 and meta["steps"] == 2
    png = run / "curves.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
