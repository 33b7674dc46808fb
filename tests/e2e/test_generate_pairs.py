"""``simpo generate-pairs`` end to end on the tiny model and the bundled demo prompts: the pairs
it writes, ``simpo train`` on them, and resuming after SIGKILL or a kill between two writes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from simpo_cli.errors import ConfigError, UserError
from tests.helpers import FAST_TRAIN, compose, read_jsonl, run_dirs, run_simpo

# 64 bundled prompts, 5 samples each, 16 new tokens; prompts over 256 tokens are dropped (counted)
# to keep the tiny model's CPU time small. 8 shards of 8 prompts.
GEN = ["data.max_samples=64", "generation.max_new_tokens=16", "generation.max_prompt_length=256",
       "generation.shard_size=8", "progress_bar=false"]
SHARDS = 8


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "SIMPO_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _outputs(run: Path) -> dict[str, bytes]:
    """Every data file of an output directory (pairs and candidate shards) with its bytes."""
    files = [*run.glob("pairs-*.jsonl"), *run.glob("candidates/*")]
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(files)}


# The two sampling modes: batched (default; reproducible for a fixed command) and batch-invariant.
MODES = {"batched": [], "invariant": ["generation.batch_invariant=true"]}


def _uninterrupted(tmp_path_factory, mode: str) -> Path:
    tmp = tmp_path_factory.mktemp(f"reference-{mode}")
    proc = run_simpo(["generate-pairs", *GEN, *MODES[mode], "run_dir=gen"], tmp, env={"OMP_NUM_THREADS": "1"})
    assert "pairs" in proc.stdout and "simpo train data=generated" in proc.stdout
    return tmp / "gen"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run in the default (batched) mode, shared by the tests below."""
    return _uninterrupted(tmp_path_factory, "batched")


@pytest.fixture(scope="module")
def reference_invariant(tmp_path_factory) -> Path:
    """The same run with generation.batch_invariant=true."""
    return _uninterrupted(tmp_path_factory, "invariant")


@pytest.fixture(params=sorted(MODES))
def mode_reference(request) -> tuple[str, Path]:
    return request.param, request.getfixturevalue("reference" if request.param == "batched" else "reference_invariant")


@contextmanager
def torch_threads(n: int):
    """In-process reruns use the reference's thread count (it is part of a batched run's settings)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_writes_ultrafeedback_pairs_candidates_and_meta(reference):
    meta = json.loads((reference / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["attempts"] == 1 and meta["shards"] == SHARDS
    assert meta["prompts"] == 64 and meta["samples"] == 5 * meta["pairs"] + 5 * sum(
        n for r, n in meta["dropped"].items() if r != "prompt longer than generation.max_prompt_length")
    assert meta["pairs"] > 20 and meta["pairs"] + sum(meta["dropped"].values()) == 64
    assert meta["samples_per_second_last_attempt"] > 0
    assert sorted(p.name for p in reference.glob("pairs-*.jsonl")) == [f"pairs-{k:05d}.jsonl" for k in range(SHARDS)]
    assert not [p for p in reference.rglob(".*") if p.is_file()], "temporary files left behind"

    pairs = [r for k in range(SHARDS) for r in read_jsonl(reference / f"pairs-{k:05d}.jsonl")]
    candidates = [r for k in range(SHARDS) for r in read_jsonl(reference / f"candidates/candidates-{k:05d}.jsonl")]
    assert len(pairs) == meta["pairs"] and [c["source_index"] for c in candidates] == list(range(64))
    by_index = {c["source_index"]: c for c in candidates}
    for pair in pairs:
        # UltraFeedback-binarized: prompt string, message lists ending with the answer, scores.
        assert isinstance(pair["prompt"], str) and pair["chosen"][-1]["role"] == "assistant"
        assert pair["chosen"][:-1] == pair["rejected"][:-1] and pair["chosen"][-2]["content"] == pair["prompt"]
        assert pair["chosen"][-1]["content"] != pair["rejected"][-1]["content"]
        assert pair["score_chosen"] > pair["score_rejected"]
        record = by_index[pair["source_index"]]
        scores = [c["score"] for c in record["candidates"]]
        assert len(scores) == 5 and all(c["num_tokens"] <= 16 for c in record["candidates"])
        assert pair["score_chosen"] == max(scores) == scores[record["chosen"]]
        assert pair["score_rejected"] == min(scores) == scores[record["rejected"]]
        assert pair["chosen"][-1]["content"] == record["candidates"][record["chosen"]]["text"]
    too_long = [c for c in candidates if c["dropped"] == "prompt longer than generation.max_prompt_length"]
    assert too_long and all(c["candidates"] == [] for c in too_long)


def test_simpo_train_reads_the_generated_directory(reference, tmp_path):
    run_simpo(["train", "data=generated", f"data.path={reference}", *FAST_TRAIN, "trainer.evaluate=false",
               "trainer.save_model=false", "paths.output_root=out"], tmp_path, env={"OMP_NUM_THREADS": "1"})
    (run,) = run_dirs(tmp_path / "out")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["steps"] == 2 and meta["data"]["kept"] == 16
    assert meta["data"]["fingerprint"].startswith("sha256:")


@pytest.mark.slow  # two CLI runs per mode: ~40 s on 2 shared cores
def test_sigkill_mid_run_then_rerun_matches_an_uninterrupted_run(mode_reference, tmp_path):
    mode, reference = mode_reference
    args = [sys.executable, "-m", "simpo_cli", "generate-pairs", *GEN, *MODES[mode], "run_dir=gen"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    out = tmp_path / "gen"
    try:
        deadline = time.monotonic() + 300
        while not (out / "pairs-00001.jsonl").exists():  # two shards done, more to come
            assert proc.poll() is None, "generate-pairs exited before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _outputs(out)
    assert 0 < sum(name.startswith("pairs-") for name in partial) < SHARDS
    assert json.loads((out / "meta.json").read_text())["status"] == "running"

    run_simpo(["generate-pairs", *GEN, *MODES[mode], "run_dir=gen"], tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert _outputs(out) == _outputs(reference)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["attempts"] == 2 and meta["shards_done_before"] >= 2
    assert meta["prompts"] == 64 and meta["pairs"] == json.loads((reference / "meta.json").read_text())["pairs"]


def test_resume_after_a_kill_between_writes(mode_reference, tmp_path, monkeypatch):
    """What a kill can leave: a shard's candidates written but not its pairs, a temporary file
    from an interrupted write, a missing meta.json. The rerun redoes exactly the unfinished shards
    (in both modes: a shard's batches do not depend on what was done before); a rerun on finished
    output loads no model."""
    with torch_threads(1):
        _resume_after_a_kill_between_writes(*mode_reference, tmp_path, monkeypatch)


def _resume_after_a_kill_between_writes(mode: str, reference: Path, tmp_path: Path, monkeypatch) -> None:
    import simpo_cli.stages.generate_pairs
    from simpo_cli.stages.generate_pairs import run_generate_pairs

    out = tmp_path / "gen"
    shutil.copytree(reference, out)
    (out / "pairs-00003.jsonl").unlink()  # candidates-00003 stays: killed between the two writes
    (out / "pairs-00006.jsonl").unlink()
    (out / "candidates/candidates-00006.jsonl").unlink()
    (out / ".pairs-00006.jsonl.x1y2").write_text('{"half a line')
    (out / "meta.json").unlink()
    cfg = compose([*GEN, *MODES[mode]], "generate-pairs")
    result = run_generate_pairs(cfg, out)
    assert result.shards_done_before == SHARDS - 2 and result.prompts == 64
    assert _outputs(out) == _outputs(reference)
    assert not [p for p in out.rglob(".*") if p.is_file()]

    def no_model(*args, **kwargs):
        raise AssertionError("nothing left to generate: no model should load")

    monkeypatch.setattr(simpo_cli.stages.generate_pairs, "load_scorer", no_model)  # where the stage looks it up
    assert run_generate_pairs(cfg, out).pairs == result.pairs


def test_batch_invariant_resume_with_other_batch_sizes_writes_the_same_bytes(reference_invariant, tmp_path):
    """With generation.batch_invariant=true batch sizes and threads are not part of the settings (a
    run may resume with a smaller batch after running out of memory) because they change no byte:
    three shards redone with 3 prompts per generation batch and 1 or 3 sequences per scoring pass,
    on 2 threads, equal the reference (8 and 16, OMP_NUM_THREADS=1)."""
    with torch_threads(2):
        _rerun_with_other_batch_sizes(reference_invariant, tmp_path)


def test_batched_resume_with_another_batch_size_or_thread_count_is_refused(reference, tmp_path):
    """Batched answers may differ in a near-tie token between batch sizes or thread counts, so a
    resume must use the same ones (one line naming the setting; nothing rewritten)."""
    from simpo_cli.stages.generate_pairs import run_generate_pairs

    out = tmp_path / "gen"
    shutil.copytree(reference, out)
    with torch_threads(1):
        cfg = compose([*GEN, "generation.batch_size=3"], "generate-pairs")
        with pytest.raises(UserError, match=r"generation.batch_size: 8 -> 3"):
            run_generate_pairs(cfg, out)
    with torch_threads(2):
        cfg = compose([*GEN], "generate-pairs")
        with pytest.raises(UserError, match=r"generation.cpu_threads: 1 -> 2"):
            run_generate_pairs(cfg, out)
    assert _outputs(out) == _outputs(reference)


def _rerun_with_other_batch_sizes(reference: Path, tmp_path: Path) -> None:
    from simpo_cli.stages.generate_pairs import run_generate_pairs

    for scorer_batch in (1, 3):
        out = tmp_path / f"gen{scorer_batch}"
        shutil.copytree(reference, out)
        for k in (0, 4, 7):
            for name in (f"pairs-{k:05d}.jsonl", f"candidates/candidates-{k:05d}.jsonl"):
                (out / name).unlink()
        cfg = compose([*GEN, *MODES["invariant"], "generation.batch_size=3", f"scorer.batch_size={scorer_batch}"], "generate-pairs")
        assert run_generate_pairs(cfg, out).shards_done_before == SHARDS - 3
        assert _outputs(out) == _outputs(reference)


def test_rerun_with_other_settings_is_refused(reference, tmp_path):
    from simpo_cli.stages.generate_pairs import run_generate_pairs

    out = tmp_path / "gen"
    shutil.copytree(reference, out)
    cfg = compose([*GEN, "generation.temperature=0.7"], "generate-pairs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference was generated with OMP_NUM_THREADS=1: only the temperature differs
    try:
        with pytest.raises(UserError, match=r"other settings \(generation.temperature: 0.8 -> 0.7\)"):
            run_generate_pairs(cfg, out)
    finally:
        torch.set_num_threads(threads)
    assert _outputs(out) == _outputs(reference)


def test_invalid_settings_are_listed_together():
    from simpo_cli.config.checks import validate_generate_pairs

    cfg = compose(["generation.n=1", "generation.temperature=0", "generation.backend=tgi",
                   "scorer=reward-model"], "generate-pairs")
    with pytest.raises(ConfigError) as err:
        validate_generate_pairs(cfg)
    text = str(err.value)
    for needle in ("generation.backend 'tgi'", "generation.n must be >= 2", "generation.temperature must be > 0",
                   "scorer.name_or_path=<hub id or dir>"):
        assert needle in text


def test_real_model_presets_compose():
    cfg = compose(["model=llama3-instruct", "data=ultrafeedback-prompts", "scorer=armorm"], "generate-pairs")
    assert cfg.generation.n == 5 and cfg.generation.temperature == 0.8
    assert cfg.scorer.trust_remote_code and cfg.data.split == "train_prefs"
    from simpo_cli.run.preflight import preflight

    plan = preflight("generate-pairs", "generate-pairs", ["model=llama3-instruct", "data=ultrafeedback-prompts",
                                                          "scorer=armorm"])
    assert str(plan.run_dir).endswith("generate-pairs/llama3-instruct_ultrafeedback-prompts_armorm_n5_seed42")


def test_help_names_the_scorer_group_and_resume():
    from simpo_cli.cli import stage_help

    text = stage_help("generate-pairs")
    assert "scorer" in text and "tiny" in text and "armorm" in text and "resumes" in text
    assert "simpo train data=<run dir>" in text


def test_a_malformed_shard_line_names_file_and_line(tmp_path):
    from simpo_cli.data.records import read_jsonl_dir

    (tmp_path / "pairs-00000.jsonl").write_text('{"prompt": "a"}\n')
    (tmp_path / "pairs-00001.jsonl").write_text('{"prompt": "b"}\n{"prompt": \n')
    with pytest.raises(UserError, match=r"pairs-00001.jsonl:2: malformed JSON line"):
        read_jsonl_dir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="found none"):
        read_jsonl_dir(tmp_path / "empty")
