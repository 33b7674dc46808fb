"""Structured-config schemas of ``simpo eval`` (stored in Hydra's ConfigStore by ``register_configs``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from simpo_cli.config.schema import DataConfig, HParams, ModelConfig, PathsConfig
from simpo_cli.evaluation.diagnostics import DiagnosticsConfig

BENCHMARK_FORMATS = ("alpaca_eval", "arena_hard", "ifeval", "mt_bench")
# The group option ``simpo eval model=<train run>`` makes of each of the run's saved sections
# (simpo_cli/run/train_run.py).
TRAIN_RUN_OPTION = "train-run"


@dataclass
class BenchmarkConfig:
    """One prompt set and its decoding preset (``benchmarks:`` in ``conf/eval.yaml``).

    Temperature of a prompt, first match wins: ``temperature`` (when set), the prompt's category in
    ``category_temperature`` (MT-Bench), the model family in ``families`` (``model.name`` starts with
    the key; AlpacaEval), else ``default_temperature``. 0 means greedy decoding."""

    name: str = MISSING
    format: str = MISSING  # alpaca_eval | arena_hard | mt_bench: which tool's file to write; ifeval: scored here
    prompts: str = MISSING  # pkg:benchmarks/... (bundled) or a local file in the same layout
    temperature: Optional[float] = None
    top_p: float = 1.0
    max_new_tokens: int = 1024
    default_temperature: float = 0.7
    category_temperature: Dict[str, float] = field(default_factory=dict)
    # family prefix -> {temperature, max_new_tokens}
    families: Dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalOptions:
    pairs: bool = True  # held-out preference metrics (reward accuracy, margins, log-likelihood, KL)
    split: Optional[str] = None  # pairs split; null = data.eval_split, else data.split
    histogram_bins: int = 20
    logps_path: str = "auto"  # auto | chunked | plain (see simpo_cli.training.logps)
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:1 ...
    benchmarks: List[str] = field(default_factory=lambda: ["alpaca_eval", "arena_hard", "mt_bench"])
    limit: Optional[int] = None  # first N prompts of each benchmark (smoke runs)
    max_new_tokens: Optional[int] = None  # caps every benchmark's preset
    generation_batch_size: int = 32  # answers decoded together (length-sorted); see batch_invariant
    # true: each answer decoded on its own on one CPU thread, bit-identical whatever generation_batch_size
    # or thread count (slow); false: batched, reproducible for a fixed command (models/generate.py)
    batch_invariant: bool = False
    model_id: Optional[str] = None  # name in the answer files; null = <model.name>-<objective.name>
    stop_token_ids: List[int] = field(default_factory=list)  # besides the tokenizer's EOS


@dataclass
class EvalReferenceConfig:
    """The reference for KL (and for objectives whose reward needs one). ``name_or_path: null`` = the
    run's starting model (``simpo eval model=<train run>``); without a run and without a path: no KL."""

    enabled: bool = True
    name_or_path: Optional[str] = None


@dataclass
class JudgeConfig:
    """Optional local judge: a reward model (any AutoModelForSequenceClassification, one logit)
    scores this model's answers and a baseline's on the same prompts."""

    reward_model: Optional[str] = None  # local dir or Hub id; null = no judge
    baseline: Optional[str] = None  # answers file: AlpacaEval model_outputs.json or a model_answer .jsonl
    benchmark: str = "alpaca_eval"  # which of eval.benchmarks to judge
    max_length: int = 2048
    n_resamples: int = 1000
    confidence: float = 0.95


@dataclass
class EvalConfig:
    stage: str = "eval"
    seed: int = 42
    # The `simpo train` run whose saved config is the base (set by model=<train run>, with its
    # sections as the groups' train-run options); its starting model is the reference.
    source_run: Optional[str] = None
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    objective: Any = MISSING
    hparams: HParams = MISSING
    reference: EvalReferenceConfig = field(default_factory=EvalReferenceConfig)
    eval: EvalOptions = field(default_factory=EvalOptions)
    benchmarks: Dict[str, BenchmarkConfig] = field(default_factory=dict)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # Thresholds of the answer findings (loops, length): simpo_cli/evaluation/diagnostics.py.
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)


def register_eval_configs(cs) -> None:
    cs.store(name="base_eval", node=EvalConfig)
