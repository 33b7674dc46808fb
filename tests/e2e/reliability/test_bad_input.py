"""Every class of user mistake ends the same way: exit code 2, exactly one ``simpo: error:`` line
naming what is wrong (file, record and field for data), no traceback, and no run directory left.

The matrix runs the real ``simpo train`` command in-process (typer's ``CliRunner``: same code path
as the console script, without paying Python start-up per case); a few cases also run as a real
subprocess to check what a user's terminal sees, including ``SIMPO_DEBUG=1``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import FAST_TRAIN, run_simpo

GOOD = {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Berlin, I think."}
GOOD2 = {"prompt": "Name a primary colour.", "chosen": "Red.", "rejected": "Green is primary."}


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def uf(chosen_last, rejected_last):
    """An UltraFeedback-layout record (message lists ending with the answer)."""
    q = {"role": "user", "content": "Say hi."}
    return {"chosen": [q, chosen_last], "rejected": [q, rejected_last]}


# name -> (extra overrides, data file (name, text) or None, fragments the error line must contain)
CASES = {
    # -- config -------------------------------------------------------------------------------
    "unknown_group_option": (["objective=simpoo"], None,
                             ["unknown objective option 'simpoo'", "choose from:", "simpo"]),
    "unknown_model_option": (["model=llama4"], None, ["unknown model option 'llama4'", "tiny-llama"]),
    "unknown_key": (["objective.betta=2.0"], None, ["unknown key 'objective.betta'", "objective.beta"]),
    "moved_key": (["hparams.beta=2.5"], None, ["hparams.beta is now objective.beta", "objective.beta=2.5"]),
    "wrong_type": (["objective.beta=abc"], None, ["objective.beta", "'abc'"]),
    "wrong_type_int": (["trainer.max_steps=ten"], None, ["trainer.max_steps", "'ten'"]),
    "beta_zero": (["objective.beta=0"], None, ["objective.beta must be > 0"]),
    "beta_negative": (["objective.beta=-2"], None, ["objective.beta must be > 0, got -2.0"]),
    "gamma_negative": (["objective.gamma=-0.5"], None, ["objective.gamma must be >= 0, got -0.5"]),
    "lr_zero": (["hparams.learning_rate=0"], None, ["hparams.learning_rate must be > 0"]),
    "prompt_length_ge_max_length": (["hparams.max_prompt_length=128"], None,
                                    ["hparams.max_prompt_length (128) must be < hparams.max_length (128)"]),
    "missing_data_file": (["data=local", "data.path=/nonexistent/pairs.jsonl"], None,
                          ["data.path: file not found: /nonexistent/pairs.jsonl"]),
    "data_path_not_set": (["data=local"], None, ["data 'local' needs a path"]),
    "missing_model_dir": (["model.name_or_path=/nonexistent/model"], None,
                          ["model.name_or_path: local path not found: /nonexistent/model"]),
    "unwritable_output": (["paths.output_root=/proc/simpo-out"], None,
                          ["paths.output_root is not writable: /proc/simpo-out"]),
    "bad_data_format": (["data.format=csv"], None, ["data.format must be one of", "got 'csv'"]),
    "batch_not_divisible": (["hparams.global_batch_size=3"], None,
                            ["hparams.global_batch_size (3) must be a multiple"]),
    "resume_auto_without_run_dir": (["resume=auto"], None, ["resume=auto needs the run directory", "run_dir="]),
    "resume_not_a_checkpoint": (["resume=/nonexistent/checkpoint-3"], None, ["resume=/nonexistent/checkpoint-3: not a complete checkpoint directory"]),
    "all_problems_at_once": (["objective.beta=0", "objective.gamma=-1", "hparams.learning_rate=-1"], None,
                             ["objective.beta must be > 0", "objective.gamma must be >= 0",
                              "hparams.learning_rate must be > 0"]),
    # -- data (data.strict=true turns the drop into the error that names record and field) ------
    "malformed_jsonl": ([], ("bad.jsonl", jsonl(GOOD) + '{"prompt": "x", "chosen": \n'),
                        ["bad.jsonl:2: malformed JSON line"]),
    "malformed_json": ([], ("bad.json", '[{"prompt": "x",}]'), ["bad.json:1: malformed JSON"]),
    "renamed_column_missing": (["data.strict=true", "data.columns.chosen=answer"], ("col.jsonl", jsonl(GOOD)),
                               ["col.jsonl: record 0: field 'answer': missing field"]),
    "empty_file": ([], ("empty.jsonl", ""), ["empty.jsonl: no usable preference pairs", "the file is empty"]),
    "missing_field": (["data.strict=true"], ("mf.jsonl", jsonl(GOOD, {"prompt": "x", "chosen": "y"})),
                      ["mf.jsonl: record 1: field 'rejected': missing field"]),
    "non_string_prompt": (["data.strict=true"], ("ns.jsonl", jsonl(GOOD, {**GOOD2, "prompt": 42})),
                          ["ns.jsonl: record 1: field 'prompt': expected a string, got int"]),
    "empty_prompt": (["data.strict=true"], ("ep.jsonl", jsonl(GOOD, {**GOOD2, "prompt": "  "})),
                     ["ep.jsonl: record 1: field 'prompt': empty prompt"]),
    "empty_response": (["data.strict=true"], ("er.jsonl", jsonl(GOOD, {**GOOD2, "chosen": ""})),
                       ["er.jsonl: record 1: field 'chosen': empty response"]),
    "malformed_message_list": (["data.strict=true"],
                               ("msg.jsonl", jsonl(uf({"role": "assistant", "content": "Hi!"},
                                                      {"speaker": "assistant", "text": "Hey"}))),
                               ["msg.jsonl: record 0: field 'rejected': malformed message"]),
    "message_list_not_ending_with_answer": (["data.strict=true"],
                                            ("last.jsonl", jsonl(uf({"role": "user", "content": "Hi!"},
                                                                    {"role": "assistant", "content": "x"}))),
                                            ["last.jsonl: record 0: field 'chosen'", "assistant"]),
    "chosen_identical_to_rejected": (["data.strict=true"],
                                     ("same.jsonl", jsonl(GOOD, {**GOOD2, "rejected": GOOD2["chosen"]})),
                                     ["same.jsonl: record 1: field 'rejected': chosen identical to rejected"]),
    "prompt_longer_than_max_length": (["data.strict=true"],
                                      ("long.jsonl", jsonl(GOOD, {**GOOD2, "prompt": "word " * 400})),
                                      ["long.jsonl: record 1: field 'prompt': prompt longer than max_length"]),
    "duplicate_pair": (["data.strict=true"], ("dup.jsonl", jsonl(GOOD, GOOD2, GOOD)),
                       ["dup.jsonl: record 2: duplicate pair (same as record 0)"]),
    "record_not_an_object": (["data.strict=true"], ("list.jsonl", jsonl(GOOD, ["a", "b"])),
                             ["list.jsonl: record 1: expected a JSON object"]),
    "all_rows_dropped": ([], ("drop.jsonl", jsonl({**GOOD, "rejected": GOOD["chosen"]}, {**GOOD2, "prompt": ""})),
                         ["drop.jsonl: no usable preference pairs: 2 records read, all dropped",
                          "chosen identical to rejected (first: record 0)", "empty prompt (first: record 1)"]),
}


def invoke(args: list[str], tmp_path: Path):
    from simpo_cli.cli import app

    return CliRunner().invoke(app, args)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIMPO_DEBUG", raising=False)
    return tmp_path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(name, workdir):
    overrides, data, fragments = CASES[name]
    args = ["train", *FAST_TRAIN, f"paths.output_root={workdir / 'outputs'}"]
    if data is not None:
        file = workdir / data[0]
        file.write_text(data[1])
        args += ["data=local", f"data.path={file}"]
    result = invoke([*args, *overrides], workdir)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("simpo: error:")]
    assert result.exit_code == 2, result.output[-3000:]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert not (workdir / "outputs").exists()  # no run directory, not even Hydra's .hydra/


def test_case_matrix_covers_twenty_classes():
    assert len(CASES) >= 20


def test_real_cli_prints_one_line_and_debug_shows_traceback(tmp_path):
    """What a terminal sees: stderr is one line, exit 2; ``SIMPO_DEBUG=1`` shows the traceback."""
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(jsonl(GOOD, {**GOOD2, "chosen": 7}))
    args = ["train", *FAST_TRAIN, "data=local", f"data.path={bad}", "data.strict=true"]
    proc = run_simpo(args, tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"simpo: error: {bad}: record 1: field 'chosen': expected a string, got int (data.strict=true)")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()
    debug = run_simpo(args, tmp_path, check=False, env={"SIMPO_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DataError" in debug.stderr


def test_existing_checkpoints_need_resume_auto(workdir):
    """Rerunning into a run directory with checkpoints must not silently start over."""
    ckpt = workdir / "run" / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    result = invoke(["train", *FAST_TRAIN, f"run_dir={workdir / 'run'}"], workdir)
    assert result.exit_code == 2
    assert "already has checkpoints (newest checkpoint-2); pass resume=auto" in result.stderr
    assert sorted(p.name for p in (workdir / "run").rglob("*")) == ["checkpoint-2", "checkpoints",
                                                                    "trainer_state.json"]
