"""The ``simpo`` command. Each stage command forwards its arguments (Hydra overrides, ``-m``,
``--cfg job``, ...) to a ``@hydra.main`` entry point composed from ``simpo_cli/conf``; the stage
function itself lives in ``simpo_cli.stages`` and knows nothing of the CLI."""

from __future__ import annotations

import os
import sys
from typing import Callable

import typer

from simpo_cli.config import group_options

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
def _train_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from simpo_cli.stages.train import run_train

    result = run_train(cfg, HydraConfig.get().runtime.output_dir)
    _print_train_summary(result)
    return result.after.get("rewards/accuracies")


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
