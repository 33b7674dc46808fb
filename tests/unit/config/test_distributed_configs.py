"""The shipped ``distributed=`` options. What is tested is what the project writes: the accelerate
config file (it must load into accelerate's own config class, which rejects unknown keys, and carry
the sharding we promise) and the Trainer's batch arithmetic that DeepSpeed's "auto" keys take.
No GPU, no deepspeed, and only accelerate's public API: accelerate's launcher and plugin objects
are accelerate's to test."""

from __future__ import annotations

import pytest

from simpo_cli.run.launch import accelerate_config, launch_command, launches, write_accelerate_config
from tests.helpers import compose

PAPER = ["model=llama3-instruct", "hparams=llama3-instruct", "trainer.bf16=true",
         "distributed.num_processes=8"]  # the paper's 8 x H100 recipe, global batch 128


def _loaded(option: str, tmp_path, extra: list[str] = ()):
    """Our written accelerate config for ``distributed=<option>``, read back by accelerate."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = tmp_path / "accelerate.yaml"
    write_accelerate_config(compose([f"distributed={option}", *PAPER, *extra]), path)
    return load_config_from_file(str(path))  # rejects unknown keys


@pytest.mark.parametrize("option, distributed_type", [
    ("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")])
def test_option_loads_into_accelerate_config(option, distributed_type, tmp_path):
    loaded = _loaded(option, tmp_path)
    assert loaded.distributed_type.value == distributed_type
    assert loaded.num_processes == 8
    assert str(loaded.mixed_precision) == "bf16"  # from trainer.bf16: one source of truth
    assert loaded.main_process_port == 0  # a free port, so two runs on one machine do not collide


def test_mixed_precision_follows_trainer():
    assert accelerate_config(compose(["distributed=zero3", "trainer.fp16=true"]))["mixed_precision"] == "fp16"
    assert accelerate_config(compose(["distributed=zero3"]))["mixed_precision"] == "no"


def test_none_has_no_launch():
    from simpo_cli.errors import UserError

    with pytest.raises(UserError, match="distributed=none has no accelerate config"):
        accelerate_config(compose([]))


def test_fsdp_is_full_shard_per_decoder_layer(tmp_path):
    fsdp = _loaded("fsdp", tmp_path).fsdp_config
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # <run>/model is a plain checkpoint
    # TRANSFORMER_BASED_WRAP with no class list wraps the classes the model declares unsplittable
    # (its decoder layers, whatever the architecture): one FSDP unit per decoder layer.
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "fsdp_transformer_layer_cls_to_wrap" not in fsdp
    assert fsdp["fsdp_cpu_ram_efficient_loading"] and fsdp["fsdp_sync_module_states"]
    assert fsdp["fsdp_use_orig_params"]
    assert not fsdp["fsdp_offload_params"] and not fsdp["fsdp_activation_checkpointing"]


@pytest.mark.parametrize("option, stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_batch_is_the_global_batch(option, stage, tmp_path):
    """No DeepSpeed JSON of ours: accelerate builds DeepSpeed's config from these keys and leaves the
    batch, accumulation and clipping keys "auto", which transformers fills from TrainingArguments.
    So DeepSpeed's batch is the Trainer's: per-device batch x accumulation x processes."""
    from simpo_cli.run.rundir import RunDir
    from simpo_cli.training.common import gradient_accumulation, training_arguments

    ds = _loaded(option, tmp_path).deepspeed_config
    assert ds["zero_stage"] == stage
    assert "deepspeed_config_file" not in ds  # a JSON file would be a second source of truth
    assert not {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"} & set(ds)
    if stage == 3:
        assert ds["zero3_init_flag"]  # from_pretrained creates the model already partitioned
        assert ds["zero3_save_16bit_model"]  # <run>/model is a plain checkpoint

    cfg = compose([f"distributed={option}", *PAPER])
    args = training_arguments(cfg, RunDir(tmp_path / "run", main=False))
    accumulation = gradient_accumulation(cfg.hparams, 8)
    assert args.per_device_train_batch_size == 2 and accumulation == 8  # 128 / (2 x 8)
    assert args.per_device_train_batch_size * accumulation * 8 == cfg.hparams.global_batch_size == 128
    assert args.max_grad_norm == cfg.hparams.max_grad_norm


def test_precheck_rejects_indivisible_global_batch_before_launch(monkeypatch):
    """hparams.global_batch_size must divide by per-device batch x processes; said once, in the
    parent, before any process starts: 128 / (2 x 3) does not divide."""
    from simpo_cli.stages.lifecycle import precheck_train
    from simpo_cli.errors import UserError

    with pytest.raises(UserError, match=r"global_batch_size \(128\) is not divisible by "
                                        r"per_device_train_batch_size x processes \(6\)"):
        precheck_train(compose(["distributed=ddp", "distributed.num_processes=3", "hparams=llama3-instruct"]))


def test_launches_relaunches_outside_a_launcher_only(monkeypatch):
    import simpo_cli.run.launch as dist

    calls = []
    monkeypatch.setattr(dist, "relaunch", lambda stage, cfg: calls.append(("relaunch", stage)))
    task = launches("train", precheck=lambda cfg: calls.append(("precheck",)))(lambda cfg: calls.append(("task",)))
    for var in ("LOCAL_RANK", dist.LAUNCHED_ENV):
        monkeypatch.delenv(var, raising=False)

    monkeypatch.setattr(dist, "check_environment", lambda cfg: calls.append(("check",)))
    task(compose([]))  # distributed=none: in place
    task(compose(["distributed=ddp"]))  # outside a launcher: check, then re-launch
    monkeypatch.setenv("LOCAL_RANK", "0")  # inside torchrun / accelerate launch: in place
    task(compose(["distributed=ddp"]))
    assert calls == [("task",), ("check",), ("precheck",), ("relaunch", "train"), ("task",)]


def test_launch_command_pins_the_run_directory(tmp_path):
    """Every process gets the parent's run directory: ${now:...} would differ between processes."""
    cmd = launch_command("train", tmp_path / "accelerate.yaml", ["distributed=ddp", "objective.beta=2.5"],
                         tmp_path / "run 1")
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("-m", 3):][:3] == ["-m", "simpo_cli", "train"]
    assert f"hydra.run.dir='{tmp_path / 'run 1'}'" in cmd
    assert "hydra.output_subdir=null" in cmd and "objective.beta=2.5" in cmd


def test_sharded_options_refuse_cpu_and_missing_deepspeed(monkeypatch):
    import torch

    from simpo_cli import optional
    from simpo_cli.run.launch import check_environment
    from simpo_cli.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_environment(compose(["distributed=ddp"]))  # gloo on CPU is fine
    for option in ("fsdp", "zero2", "zero3"):
        with pytest.raises(UserError, match=f"distributed={option} needs CUDA GPUs"):
            check_environment(compose([f"distributed={option}"]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_environment(compose(["distributed=fsdp"]))
    with pytest.raises(UserError, match="needs CUDA GPUs"):
        check_environment(compose(["distributed=fsdp", "trainer.use_cpu=true"]))
    monkeypatch.setattr(optional, "installed", lambda name: name != "deepspeed")
    with pytest.raises(UserError, match=r"distributed=zero3 needs DeepSpeed: pip install 'simpo-cli\[deepspeed\]'"):
        check_environment(compose(["distributed=zero3"]))
