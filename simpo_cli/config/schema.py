"""Structured-config schemas (Hydra ConfigStore) for every config group.

Each ``conf/<group>/<option>.yaml`` starts with ``defaults: [base_<group>, _self_]`` (objectives:
``/objective_schema/<name>@objective``), so a misspelled key or a wrong type fails at compose
time naming the key, before any model or data is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from simpo_cli.config.recipe_files import CONF_DIR
from simpo_cli.config.recipe_files import options as recipe_options
from simpo_cli.evaluation.diagnostics import DiagnosticsConfig
# A stage whose options of a group live in their own directory: `simpo sft data=ultrachat` picks
# conf/sft_data/ultrachat.yaml (placed at `data`), so each stage lists and accepts only its own.
GROUP_DIRS = {"sft": {"data": "sft_data", "hparams": "sft_hparams"}}


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
    # Variables the chat template sees unless a call passes them (Qwen3: enable_thinking: false).
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)
    # Billions of parameters of a Hub preset: `simpo train` stops without a GPU before downloading.
    params_b: Optional[float] = None
    tiny: Optional[TinyModelConfig] = None


@dataclass
class DataColumns:
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    conversations: str = "conversations"  # ShareGPT-style history
    # SFT records (simpo sft): OpenAI-style message lists, or Alpaca instruction/input/output
    messages: str = "messages"
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"


@dataclass
class DataConfig:
    name: str = MISSING
    # A local JSON/JSONL/Parquet file, ``pkg:<file>`` (bundled in simpo_cli/assets), or a Hub id.
    # null in options that need one from the user (local, generated): unlike ???, null replaces the
    # path of the data set `simpo train` composed before them (recipe or demo).
    path: Optional[str] = MISSING
    format: str = "auto"  # auto | plain | ultrafeedback | sharegpt | implicit (HH-RLHF transcripts)
    split: str = "train"
    eval_split: Optional[str] = None
    columns: DataColumns = field(default_factory=DataColumns)
    chat_template: str = "auto"  # auto (if the tokenizer has one) | always | never
    max_samples: Optional[int] = None
    strict: bool = False  # turn every dropped row into an error
    num_proc: Optional[int] = None
    # What the records are: preference | sft; null = tell from the records. A stage given the
    # other kind stops with one line naming the right command.
    kind: Optional[str] = None
    # Records carved from `split` (seeded) as the held-out set when eval_split is null; < 1 is a
    # fraction, >= 1 a count. simpo train: the pairs of its before/after metrics (at most
    # trainer.eval_pairs of them; 0 = score training pairs instead; see simpo_cli/data/heldout.py).
    eval_size: float = 0.05


@dataclass
class Recipe:
    """What every training stage's recipe sets: optimiser, schedule, batch and sequence length
    (``HParams`` for ``simpo train``, ``SFTHParams`` for ``simpo sft``)."""

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


@dataclass
class HParams(Recipe):
    """The training recipe: the shared one, plus the prompt budget. β and γ are the objective's
    (``objective.beta``, ``objective.gamma``)."""

    max_prompt_length: int = 1800


@dataclass
class SFTHParams(Recipe):
    """The SFT recipe (``simpo sft``): the shared recipe, plus packing."""

    learning_rate: float = 2e-5
    # Padding-free packing: each micro-batch is one row of concatenated conversations whose
    # position_ids restart per conversation, so attention stays within a conversation.
    packing: bool = False


@dataclass
class TrainerConfig:
    max_steps: int = -1  # > 0 overrides num_train_epochs
    logging_steps: int = 5
    save_steps: int = 0  # 0: no intermediate checkpoints
    save_total_limit: Optional[int] = None  # keep only the newest N checkpoints (None: all)
    # Optimizer steps with a non-finite loss/gradient that may be skipped before the run stops.
    nan_skip_budget: int = 0
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    dataloader_num_workers: int = 0
    use_cpu: bool = False
    save_model: bool = True
    evaluate: bool = True  # reward accuracy etc. over the pairs before and after training
    # At most this many pairs are scored before and after training (seeded sample); null = all.
    eval_pairs: Optional[int] = 256
    progress_bar: bool = True
    # Batches of pairs of similar length (transformers' LengthGroupedSampler): less padding. null =
    # on for simpo train unless the objective's loss couples a batch's examples (KTO); see
    # simpo_cli/training/batching.py. simpo sft: null = off.
    group_by_length: Optional[bool] = None
    # One packed row per batch, no padding (position_ids restart per sequence). null = on for
    # flash-attention (varlen kernels) and sdpa (per-sequence calls), off for eager
    # (see simpo_cli/models/packed_attention.py).
    padding_free: Optional[bool] = None


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "simpo-cli"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled; online needs `wandb login`
    tags: list = field(default_factory=list)


@dataclass
class ReferenceConfig:
    """The reference model of objectives that need one (DPO, IPO, R-DPO, KTO); see simpo_cli/training/reference.py."""

    # precompute: score the pairs once before training (cached on disk), no second model while
    # training; live: keep a frozen reference model in memory and score every batch.
    mode: str = "precompute"
    name_or_path: Optional[str] = None  # null = the starting policy


@dataclass
class AdapterConfig:
    """Parameter-efficient fine-tuning with ``peft`` (``conf/adapter/*.yaml``; see
    simpo_cli/models/adapters.py). Field names and defaults are peft's ``LoraConfig``'s, except
    ``target_modules``, which defaults to every linear layer of the decoder (LM head excluded)."""

    name: str = "none"  # none | lora | qlora (4-bit base, bitsandbytes, GPU only)
    r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.0
    target_modules: Any = "all-linear"  # "all-linear", a module name, or a list of names
    modules_to_save: Optional[List[str]] = None  # trained in full and saved with the adapter
    bias: str = "none"  # none | all | lora_only
    # Multiplies hparams.learning_rate: LoRA wants a larger step than full fine-tuning
    # (alignment-handbook's zephyr-7b-beta DPO: 5e-7 full, 5e-6 LoRA/QLoRA; lora-paper sets 10).
    learning_rate_scale: float = 1.0
    # Also save the base with the adapter merged in as <run>/model (the adapter goes to <run>/adapter).
    merge: bool = False
    # qlora: the 4-bit quantisation of the frozen base (bitsandbytes' BitsAndBytesConfig).
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_compute_dtype: str = "bfloat16"
    bnb_4bit_use_double_quant: bool = True


@dataclass
class PathsConfig:
    output_root: str = "outputs"
    cache_dir: str = "${oc.env:SIMPO_CACHE,${oc.env:HOME,.}/.cache/simpo-cli}"


@dataclass
class SweepConfig:
    """Multirun behaviour (``simpo train -m``, ``simpo sweep``); see simpo_cli/sweeps/job.py."""

    # Returned to the sweeper (Optuna optimises it): ``final_loss`` or a pair metric after
    # training (rewards/accuracies, rewards/margins, loss, ...).
    metric: str = "rewards/accuracies"
    # A job whose overrides match a completed run in the sweep directory is not run again.
    skip_completed: bool = True


@dataclass
class DistributedConfig:
    """How many processes run a stage and how the model is sharded across them. Any option but
    ``none`` makes ``simpo <stage>`` re-launch itself through ``accelerate launch`` with
    ``accelerate`` written to ``<run dir>/accelerate.yaml`` (see ``simpo_cli/run/launch.py``)."""

    name: str = "none"  # none | ddp | fsdp | zero2 | zero3
    num_processes: Optional[int] = None  # null: one per visible GPU (1 without a GPU)
    main_process_port: int = 0  # 0: a free port
    # An accelerate config file's keys (as `accelerate config` writes them). mixed_precision and
    # num_processes are filled in from trainer.bf16/fp16 and num_processes at launch.
    accelerate: Optional[Dict[str, Any]] = None


@dataclass
class RecipeInfo:
    """Which recipe composed the run (simpo_cli/recipes/<setting>.yaml; simpo_cli/config/recipes.py)."""

    name: Optional[str] = None  # null: no recipe (the tiny demo, or a model without one)
    published: bool = False  # true: the paper's official training config; false: a generic recipe
    source: Optional[str] = None


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
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    # auto: continue from the newest complete checkpoint of the run directory (run_dir=...), or
    # start fresh if it has none; never/null: start fresh; or a checkpoint directory.
    resume: Optional[str] = None
    sweep: SweepConfig = field(default_factory=SweepConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    recipe: RecipeInfo = field(default_factory=RecipeInfo)
    # Thresholds of the run's findings (likelihood displacement, falling rewards, spikes):
    # simpo_cli/evaluation/diagnostics.py.
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    # The recipe's published objective values, by objective (simpo_cli/recipes/<setting>.yaml), e.g.
    # {simpo: {beta: 2.5, gamma: 1.375}, dpo: {beta: 0.01}}; simpo_cli/config/recipes.py applies the
    # chosen objective's after composition, except the keys set on the command line.
    published: Dict[str, Dict[str, Any]] = field(default_factory=dict)


@dataclass
class SFTConfig:
    stage: str = "sft"
    seed: int = 42
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    hparams: SFTHParams = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    # Chat template for a tokenizer that has none (base models): `zephyr` (built in), a .jinja
    # file or a Jinja string. It is saved with the SFT model's tokenizer.
    default_chat_template: str = "zephyr"
    resume: Optional[str] = None  # as TrainConfig.resume: auto | never/null | a checkpoint directory


@dataclass
class ScorerConfig:
    """How ``simpo generate-pairs`` scores candidates (``conf/scorer/*.yaml``)."""

    name: str = MISSING
    type: str = "reward-model"  # reward-model | pairrm | ifeval | function (simpo_cli/models/verifiable.py)
    mode: str = "loose"  # ifeval: loose | strict, IFEval's two rules for following an instruction
    function: Optional[str] = None  # function: package.module:name, a TRL-style reward function
    # Hub id or local directory; ``null`` (reward-model) builds ``tiny`` from its config instead.
    name_or_path: Optional[str] = None
    tokenizer: Optional[str] = None  # ``null`` = name_or_path; ``pkg:<dir>`` = bundled
    revision: Optional[str] = None
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto
    attn_implementation: Optional[str] = None
    trust_remote_code: bool = False  # RLHFlow/ArmoRM-Llama3-8B-v0.1 ships its own model class
    chat_template: Optional[str] = None  # replaces the reward model tokenizer's template
    batch_size: int = 8  # pairrm: sequences per pass; reward-model scores each prompt's candidates in one pass
    max_length: int = 4096  # prompt + response tokens; longer inputs keep their last tokens
    tiny: Optional[TinyModelConfig] = None


@dataclass
class GenerationSettings:
    """Sampling for ``simpo generate-pairs``: ``n`` responses per prompt (PAPER.md, Instruct setting)."""

    backend: str = "transformers"  # transformers | vllm (optional extra, untested in CI)
    n: int = 5
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 1024
    max_prompt_length: int = 1800  # prompts longer than this (tokens, templated) are dropped and counted
    batch_size: int = 8  # prompts per step, all their n samples decoded together (vllm: per call)
    # true: each prompt decoded on its own on one CPU thread, answers bit-identical whatever batch_size or
    # thread count (slow); false: batched, answers reproducible for a fixed command (models/generate.py)
    batch_invariant: bool = False
    shard_size: int = 128  # prompts per output shard: the unit of atomic writes and of resume
    vllm_gpu_memory_utilization: float = 0.5  # leaves room for the reward model on the same GPU
    vllm_tensor_parallel_size: int = 1


@dataclass
class GeneratePairsConfig:
    stage: str = "generate-pairs"
    seed: int = 42
    model: ModelConfig = MISSING
    data: DataConfig = MISSING  # where the prompts come from
    scorer: ScorerConfig = MISSING
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    overwrite: bool = False  # discard what the run directory holds and start again
    # auto: continue the shards already in the run directory (rerunning the same command resumes);
    # never: refuse a run directory that already holds shards (overwrite=true discards them)
    resume: Optional[str] = "auto"
    progress_bar: bool = True
    paths: PathsConfig = field(default_factory=PathsConfig)


def register_schemas(cs: ConfigStore) -> None:
    """Store the schemas of this module in ``cs`` (idempotent); ``config.store.register_configs``
    stores every stage's."""
    cs.store(name="base_train", node=TrainConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="hparams", name="base_hparams", node=HParams)
    cs.store(name="base_sft", node=SFTConfig)
    cs.store(group="sft_hparams", name="base_sft_hparams", node=SFTHParams)
    cs.store(group="sft_data", name="base_data", node=DataConfig)
    cs.store(group="logger", name="base_logger", node=LoggerConfig)
    cs.store(name="base_generate_pairs", node=GeneratePairsConfig)
    cs.store(group="scorer", name="base_scorer", node=ScorerConfig)
    cs.store(group="distributed", name="base_distributed", node=DistributedConfig)
    cs.store(group="adapter", name="base_adapter", node=AdapterConfig)


def group_options(group: str) -> list[str]:
    """The user-facing options of a config group: its YAML files and the options the recipe files
    make (``config/recipe_files.py``), not the schemas."""
    return sorted({p.stem for p in (CONF_DIR / group).glob("*.yaml")} | set(recipe_options(group)))
