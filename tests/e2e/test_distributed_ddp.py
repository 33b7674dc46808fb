"""Two processes (DDP over gloo, on CPU) take the same first step as one process accumulating two
micro-batches: the global batch is what defines a step, not the number of processes.

Both runs use ``hparams.global_batch_size=4`` with 2 pairs per device, so accumulation is derived:
2 processes x 2 pairs x 1 micro-batch = 1 process x 2 pairs x 2 micro-batches = 4 pairs. They
see the same 4 pairs (accelerate hands rank r the r-th batch of the same seeded permutation that
one process consumes as consecutive micro-batches), so loss, gradient norm and every reduced
``rewards/*`` metric must agree to float rounding.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import FAST_TRAIN, compose, read_jsonl, run_dirs, run_simpo

# Three interpreters (the parent and two ranks) load torch + transformers: ~60-120 s on 2 shared cores.
pytestmark = pytest.mark.slow

STEP = [o for o in FAST_TRAIN if not o.startswith("trainer.max_steps")] + [
    "trainer.max_steps=1", "hparams.global_batch_size=4", "trainer.evaluate=false",
    "trainer.save_model=false"]
COMPARED = ("loss", "grad_norm", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
            "rewards/margins", "logps/chosen", "logps/rejected")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The real CLI, ``distributed=ddp distributed.num_processes=2``: re-launched via accelerate."""
    tmp = tmp_path_factory.mktemp("ddp")
    proc = run_simpo(["train", "distributed=ddp", "distributed.num_processes=2", *STEP,
                      f"paths.output_root={tmp / 'outputs'}"], tmp, env={"OMP_NUM_THREADS": "1"})
    return proc, run_dirs(tmp / "outputs")


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The same step in this process: one process, accumulation derived as 2."""
    from simpo_cli.stages.train import run_train

    tmp = tmp_path_factory.mktemp("single")
    cfg = compose([*STEP, f"paths.cache_dir={tmp / 'cache'}"])
    run_train(cfg, tmp / "run")
    return tmp / "run"


def test_two_processes_match_one_process_with_accumulation(ddp_run, single_run):
    _, dirs = ddp_run
    assert len(dirs) == 1, f"every rank must write to one run directory, got {dirs}"
    ddp, single = read_jsonl(dirs[0] / "metrics.jsonl"), read_jsonl(single_run / "metrics.jsonl")
    ddp_step, single_step = ddp[0], single[0]
    assert ddp_step["step"] == single_step["step"] == 1
    for key in COMPARED:
        assert ddp_step[key] == pytest.approx(single_step[key], rel=1e-5, abs=1e-6), key


def test_run_records_the_batch_plan(ddp_run, single_run):
    _, dirs = ddp_run
    ddp = json.loads((dirs[0] / "meta.json").read_text())
    single = json.loads((single_run / "meta.json").read_text())
    assert ddp["status"] == "completed"
    assert ddp["batch"] == {"per_device_train_batch_size": 2, "world_size": 2,
                            "gradient_accumulation_steps": 1, "global_batch_size": 4}
    assert single["batch"] == {"per_device_train_batch_size": 2, "world_size": 1,
                               "gradient_accumulation_steps": 2, "global_batch_size": 4}
    assert ddp["distributed"] == {"name": "ddp", "type": "MULTI_CPU", "num_processes": 2}
    assert single["distributed"]["num_processes"] == 1


def test_only_the_main_process_writes(ddp_run):
    proc, dirs = ddp_run
    run = dirs[0]
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1], "one metrics line per step, not one per rank"
    assert proc.stdout.count("run directory:") == 1, proc.stdout
    output = proc.stdout + proc.stderr
    assert output.count("pairs kept") == 1 and output.count("pairs per step") == 1, "progress logged by rank 0 only"
    launch = (run / "accelerate.yaml").read_text()
    assert "num_processes: 2" in launch and "use_cpu: true" in launch
    assert (run / "config.yaml").exists() and (run / ".hydra" / "overrides.yaml").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".hydra"], \
        "no temporary files left behind"
