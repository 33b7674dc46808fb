"""``trainer.group_by_length: null`` resolves per objective (simpo_cli/training/batching.py)."""

from __future__ import annotations

import json

from simpo_cli.objectives import OBJECTIVES
from simpo_cli.training.batching import length_grouping
from tests.helpers import FAST_TRAIN, run_dirs, run_simpo


def test_null_groups_unless_the_loss_couples_a_batch():
    assert length_grouping(None, OBJECTIVES["simpo"]) is True
    assert length_grouping(None, OBJECTIVES["dpo"]) is True
    assert length_grouping(None, OBJECTIVES["kto"]) is False  # z_ref: a batch-mean KL
    assert [n for n, s in OBJECTIVES.items() if not length_grouping(None, s)] == ["kto"]
    assert length_grouping(False, OBJECTIVES["simpo"]) is False and length_grouping(True, OBJECTIVES["kto"]) is True


def test_train_groups_by_length_by_default_and_records_it(tmp_path):
    run_simpo(["train", *FAST_TRAIN, "trainer.max_steps=1", "trainer.evaluate=false", "trainer.save_model=false",
               "paths.output_root=out"], tmp_path)
    (run,) = run_dirs(tmp_path / "out")
    assert json.loads((run / "meta.json").read_text())["group_by_length"] is True
