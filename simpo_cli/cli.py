"""The ``simpo`` command. Each stage command forwards its arguments (Hydra overrides, ``-m``,
``--cfg job``, ...) to a ``@hydra.main`` entry point composed from ``simpo_cli/conf``; the stage
function itself lives in ``simpo_cli.stages`` and knows nothing of the CLI."""

from __future__ import annotations

import os
import sys
from typing import Callable

import typer

from simpo_cli.config import group_options
from simpo_cli.sweep import sweep_job

STAGE_GROUPS = {"train": ("model", "data", "objective", "hparams", "logger")}


def _groups_text(stage: str) -> str:
    lines = [f"  {g:<10} {', '.join(group_options(g))}" for g in STAGE_GROUPS[stage]]
    return "\n".join(lines)


def _objectives_text() -> str:
    from simpo_cli.objectives import OBJECTIVES

    return "\n".join(f"  {name:<10} {spec.summary}" for name, spec in sorted(OBJECTIVES.items()))


def stage_help(stage: str) -> str:
    return f"""Usage: simpo {stage} [OVERRIDES...] [-m] [--cfg job] [--help]

Config groups (group=option):
{_groups_text(stage)}

Objectives:
{_objectives_text()}

Overrides use Hydra syntax: objective=simpo model=llama3-instruct hparams=llama3-instruct
hparams.beta=2.5 trainer.max_steps=10 data=local data.path=pairs.jsonl
  -m, --multirun        run a sweep: simpo {stage} -m hparams.beta=2.0,2.5 hparams.gamma=0.5,1.0
                        or a sweep file: -m +sweep=simpo_grid (sweeps/); then simpo report <sweep dir>
  --cfg job             print the composed config and exit
  --info                show Hydra's config search path and defaults tree
Outputs go to outputs/{stage}/<date>/<time>/ (set paths.output_root or hydra.run.dir).
"""


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"simpo: error: {message}", err=True)
    raise SystemExit(code)


def _run_hydra(stage: str, config_name: str, args: list[str], task: Callable) -> None:
    import hydra

    from simpo_cli.config import CONF_DIR, register_configs

    register_configs()
    saved = sys.argv
    sys.argv = [f"simpo-{stage}", *args]
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)()
    finally:
        sys.argv = saved


def _guard(fn: Callable) -> Callable:
    """Turn user mistakes into one line and exit code 2 (SIMPO_DEBUG=1 re-raises)."""

    def wrapped(cfg):
        from simpo_cli.errors import UserError

        try:
            return fn(cfg)
        except UserError as e:
            if os.environ.get("SIMPO_DEBUG"):
                raise
            _fail(str(e), e.exit_code)

    return wrapped


def _print_train_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="simpo train", show_header=False)
    table.add_row("steps", str(result.steps))
    if result.final_loss is not None:
        table.add_row("final loss", f"{result.final_loss:.4f}")
    for key in ("rewards/accuracies", "rewards/margins", "loss"):
        if key in result.after:
            table.add_row(f"{key} ({result.pairs_split} pairs)",
                          f"{result.before[key]:.4f} -> {result.after[key]:.4f}")
    Console().print(table)
    # Plain line so the path is never wrapped or cut by the table's width.
    print(f"run directory: {result.run_dir}")


@_guard
@sweep_job  # multirun: skip completed jobs, record a failed one and go on (simpo_cli/sweep.py)
def _train_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from simpo_cli.stages.train import run_train
    from simpo_cli.sweep import metric_value

    result = run_train(cfg, HydraConfig.get().runtime.output_dir)
    _print_train_summary(result)
    return metric_value(result, cfg.sweep.metric)  # what a sweeper (Optuna) optimises


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


@app.command(context_settings=STAGE, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Preference-optimise a model: simpo train [OVERRIDES...] (see simpo train --help)."""
    if {"--help", "-h"} & set(ctx.args):
        typer.echo(stage_help("train"))
        raise typer.Exit()
    _run_hydra("train", "config", ctx.args, _train_task)
    _exit_if_sweep_failed()


def _exit_if_sweep_failed() -> None:
    from simpo_cli.sweep import failed_jobs

    failed = failed_jobs()
    if failed:
        _fail(f"{len(failed)} sweep job(s) failed: "
              + ", ".join(f"#{j.get('job')} ({' '.join(j.get('overrides', []))})" for j in failed), 1)


@app.command(context_settings=STAGE, add_help_option=False)
def sweep(ctx: typer.Context) -> None:
    """Run a sweep file: simpo sweep NAME [OVERRIDES...] = simpo train -m +sweep=NAME [OVERRIDES...]."""
    if not ctx.args or {"--help", "-h"} & set(ctx.args) or ctx.args[0].startswith("-") or "=" in ctx.args[0]:
        typer.echo("Usage: simpo sweep NAME [OVERRIDES...]   (= simpo train -m +sweep=NAME [OVERRIDES...])\n\n"
                   f"Sweeps (conf/sweep/*.yaml): {', '.join(group_options('sweep'))}\n"
                   "Any axis can be overridden: simpo sweep simpo_grid hparams.beta=2.0,2.5\n"
                   "Slurm: hydra/launcher=slurm hydra.launcher.partition=gpu; report: simpo report <sweep dir>")
        raise typer.Exit(0 if ctx.args and {"--help", "-h"} & set(ctx.args) else 2)
    name, *rest = ctx.args
    if name not in group_options("sweep"):
        _fail(f"unknown sweep '{name}'; choose from: {', '.join(group_options('sweep'))}")
    _run_hydra("train", "config", ["-m", f"+sweep={name}", *rest], _train_task)
    _exit_if_sweep_failed()


@app.command()
def report(
    sweep_dir: str = typer.Argument(..., help="The sweep directory (hydra.sweep.dir of the multirun)."),
    metric: str = typer.Option("rewards/accuracies", help="Sort and plot by this metric: a pair metric "
                               "after training (rewards/accuracies, rewards/margins, loss), final_loss, "
                               "or train/<name> (the last training log)."),
    mode: str = typer.Option("auto", help="max | min | auto (a loss is minimised, else maximised)."),
    out: str = typer.Option(None, help="Output directory (default: <sweep_dir>/report)."),
) -> None:
    """Table (markdown + CSV), plots and best override line of a sweep: simpo report <sweep dir>."""
    from simpo_cli.errors import UserError
    from simpo_cli.report import write_report

    try:
        result = write_report(sweep_dir, metric=metric, mode=mode, out_dir=out)
    except UserError as e:
        _fail(str(e), e.exit_code)
    failed = [j for j in result.jobs if j.status != "completed"]
    typer.echo(f"{len(result.jobs)} jobs: {len(result.jobs) - len(failed)} completed, {len(failed)} failed "
               f"or unfinished; report: {result.out_dir / 'report.md'}")
    for path in result.files:
        typer.echo(f"  {path}")
    for j in failed:
        typer.echo(f"{j.status}: {j.dir} ({' '.join(j.overrides)}): {j.error or ''}")
    if result.best_line:
        typer.echo(f"best {metric}: {result.ranked[0].metrics[metric]:.4g} ({result.ranked[0].dir})")
        typer.echo(result.best_line)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
