"""The ``simpo`` command, generated from the stage table (``simpo_cli/stages/spec.py``) plus
``sweep``, ``report`` and ``validate``. Each stage command forwards its arguments (Hydra overrides,
``-m``, ``--cfg job``, ...) to ``simpo_cli.stages.lifecycle.run_stage``; help texts list the config
groups and options from ``simpo_cli/conf`` and the objectives from their registry.

This module imports no torch: the stage machinery is imported when a command runs, so ``--help``
and argument mistakes answer at once."""

from __future__ import annotations

import importlib

import typer

from simpo_cli.config.schema import GROUP_DIRS, group_options
from simpo_cli.errors import UserError
from simpo_cli.stages.spec import BY_NAME, STAGES


def _groups_text(stage: str) -> str:
    """One line per config group of the stage, with the options in its directory (``GROUP_DIRS``)."""
    dirs = GROUP_DIRS.get(BY_NAME[stage].config, {})
    return "\n".join(f"  {g:<10} {', '.join(group_options(dirs.get(g, g)))}" for g in BY_NAME[stage].groups)


def _objectives_text() -> str:
    objectives = importlib.import_module("simpo_cli.objectives").OBJECTIVES  # torch: only for this help
    return "\n".join(f"  {name:<10} {spec.summary}" for name, spec in sorted(objectives.items()))


SFT_HELP = """Usage: simpo sft [OVERRIDES...] [-m] [--cfg job] [--help]

Supervised fine-tuning on conversations, loss on assistant tokens only (every assistant turn).
The output <run dir>/model (weights + tokenizer with its chat template) starts `simpo train`:
  simpo train model=<run dir>   (or model.name_or_path=<run dir>)

Config groups (group=option):
{groups}

Data: data=alpaca-demo (bundled, default) | data=ultrachat | data=local data.path=FILE
  (messages / Alpaca instruction-input-output / ShareGPT conversations, detected per file).
Held-out loss: data.eval_split, else data.eval_size (fraction or count) carved from data.split.
Recipe: hparams=sft-default (tiny model, CPU) | hparams=sft-paper (lr 2e-5, batch 128, 2048 tokens);
  hparams.packing=true for padding-free packing. A tokenizer without a chat template gets
  default_chat_template (zephyr, a .jinja file or a Jinja string), saved with the model.
Paper's Base setting: simpo sft model=llama3-base data=ultrachat hparams=sft-paper

Options:
  -m, --multirun        run a sweep: simpo sft -m hparams.learning_rate=1e-5,2e-5
  --cfg job             print the composed config and exit
Outputs go to outputs/sft/<date>/<time>/ (set paths.output_root or hydra.run.dir).
"""


EVAL_HELP = """
simpo eval:
  simpo eval model=<train run dir>          policy = <run>/model, reference = the run's start model;
                                            model/data/objective/hparams come from the run's config
  simpo eval model=<dir> data.path=heldout.jsonl data.max_samples=null   held-out pairs from a file
  simpo eval model=llama3-instruct model.name_or_path=/path data=local data.path=pairs.jsonl
  eval.benchmarks=[alpaca_eval,arena_hard,mt_bench]   eval.limit=N   eval.max_new_tokens=N
  eval.pairs=false   reference.enabled=false   reference.name_or_path=/path/to/sft
  judge.reward_model=/path/to/rm judge.baseline=/path/to/model_outputs.json   (local win rate)
  simpo eval model=<train run dir> eval.pairs=false eval.benchmarks=[ifeval]   IFEval scored here: four
                                            metrics with 95% intervals, before -> after with paired intervals
Outputs: eval.json, report.md, pairs.jsonl, margins.png, loglik_vs_length.png and the answer files,
in <run>/eval/<date>/<time>/ (without a run: <paths.output_root>/eval/<date>/<time>/). The run's saved
config.yaml is the base of the composition; the command line applies on top.
"""


RUN_HELP = """Usage: simpo run experiment=<name> [OVERRIDES...] [-m] [--cfg job] [--help]

Run an experiment: the chain of stages declared in conf/experiment/<name>.yaml, each stage with its
own overrides, hand-offs by reference (model: from sft | from train, data: from generate-pairs),
`rounds: k` blocks repeating generate-pairs -> train from the previous policy. Every stage's config
is checked before the first one starts. Each stage runs as `simpo <stage> ... run_dir=<dir>` into
<experiment dir>/NN-<stage>/; <experiment dir>/experiment.json records the stages, their
directories, status and headline metrics. Rerunning the same command (after kill -9 too) skips the
completed stages and resumes the interrupted one.

Experiments: {experiments}
Overrides: the knobs an experiment declares at its top level, e.g. objective=dpo learning_rate=1e-5;
  run_dir=<dir> (default <paths.output_root>/run/<name>).
  -m, --multirun        sweep experiments: simpo run -m experiment=<name> objective=simpo,dpo
                        then: simpo report <sweep dir> --metric ifeval/prompt_loose
"""


def stage_help(stage: str) -> str:
    if stage == "run":
        return RUN_HELP.format(experiments=", ".join(group_options("experiment")))
    if stage == "sft":
        return SFT_HELP.format(groups=_groups_text("sft"))
    if stage == "generate-pairs":
        return f"""Usage: simpo generate-pairs [OVERRIDES...] [--cfg job] [--help]

Sample generation.n responses per prompt with the model, score them with the scorer, keep the best
as chosen and the worst as rejected (the paper's on-policy Instruct data). Rerunning the same
command resumes an interrupted run (kill -9 included) without losing or repeating a prompt.

Config groups (group=option):
{_groups_text("generate-pairs")}

Settings: generation.n=5 generation.temperature=0.8 generation.top_p=1.0 generation.top_k=0
generation.max_new_tokens=1024 generation.max_prompt_length=1800 generation.batch_size=8
generation.shard_size=128 generation.backend=transformers|vllm seed=42 scorer.batch_size=8
run_dir=<dir> (default outputs/generate-pairs/<model>_<data>_<scorer>_n<n>_seed<seed>; rerun to resume)
resume=auto (default) | resume=never (refuse a directory with shards) overwrite=true (start again) progress_bar=false

Examples:
  simpo generate-pairs data.max_samples=64 generation.max_new_tokens=32      (tiny model, CPU)
  simpo generate-pairs model=llama3-instruct data=ultrafeedback-prompts scorer=armorm \\
      generation.batch_size=64 generation.max_new_tokens=2048
  simpo generate-pairs data=ifeval-demo-prompts scorer=ifeval scorer.mode=strict   (verifiable reward)
  simpo generate-pairs scorer=function scorer.function=my_pkg.rewards:reward_fn    (a TRL reward function)
Then: simpo train data=<run dir>   (= simpo train data=generated data.path=<run dir>)
"""
    text = f"""Usage: simpo {stage} [OVERRIDES...] [-m] [--cfg job] [--help]

Config groups (group=option):
{_groups_text(stage)}

Objectives:
{_objectives_text()}

Overrides use Hydra syntax: objective=simpo model=llama3-instruct hparams=llama3-instruct
objective.beta=2.5 trainer.max_steps=10 data=local data.path=pairs.jsonl
  -m, --multirun        run a sweep: simpo {stage} -m objective.beta=2.0,2.5 objective.gamma=0.5,1.0
                        or a sweep file: -m +sweep=simpo_grid (sweeps/); then simpo report <sweep dir>
  --cfg job             print the composed config and exit
  --info                show Hydra's config search path and defaults tree
Outputs go to outputs/{stage}/<date>/<time>/ (set paths.output_root or hydra.run.dir).
"""
    return text + EVAL_HELP if stage == "eval" else text


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"simpo: error: {message}", err=True)
    raise SystemExit(code)


def _lifecycle():
    """The stage machinery (torch, transformers, Hydra's job runner), imported when a command runs."""
    return importlib.import_module("simpo_cli.stages.lifecycle")


app = typer.Typer(
    help="simpo-cli: declarative preference-optimisation runs (SimPO and its baselines).",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
)
STAGE = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.callback(epilog="\b\nGroups and options of `simpo train`:\n" + _groups_text("train")
              + "\n\nRun `simpo train --help` for the objectives and override syntax.")
def _root() -> None:
    """simpo-cli: declarative preference-optimisation runs (SimPO and its baselines)."""


def _stage_command(name: str):
    def command(ctx: typer.Context) -> None:
        if {"--help", "-h"} & set(ctx.args):
            typer.echo(stage_help(name))
            raise typer.Exit()
        _lifecycle().run_stage(name, ctx.args)

    return command


for _spec in STAGES:
    app.command(_spec.name, help=_spec.summary, context_settings=STAGE, add_help_option=False)(
        _stage_command(_spec.name))


@app.command(context_settings=STAGE, add_help_option=False)
def sweep(ctx: typer.Context) -> None:
    """Run a sweep file: simpo sweep NAME [OVERRIDES...] = simpo train -m +sweep=NAME [OVERRIDES...]."""
    if not ctx.args or {"--help", "-h"} & set(ctx.args) or ctx.args[0].startswith("-") or "=" in ctx.args[0]:
        typer.echo("Usage: simpo sweep NAME [OVERRIDES...]   (= simpo train -m +sweep=NAME [OVERRIDES...])\n\n"
                   f"Sweeps (conf/sweep/*.yaml): {', '.join(group_options('sweep'))}\n"
                   "Any axis can be overridden: simpo sweep simpo_grid objective.beta=2.0,2.5\n"
                   "Slurm: hydra/launcher=slurm hydra.launcher.partition=gpu; report: simpo report <sweep dir>")
        raise typer.Exit(0 if ctx.args and {"--help", "-h"} & set(ctx.args) else 2)
    name, *rest = ctx.args
    if name not in group_options("sweep"):
        _fail(f"unknown sweep '{name}'; choose from: {', '.join(group_options('sweep'))}")
    _lifecycle().run_stage("train", ["-m", f"+sweep={name}", *rest])


@app.command()
def report(
    sweep_dir: str = typer.Argument(..., help="The sweep directory (hydra.sweep.dir of the multirun)."),
    metric: str = typer.Option("rewards/accuracies", help="Sort and plot by this metric: a pair metric "
                               "after training (rewards/accuracies, rewards/margins, loss), final_loss, "
                               "train/<name> (the last training log), or ifeval/<metric> (the job's latest "
                               "simpo eval with IFEval: ifeval/prompt_loose, prompt_strict, instruction_loose, "
                               "instruction_strict)."),
    mode: str = typer.Option("auto", help="max | min | auto (a loss is minimised, else maximised)."),
    out: str = typer.Option(None, help="Output directory (default: <sweep_dir>/report)."),
) -> None:
    """Table (markdown + CSV), plots and best override line of a sweep: simpo report <sweep dir>."""
    try:
        report_module = importlib.import_module("simpo_cli.sweeps.report")  # matplotlib, numpy: only here
        result = report_module.write_report(sweep_dir, metric=metric, mode=mode, out_dir=out)
    except UserError as e:
        _fail(str(e), e.exit_code)
    failed = [j for j in result.jobs if j.status != "completed"]
    typer.echo(f"{len(result.jobs)} jobs: {len(result.jobs) - len(failed)} completed, {len(failed)} failed "
               f"or unfinished; report: {result.out_dir / 'report.md'}")
    for path in result.files:
        typer.echo(f"  {path}")
    for j in failed:
        typer.echo(f"{j.status}: {j.dir} ({' '.join(j.overrides)}): {j.error or ''}")
    for j in result.jobs:  # which runs drifted (simpo_cli/evaluation/diagnostics.py)
        if j.findings:
            typer.echo(f"findings: {j.dir}: {', '.join(j.findings)}")
    if result.best_line:
        typer.echo(f"best {metric}: {result.ranked[0].metrics[metric]:.4g} ({result.ranked[0].dir})")
        typer.echo(result.best_line)


@app.command(context_settings=STAGE, add_help_option=False)
def validate(ctx: typer.Context) -> None:
    """Check a stage's config and data without loading a model: simpo validate [--stage train]
    [--no-data] [OVERRIDES...]. Exit 0 when valid; otherwise every problem on one line, exit 2."""
    args = list(ctx.args)
    if {"--help", "-h"} & set(args):
        typer.echo("Usage: simpo validate [--stage STAGE] [--no-data] [OVERRIDES...]\n\n"
                   "Composes the stage's config (default: train) with the overrides and runs every "
                   "check a run would run before loading a model: config groups, keys and types, "
                   "hyperparameter ranges, local paths, the output directory, resume=, and (unless "
                   "--no-data; train only) reads and tokenises the data, reporting dropped records.\n"
                   f"Stages: {', '.join(BY_NAME)}")
        raise typer.Exit()
    stage, check_data, overrides = "train", True, []
    it = iter(args)
    for a in it:
        if a == "--no-data":
            check_data = False
        elif a == "--stage":
            stage = next(it, stage)
        elif a.startswith("--stage="):
            stage = a.split("=", 1)[1]
        else:
            overrides.append(a)
    if stage not in BY_NAME:
        _fail(f"unknown stage '{stage}'; choose from: {', '.join(BY_NAME)}")
    _lifecycle().validate(stage, overrides, check_data and stage == "train")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
