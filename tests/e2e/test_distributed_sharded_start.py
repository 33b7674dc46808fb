"""Under DeepSpeed or FSDP the model only runs once ``Trainer.train`` has prepared it, so the
"before" pair metrics are taken at ``on_train_begin`` instead. That must give the same numbers as
scoring the pairs before ``train()`` (checked here on one CPU process by forcing the late path)."""

from __future__ import annotations

import pytest

from tests.helpers import FAST_TRAIN, compose

ONE_STEP = [o for o in FAST_TRAIN if not o.startswith("trainer.max_steps")] + [
    "trainer.max_steps=1", "trainer.save_model=false"]


def test_before_metrics_at_train_begin_match(tmp_path, monkeypatch):
    import simpo_cli.stages.train as train

    cfg = compose([*ONE_STEP, f"paths.cache_dir={tmp_path / 'cache'}"])
    direct = train.run_train(cfg, tmp_path / "direct")
    monkeypatch.setattr(train, "prepared_in_train", lambda trainer: True)
    late = train.run_train(cfg, tmp_path / "late")
    assert set(late.before) == set(direct.before) and "rewards/accuracies" in late.before
    for key, value in direct.before.items():
        assert late.before[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert late.final_loss == pytest.approx(direct.final_loss, rel=1e-6)  # training itself unchanged
