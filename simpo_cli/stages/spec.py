"""The table of stages the CLI is generated from: one ``StageSpec`` per stage.

Kept free of torch and transformers (module paths are strings, imported when the stage runs), so
``simpo --help`` and argument errors answer at once. A fifth stage is one stage module, one config
(``conf/<config>.yaml``), one validator (``config/checks.VALIDATORS``) and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str  # the command: simpo <name>
    config: str  # the primary config, conf/<config>.yaml
    groups: tuple[str, ...]  # config groups listed by --help
    summary: str  # one line for `simpo --help`
    module: str  # the stage module; ``run`` is called as run(cfg, run_dir, **kwargs) in the Hydra job
    run: str
    printer: str  # function of simpo_cli.stages.summaries that prints the result
    value: str  # function of simpo_cli.stages.summaries: the number a sweeper optimises
    sweeps: bool = False  # multirun bookkeeping (skip completed jobs, record failures): sweeps/job.py
    distributed: bool = False  # distributed=ddp|fsdp|zero2|zero3 re-launches via accelerate: run/launch.py
    # function of the stage module: cfg -> {role: ModelSource}, the models it loads, resolved in
    # preflight and handed to ``run`` as ``sources=`` (None: the stage loads no model)
    sources: str | None = "model_sources"


STAGES = (
    StageSpec("train", "config", ("model", "data", "objective", "hparams", "logger", "distributed", "adapter"),
              "Preference-optimise a model: simpo train [OVERRIDES...] (see simpo train --help).",
              "simpo_cli.stages.train", "run_train", "print_train", "train_value", sweeps=True, distributed=True),
    StageSpec("sft", "sft", ("model", "data", "hparams", "logger", "adapter"),
              "Supervised fine-tuning, loss on assistant tokens: simpo sft [OVERRIDES...] (see simpo sft --help).",
              "simpo_cli.stages.sft", "run_sft", "print_sft", "sft_value"),
    StageSpec("generate-pairs", "generate-pairs", ("model", "data", "scorer"),
              "Sample, score and pair responses (on-policy data): simpo generate-pairs [OVERRIDES...].",
              "simpo_cli.stages.generate_pairs", "run_generate_pairs", "print_generate_pairs",
              "generate_pairs_value"),
    StageSpec("eval", "eval", ("model", "data", "objective", "hparams"),
              "Evaluate a model: simpo eval model=<train run dir> [OVERRIDES...] (see simpo eval --help).",
              "simpo_cli.stages.eval", "run_eval", "print_eval", "eval_value"),
    # The stages above chained by an experiment (conf/experiment/<name>.yaml): each step is one of
    # their commands, run as a subprocess into the experiment directory (stages/run.py).
    StageSpec("run", "run", ("experiment",),
              "Run an experiment's chain of stages, resumably: simpo run experiment=<name> [OVERRIDES...].",
              "simpo_cli.stages.run", "run_experiment", "print_run", "run_value", sweeps=True, sources=None),
)
BY_NAME = {s.name: s for s in STAGES}
