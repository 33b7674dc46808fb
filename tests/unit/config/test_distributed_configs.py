"""The shipped ``distributed=`` options, checked with accelerate's own code (no GPU, no deepspeed):
the written accelerate config loads into accelerate's config class, accelerate's launcher turns it
into the environment the training processes read, and the FSDP / DeepSpeed plugins built from that
environment have the sharding we promise. For DeepSpeed, the batch keys stay "auto" and
transformers' own ``trainer_config_process`` fills them from our TrainingArguments, so the
DeepSpeed batch always equals hparams.global_batch_size."""

from __future__ import annotations

import types

import pytest

from simpo_cli.run.launch import accelerate_config, launch_command, launches, write_accelerate_config
from tests.helpers import compose

PAPER = ["model=llama3-instruct", "hparams=llama3-instruct", "trainer.bf16=true",
         "distributed.num_processes=8"]  # the paper's 8 x H100 recipe, global batch 128


def _launch_env(cfg, tmp_path):
    """What ``accelerate launch --config_file <ours>`` hands the training processes: (args, env)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = tmp_path / "accelerate.yaml"
    write_accelerate_config(cfg, path)
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "simpo_cli", "train"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


@pytest.mark.parametrize("option, distributed_type", [
    ("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero2", "DEEPSPEED"), ("zero3", "DEEPSPEED")])
def test_option_loads_into_accelerate_config(option, distributed_type, tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = compose([f"distributed={option}", *PAPER])
    path = tmp_path / "accelerate.yaml"
    write_accelerate_config(cfg, path)
    loaded = load_config_from_file(str(path))  # rejects unknown keys
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


def test_fsdp_is_full_shard_per_decoder_layer(tmp_path, monkeypatch, tiny_model):
    import accelerate.utils.dataclasses as acc_dataclasses
    import torch
    from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment
    from torch.distributed.fsdp import ShardingStrategy, StateDictType

    # sync_module_states asks for the current GPU; pretend there is one (the plugin only records it).
    monkeypatch.setattr(acc_dataclasses, "is_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    args, env = _launch_env(compose(["distributed=fsdp", *PAPER]), tmp_path)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert args.nproc_per_node == "8"
    with patch_environment(**{k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT  # <run>/model is a plain checkpoint
    plugin.set_auto_wrap_policy(tiny_model)  # what accelerate does when it wraps the model
    wrapped = plugin.auto_wrap_policy.keywords["transformer_layer_cls"]
    assert {cls.__name__ for cls in wrapped} == {"LlamaDecoderLayer"}  # one FSDP unit per decoder layer
    assert plugin.cpu_ram_efficient_loading and plugin.sync_module_states
    assert plugin.use_orig_params


class _TrainerFill:
    """transformers' ``HfTrainerDeepSpeedConfig`` filling code on accelerate's config object:
    the class itself needs deepspeed installed, its methods do not."""

    def __new__(cls, ds_config):
        from accelerate.utils.deepspeed import HfDeepSpeedConfig
        from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig as T

        filler = type("Filler", (HfDeepSpeedConfig,), {
            "fill_match": T.fill_match, "fill_only": T.fill_only,
            "trainer_config_process": T.trainer_config_process})(ds_config)
        filler.mismatches, filler._dtype = [], None
        return filler


@pytest.mark.parametrize("option, stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_batch_is_the_global_batch(option, stage, tmp_path):
    from accelerate.utils import DeepSpeedPlugin, patch_environment

    from simpo_cli.run.rundir import RunDir
    from simpo_cli.training.common import gradient_accumulation, training_arguments

    cfg = compose([f"distributed={option}", *PAPER])
    _, env = _launch_env(cfg, tmp_path)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    with patch_environment(**{k: v for k, v in env.items() if k.startswith("ACCELERATE_")}):
        plugin = DeepSpeedPlugin()
    ds = plugin.deepspeed_config
    assert ds["zero_optimization"]["stage"] == stage
    # No second source of truth: DeepSpeed's batch, accumulation and clipping come from the Trainer.
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert ds[key] == "auto", key
    if stage == 3:
        assert plugin.zero3_init_flag  # from_pretrained creates the model already partitioned
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]

    args = training_arguments(compose(["hparams=llama3-instruct"]), RunDir(tmp_path / "run", main=False))
    world = 8
    on_8 = types.SimpleNamespace(**{**vars(args), "world_size": world,
                                    "gradient_accumulation_steps": gradient_accumulation(cfg.hparams, world)})
    filled = _TrainerFill(ds)
    filled.trainer_config_process(on_8)
    assert not filled.mismatches
    assert filled.config["train_micro_batch_size_per_gpu"] == 2
    assert filled.config["gradient_accumulation_steps"] == 8  # 128 / (2 x 8)
    assert filled.config["train_batch_size"] == cfg.hparams.global_batch_size == 128
    assert filled.config["gradient_clipping"] == cfg.hparams.max_grad_norm


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
    cmd = launch_command("train", tmp_path / "accelerate.yaml", ["distributed=ddp", "hparams.beta=2.5"],
                         tmp_path / "run 1")
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("-m", 3):][:3] == ["-m", "simpo_cli", "train"]
    assert f"hydra.run.dir='{tmp_path / 'run 1'}'" in cmd
    assert "hydra.output_subdir=null" in cmd and "hparams.beta=2.5" in cmd


def test_sharded_options_refuse_cpu_and_missing_deepspeed(monkeypatch):
    import importlib.util

    import torch

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
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "deepspeed" else real_find_spec(name, *a))
    with pytest.raises(UserError, match=r"distributed=zero3 needs DeepSpeed: pip install 'simpo-cli\[deepspeed\]'"):
        check_environment(compose(["distributed=zero3"]))
