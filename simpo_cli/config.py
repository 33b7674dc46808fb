"""Structured-config schemas (Hydra ConfigStore) for every config group.

Each ``conf/<group>/<option>.yaml`` starts with ``defaults: [base_<group>, _self_]`` (objectives:
``/objective/schema_<name>@objective``), so a misspelled key or a wrong type fails at compose
time naming the key, before any model or data is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

CONF_DIR = Path(__file__).parent / "conf"


@dataclass
class TinyModelConfig:
    """A small model built from a config in code (no Hub): seeded, so every build is identical."""

    architecture: str = "llama"  # llama | mistral | qwen2 | gemma2
    hidden_size: int = 64
    intermediate_size: int = 172
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    # Hub id or local directory. ``null`` builds ``tiny`` from its config instead.
    name_or_path: Optional[str] = None
    # Tokenizer location; ``null`` = same as name_or_path. ``pkg:<dir>`` = a tokenizer bundled in
    # simpo_cli/assets.
    tokenizer: Optional[str] = None
    revision: Optional[str] = None
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto
    attn_implementation: Optional[str] = None  # eager | sdpa | flash_attention_2
    trust_remote_code: bool = False
    # A Jinja chat template that replaces the tokenizer's own (e.g. the SimPO repo's llama3 one).
    chat_template: Optional[str] = None
    tiny: Optional[TinyModelConfig] = None


@dataclass
class DataColumns:
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    conversations: str = "conversations"  # ShareGPT-style history


@dataclass
class DataConfig:
    name: str = MISSING
    # A local JSON/JSONL/Parquet file, ``pkg:<file>`` (bundled in simpo_cli/assets), or a Hub id.
    path: str = MISSING
    format: str = "auto"  # auto | plain | ultrafeedback | sharegpt
    split: str = "train"
    eval_split: Optional[str] = None
    columns: DataColumns = field(default_factory=DataColumns)
    chat_template: str = "auto"  # auto (if the tokenizer has one) | always | never
    max_samples: Optional[int] = None
    strict: bool = False  # turn every dropped row into an error
    num_proc: Optional[int] = None


@dataclass
class HParams:
    """The training recipe. ``beta`` (and ``gamma`` for SimPO) default to the chosen objective's
    paper values (its YAML sets them); a preset or a command-line override replaces them."""

    beta: float = MISSING
    gamma: Optional[float] = MISSING
    # γ/β as in the official SimPO configs; when set it takes precedence: γ = ratio × β.
    gamma_beta_ratio: Optional[float] = None
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    # When set, accumulation = global_batch_size / (per_device_train_batch_size x world size).
    global_batch_size: Optional[int] = None
    max_length: int = 2048
    max_prompt_length: int = 1800


@dataclass
class TrainerConfig:
    max_steps: int = -1  # > 0 overrides num_train_epochs
    logging_steps: int = 5
    save_steps: int = 0  # 0: no intermediate checkpoints
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    dataloader_num_workers: int = 0
    use_cpu: bool = False
    save_model: bool = True
    evaluate: bool = True  # reward accuracy etc. over the pairs before and after training
    progress_bar: bool = True
    # Batches of pairs of similar length (transformers' LengthGroupedSampler): less padding.
    group_by_length: bool = False
    # One packed row per batch, no padding (position_ids restart per sequence). null = on only
    # for flash-attention, where it runs as varlen kernels (see simpo_cli/logps.py).
    padding_free: Optional[bool] = None


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "simpo-cli"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled; online needs `wandb login`
    tags: list = field(default_factory=list)


@dataclass
class PathsConfig:
    output_root: str = "outputs"
    cache_dir: str = "${oc.env:SIMPO_CACHE,${oc.env:HOME,.}/.cache/simpo-cli}"


@dataclass
class TrainConfig:
    stage: str = "train"
    seed: int = 42
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    objective: Any = MISSING
    hparams: HParams = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent)."""
    from simpo_cli.objectives import OBJECTIVES

    cs = ConfigStore.instance()
    cs.store(name="base_train", node=TrainConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="hparams", name="base_hparams", node=HParams)
    cs.store(group="logger", name="base_logger", node=LoggerConfig)
    for name, spec in OBJECTIVES.items():
        cs.store(group="objective", name=f"schema_{name}", node=spec.params)


def group_options(group: str) -> list[str]:
    """The user-facing options of a config group (its YAML files, not the schemas)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
