"""resume=auto needs a run directory that a rerun finds again: given with run_dir=, or one that is
not time-stamped (generate-pairs names its directory after its settings)."""

from __future__ import annotations

import pytest

from simpo_cli.errors import ConfigError
from simpo_cli.run.preflight import preflight


def test_resume_auto_on_a_time_stamped_run_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="resume=auto needs the run directory to continue"):
        preflight("train", "config", ["resume=auto", f"paths.output_root={tmp_path}"])
    plan = preflight("train", "config", ["resume=auto", f"run_dir={tmp_path / 'run'}"])
    assert plan.run_dir == tmp_path / "run" and not plan.existed


def test_generate_pairs_resumes_by_default_in_its_settings_named_directory(tmp_path):
    plan = preflight("generate-pairs", "generate-pairs", [f"paths.output_root={tmp_path}"])
    assert plan.run_dir == tmp_path / "generate-pairs" / "tiny-llama_demo-prompts_tiny_n5_seed42"
    assert plan.cfg.resume == "auto"
