"""The ``simpo`` command. Each stage command forwards its arguments (Hydra overrides, ``-m``,
``--cfg job``, ...) to a ``@hydra.main`` entry point composed from ``simpo_cli/conf``; the stage
function itself lives in ``simpo_cli.stages`` and knows nothing of the CLI."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import typer

from simpo_cli.config.schema import group_options
from simpo_cli.run.launch import is_main_process, launches
from simpo_cli.sweeps.job import sweep_job

STAGE_GROUPS = {"train": ("model", "data", "objective", "hparams", "logger", "distributed", "adapter")}
STAGE_CONFIGS = {"train": "config"}  # stage -> primary config name (for `simpo validate --stage`)
_PLAN = None  # preflight.Plan of the running command: lets a failed job remove its fresh run dir
STAGE_GROUPS["sft"] = ("model", "data", "hparams", "logger", "adapter")


def _fits_stage(stage: str, group: str, option: str) -> bool:
    """SFT presets/data are listed under `simpo sft` only, preference ones under the other stages."""
    from simpo_cli.config.schema import CONF_DIR

    if group == "hparams":
        return option.startswith("sft-") == (stage == "sft")
    if group == "data":
        text = (CONF_DIR / group / f"{option}.yaml").read_text()
        return f"kind: {'preference' if stage == 'sft' else 'sft'}" not in text
    return True
STAGE_GROUPS["generate-pairs"] = ("model", "data", "scorer")
STAGE_GROUPS["eval"] = ("model", "data", "objective", "hparams")


def _groups_text(stage: str) -> str:
    lines = [f"  {g:<10} {', '.join(o for o in group_options(g) if _fits_stage(stage, g, o))}"
             for g in STAGE_GROUPS[stage]]
    return "\n".join(lines)


def _objectives_text() -> str:
    from simpo_cli.objectives import OBJECTIVES

    return "\n".join(f"  {name:<10} {spec.summary}" for name, spec in sorted(OBJECTIVES.items()))


def stage_help(stage: str) -> str:
    if stage == "sft":
        return SFT_HELP.format(groups=_groups_text("sft"))
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

    from simpo_cli.config.schema import CONF_DIR, register_configs

    from simpo_cli.errors import UserError
    from simpo_cli.run.preflight import preflight

    global _PLAN
    register_configs()
    try:  # compose + validate before Hydra creates the run directory
        _PLAN = preflight(stage, config_name, args)
    except UserError as e:
        if os.environ.get("SIMPO_DEBUG"):
            raise
        _fail(str(e), e.exit_code)
    args = _PLAN.args
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
            if not e.keep_outputs:
                _remove_fresh_run_dir()
            if os.environ.get("SIMPO_DEBUG"):
                raise
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:  # Ctrl-C outside the training loop (inside it, a checkpoint is written)
            if os.environ.get("SIMPO_DEBUG"):
                raise
            _fail("interrupted by SIGINT outside the training loop (no checkpoint written)", 130)

    return wrapped


def _remove_fresh_run_dir() -> None:
    """Delete the run directory this command created (and the empty parents it created), so a
    user mistake leaves no partial outputs. Never touches a directory that existed before."""
    from hydra.core.hydra_config import HydraConfig

    plan = _PLAN
    if plan is None or plan.run_dir is None or plan.existed:
        return
    try:
        out = Path(HydraConfig.get().runtime.output_dir).absolute()
    except Exception:  # noqa: BLE001 - not inside a Hydra job
        return
    if out != plan.run_dir:
        return
    shutil.rmtree(out, ignore_errors=True)
    for parent in out.parents:
        if parent == plan.root or plan.root is None or plan.root not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def _print_train_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="simpo train", show_header=False)
    table.add_row("steps", str(result.steps))
    if result.final_loss is not None:
        table.add_row("final loss", f"{result.final_loss:.4f}")
    for key in ("rewards/accuracies", "rewards/margins", "loss"):
        if key in result.after:
            table.add_row(f"{key} ({result.pairs_split})",
                          f"{result.before[key]:.4f} -> {result.after[key]:.4f}")
    Console().print(table)
    # Plain line so the path is never wrapped or cut by the table's width.
    print(f"run directory: {result.run_dir}")


def _precheck_train(cfg) -> None:
    from simpo_cli.run.launch import num_processes
    from simpo_cli.stages.train import gradient_accumulation
    from simpo_cli.config.checks import resolve_hparams, validate_train

    resolve_hparams(cfg)
    validate_train(cfg)
    gradient_accumulation(cfg.hparams, world=num_processes(cfg))  # global batch divisible by N x per-device


@_guard
@sweep_job  # multirun: skip completed jobs, record a failed one and go on (simpo_cli/sweeps/job.py)
@launches("train", precheck=_precheck_train)  # distributed=ddp|fsdp|zero2|zero3: via accelerate launch
def _train_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from simpo_cli.stages.train import run_train
    from simpo_cli.sweeps.job import metric_value

    result = run_train(cfg, HydraConfig.get().runtime.output_dir)
    if is_main_process():  # one summary per run, not one per process
        _print_train_summary(result)
    return metric_value(result, cfg.sweep.metric)  # what a sweeper (Optuna) optimises


SFT_HELP = """Usage: simpo sft [OVERRIDES...] [-m] [--cfg job] [--help]

Supervised fine-tuning on conversations, loss on assistant tokens only (every assistant turn).
The output <run dir>/model (weights + tokenizer with its chat template) starts `simpo train`:
  simpo train model.name_or_path=<run dir>/model   (or model.name_or_path=<run dir>)

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


def _print_sft_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="simpo sft", show_header=False)
    table.add_row("steps", str(result.steps))
    if result.final_loss is not None:
        table.add_row("final training loss", f"{result.final_loss:.4f}")
    if result.heldout_after is not None:
        table.add_row(f"held-out assistant-token loss ({result.heldout_size} records: {result.heldout_source})",
                      f"{result.heldout_before:.4f} -> {result.heldout_after:.4f} "
                      f"({100 * result.heldout_reduction:.1f}% lower)")
    Console().print(table)
    # Plain lines so the paths are never wrapped or cut by the table's width.
    print(f"run directory: {result.run_dir}")
    print(f"next: simpo train model.name_or_path={result.run_dir}")


@_guard
def _sft_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from simpo_cli.stages.sft import run_sft

    result = run_sft(cfg, HydraConfig.get().runtime.output_dir)
    _print_sft_summary(result)
    return result.heldout_after


def generate_pairs_help() -> str:
    return f"""Usage: simpo generate-pairs [OVERRIDES...] [--cfg job] [--help]

Sample generation.n responses per prompt with the model, score them with the scorer, keep the best
as chosen and the worst as rejected (the paper's on-policy Instruct data). Rerunning the same
command resumes an interrupted run (kill -9 included) without losing or repeating a prompt.

Config groups (group=option):
{_groups_text("generate-pairs")}

Settings: generation.n=5 generation.temperature=0.8 generation.top_p=1.0 generation.top_k=0
generation.max_new_tokens=1024 generation.max_prompt_length=1800 generation.batch_size=8
generation.shard_size=128 generation.backend=transformers|vllm seed=42 scorer.batch_size=8
output_dir=<dir> (default outputs/generate-pairs/<model>_<data>_<scorer>_n<n>_seed<seed>)
overwrite=true (start again) progress_bar=false

Examples:
  simpo generate-pairs data.max_samples=64 generation.max_new_tokens=32      (tiny model, CPU)
  simpo generate-pairs model=llama3-instruct data=ultrafeedback-prompts scorer=armorm \\
      generation.batch_size=64 generation.max_new_tokens=2048
Then: simpo train data=generated data.path=<output_dir>
"""


def _print_generate_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="simpo generate-pairs", show_header=False)
    table.add_row("output directory", str(result.run_dir))
    table.add_row("prompts", str(result.prompts))
    table.add_row("pairs", str(result.pairs))
    for reason, count in sorted(result.dropped.items()):
        table.add_row(f"dropped: {reason}", str(count))
    if result.shards_done_before:
        table.add_row("shards already done (resumed)", str(result.shards_done_before))
    if result.samples_per_second:
        table.add_row("samples/s", f"{result.samples_per_second:.2f}")
    table.add_row("train on it", f"simpo train data=generated data.path={result.run_dir}")
    Console().print(table)


@_guard
def _generate_pairs_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from simpo_cli.stages.generate_pairs import run_generate_pairs

    result = run_generate_pairs(cfg, HydraConfig.get().runtime.output_dir)
    _print_generate_summary(result)
    return result.pairs


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
    from simpo_cli.sweeps.job import failed_jobs

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
    from simpo_cli.sweeps.report import write_report

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
                   "--no-data) reads and tokenises the data, reporting dropped records.\n"
                   f"Stages: {', '.join(STAGE_CONFIGS)}")
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
    if stage not in STAGE_CONFIGS:
        _fail(f"unknown stage '{stage}'; choose from: {', '.join(STAGE_CONFIGS)}")
    _guard(lambda _: _validate_task(stage, overrides, check_data))(None)


def _validate_task(stage: str, args: list[str], check_data: bool) -> None:
    import logging

    from simpo_cli.config.schema import register_configs
    from simpo_cli.run.preflight import preflight

    logging.basicConfig(level=logging.WARNING, format="simpo: warning: %(message)s")
    register_configs()
    plan = preflight(stage, STAGE_CONFIGS[stage], args, warn=True)
    cfg = plan.cfg
    typer.echo(f"config: ok ({stage}" + (f", run directory {plan.run_dir}" if plan.run_dir else "") + ")")
    if check_data and cfg is not None and cfg.get("data") is not None and cfg.get("model") is not None:
        from simpo_cli.data.preference import check_preference_data
        from simpo_cli.models.loading import load_tokenizer

        splits = [cfg.data.split] + ([cfg.data.eval_split] if cfg.data.get("eval_split") else [])
        tokenizer = load_tokenizer(cfg.model)
        for split in splits:
            source, stats = check_preference_data(cfg.data, tokenizer, cfg.hparams, split)
            typer.echo(f"data: ok ({source}: {stats.records} records, {stats.kept} pairs kept, "
                       f"dropped {dict(stats.dropped) or 'none'})")


@app.command(context_settings=STAGE, add_help_option=False)
def sft(ctx: typer.Context) -> None:
    """Supervised fine-tuning, loss on assistant tokens: simpo sft [OVERRIDES...] (see simpo sft --help)."""
    if {"--help", "-h"} & set(ctx.args):
        typer.echo(stage_help("sft"))
        raise typer.Exit()
    _run_hydra("sft", "sft", ctx.args, _sft_task)


@app.command("generate-pairs", context_settings=STAGE, add_help_option=False)
def generate_pairs(ctx: typer.Context) -> None:
    """Sample, score and pair responses (on-policy data): simpo generate-pairs [OVERRIDES...]."""
    if {"--help", "-h"} & set(ctx.args):
        typer.echo(generate_pairs_help())
        raise typer.Exit()
    _run_hydra("generate-pairs", "generate-pairs", ctx.args, _generate_pairs_task)


def _print_eval_summary(result) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    table = Table(title="simpo eval", show_header=False)
    pairs = s.get("pairs")
    if pairs:
        start = pairs.get("reference_model")  # the starting model, beside the trained one
        for key, value in pairs["reward_accuracy"].items():
            if isinstance(value, float):
                was = start["reward_accuracy"].get(key) if start else None
                table.add_row(f"reward accuracy ({key})", f"{value:.4f}" + (f" (reference {was:.4f})"
                                                                              if isinstance(was, float) else ""))
        if start:
            table.add_row("mean margin (length_normalized)", f"{pairs['margins']['length_normalized']['mean']:.4f} "
                          f"(reference {start['margins']['length_normalized']['mean']:.4f})")
        kl = pairs.get("kl_chosen")
        if kl:
            table.add_row("KL(policy||ref) per token, chosen", f"{kl['per_token']:.4f}")
    for name, b in s.get("benchmarks", {}).items():
        table.add_row(f"{name} answers", f"{b['file']} ({b['n_prompts']} prompts)")
    if s.get("judge"):
        j = s["judge"]
        table.add_row("judge win rate", f"{j['win_rate']:.3f} [{j['ci'][0]:.3f}, {j['ci'][1]:.3f}]")
    Console().print(table)
    print(f"eval directory: {result.out_dir}")


EVAL_HELP = """
simpo eval:
  simpo eval run=<train run dir>            policy = <run>/model, reference = the run's start model;
                                            model/data/objective/hparams come from the run's config
  simpo eval run=<dir> data.path=heldout.jsonl data.max_samples=null   held-out pairs from a file
  simpo eval model=llama3-instruct model.name_or_path=/path data=local data.path=pairs.jsonl
  eval.benchmarks=[alpaca_eval,arena_hard,mt_bench]   eval.limit=N   eval.max_new_tokens=N
  eval.pairs=false   reference.enabled=false   reference.name_or_path=/path/to/sft
  judge.reward_model=/path/to/rm judge.baseline=/path/to/model_outputs.json   (local win rate)
Outputs: eval.json, report.md, pairs.jsonl, margins.png, loglik_vs_length.png and the answer files,
in <run>/eval/<date>/<time>/ (without run=: <paths.output_root>/eval/<date>/<time>/).
"""


@_guard
def _eval_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from simpo_cli.stages.eval import run_eval

    hc = HydraConfig.get()
    result = run_eval(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task))
    _print_eval_summary(result)
    return (result.summary.get("pairs") or {}).get("reward_accuracy", {}).get("objective")


@app.command(name="eval", context_settings=STAGE, add_help_option=False)
def eval_(ctx: typer.Context) -> None:
    """Evaluate a model: simpo eval run=<train run dir> [OVERRIDES...] (see simpo eval --help)."""
    if {"--help", "-h"} & set(ctx.args):
        typer.echo(stage_help("eval") + EVAL_HELP)
        raise typer.Exit()
    _run_hydra("eval", "eval", ctx.args, _eval_task)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
