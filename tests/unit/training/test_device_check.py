"""The no-GPU check counts the model that would load (simpo_cli/training/precision.py)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import compose


def test_a_run_directory_is_counted_from_its_saved_model(tmp_path, tiny_model):
    from simpo_cli.training.precision import model_size_b

    run = tmp_path / "run"
    tiny_model.save_pretrained(run / "model")
    (run / "meta.json").write_text(json.dumps({"stage": "train", "status": "completed"}))
    expected = sum(p.numel() for p in tiny_model.parameters()) / 1e9
    # a small model trained on a big setting's preset: its own size counts, not the preset's 8.03B
    for where in (run, run / "model"):
        cfg = compose(["model=llama3-instruct", f"model.name_or_path={where}"])
        assert model_size_b(cfg.model) == pytest.approx(expected)
    assert model_size_b(compose(["model=llama3-instruct"]).model) == 8.03
