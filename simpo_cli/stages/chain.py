"""An experiment's chain of stages (``simpo run experiment=<name>``, ``conf/experiment/<name>.yaml``),
resolved into steps and checked whole before anything runs (no model loads, no file is written).

The ``stages`` list of an experiment holds, in order,

- a stage entry ``{<stage>: {key: value, ...}}`` (``sft``, ``generate-pairs``, ``train``, ``eval``):
  the stage with its own overrides (nested mappings flatten to dotted keys; a ``null`` value keeps
  the stage's default). A hand-off names the stage that provides the input, never a path:
  ``model: from sft``, ``model: from train``, ``data: from generate-pairs``; it resolves to the
  nearest earlier step of that stage;
- a block ``{rounds: k, stages: [...]}``: its stages repeated ``k`` times (iterative preference
  optimisation). From round 2 on, every stage of the block without a ``model`` hand-off takes
  ``model: from train``: each round starts from the previous round's policy.

Each step gets its directory inside the experiment directory, ``NN-<stage>`` (``-rK`` in round
``K`` of a block), fixed by the experiment's config, so a rerun of the same command finds it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from omegaconf import OmegaConf

from simpo_cli.config.checks import group_overrides
from simpo_cli.config.schema import group_options
from simpo_cli.errors import ConfigError
from simpo_cli.run.preflight import compose_config, validate_composed
from simpo_cli.stages.spec import BY_NAME

RUNNER = "run"  # the experiment command itself: never a step of a chain
# Which stage provides which input: a hand-off ``key: from <stage>`` must name one of these.
PROVIDES = {"model": ("sft", "train"), "data": ("generate-pairs",)}
# How each stage continues an interrupted run in the same directory (their own resume).
RESUME = {"train": ("resume=auto",), "sft": ("resume=auto",), "generate-pairs": ("resume=auto",)}
_FROM = re.compile(r"^from\s+(\S+)$")
_PLAIN = re.compile(r"^[\w/.+\-~:@\[\],]*$")


@dataclass
class Step:
    index: int  # 1-based position in the expanded chain
    stage: str
    overrides: list[str]  # the step's own ``key=value`` overrides (hand-offs excluded)
    inputs: dict[str, int] = field(default_factory=dict)  # hand-off key -> index of the providing step
    round: int | None = None  # round number inside a ``rounds`` block

    @property
    def dir_name(self) -> str:
        return f"{self.index:02d}-{self.stage}" + (f"-r{self.round}" if self.round else "")

    @property
    def label(self) -> str:
        return f"stage {self.index} ({self.stage}{f', round {self.round}' if self.round else ''})"


def format_value(value) -> str:
    """A YAML value as a Hydra override value: lists as ``[a,b]``, booleans ``true``/``false``,
    ``null``; a string Hydra would parse otherwise is single-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if isinstance(value, str) and not _PLAIN.match(text):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not (key in PROVIDES and not prefix):
            out += _flatten(value, name + ".")
        else:
            out.append((name, value))
    return out


def _stage_entry(entry, where: str) -> tuple[str, dict]:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError([f"{where}: a stage entry is one mapping {{<stage>: {{overrides}}}}, "
                           f"got {entry!r}"])
    (stage, body), = entry.items()
    if stage not in BY_NAME or stage == RUNNER:
        names = [s for s in BY_NAME if s != RUNNER]
        raise ConfigError([f"{where}: unknown stage '{stage}'; choose from: {', '.join(names)} "
                           "(or a block {rounds: k, stages: [...]})"])
    if body is not None and not isinstance(body, dict):
        raise ConfigError([f"{where} ({stage}): overrides must be a mapping key: value, got {body!r}"])
    return stage, body or {}


def expand(stages) -> list[Step]:
    """The experiment's ``stages`` list (plain Python containers) as steps, rounds unrolled and
    hand-offs resolved. Raises ``ConfigError`` listing every problem."""
    if not isinstance(stages, list) or not stages:
        raise ConfigError(["stages: an experiment needs a non-empty list of stages"])
    problems: list[str] = []
    steps: list[Step] = []

    def add(entry, where: str, rnd: int | None) -> None:
        try:
            stage, body = _stage_entry(entry, where)
        except ConfigError as e:
            problems.extend(e.problems)
            return
        step = Step(len(steps) + 1, stage, [], round=rnd)
        handoffs = {}
        for key, value in _flatten(body):
            m = _FROM.match(value) if isinstance(value, str) else None
            if m:
                handoffs[key] = m.group(1)
            elif value is not None:
                step.overrides.append(f"{key}={format_value(value)}")
        if rnd is not None and rnd > 1 and "model" not in handoffs:
            handoffs["model"] = "train"  # each round starts from the previous round's policy
        for key, source in handoffs.items():
            if key not in PROVIDES:
                problems.append(f"{step.label}: {key}: from {source}: only {', '.join(PROVIDES)} are handed "
                                "off between stages")
            elif source not in PROVIDES[key]:
                problems.append(f"{step.label}: {key}: from {source}: a {key} comes from "
                                f"{' or '.join(PROVIDES[key])}")
            else:
                earlier = [s for s in steps if s.stage == source]
                if not earlier:
                    problems.append(f"{step.label}: {key}: from {source}: no earlier {source} stage")
                else:
                    step.inputs[key] = earlier[-1].index
        steps.append(step)

    for i, entry in enumerate(stages, 1):
        where = f"stages[{i}]"
        if isinstance(entry, dict) and "rounds" in entry:
            rounds, block = entry.get("rounds"), entry.get("stages")
            if set(entry) - {"rounds", "stages"}:
                problems.append(f"{where}: a rounds block has only 'rounds' and 'stages', got {sorted(entry)}")
            if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
                problems.append(f"{where}: rounds must be an integer >= 1, got {rounds!r}")
                continue
            if not isinstance(block, list) or not block:
                problems.append(f"{where}: a rounds block needs a non-empty 'stages' list")
                continue
            for r in range(1, rounds + 1):
                for j, inner in enumerate(block, 1):
                    add(inner, f"{where}.stages[{j}]", r)
        else:
            add(entry, where, None)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return steps


def step_args(step: Step, steps: list[Step], input_dir) -> list[str]:
    """The command line of ``step`` (after ``simpo <stage>``): its overrides, its hand-offs as
    ``key=<dir>`` (``input_dir(step)`` gives a step's directory) and its own resume setting."""
    inputs = [f"{key}={input_dir(steps[i - 1])}" for key, i in step.inputs.items()]
    return [*step.overrides, *inputs, *RESUME.get(step.stage, ())]


def decide(status: str | None) -> str:
    """What a (re)run does with a step whose directory records ``status``: ``skip`` a completed
    one; ``resume`` one that started (running = killed, interrupted, failed), through the stage's
    own resume; ``start`` one never started."""
    if status == "completed":
        return "skip"
    return "start" if status is None else "resume"


# Where a step's input from an earlier step will be: unknown before that step has run, so the
# step is checked with this stand-in, and only the problems that name it are left out.
PENDING_INPUT = "/simpo-run-pending-input"


def experiment_problems(cfg, warn: bool = False) -> list[str]:
    """Every problem of an experiment (``simpo run``), before its first stage starts: the chain
    (``expand``: stage names, hand-offs, rounds) and each step's composed config through
    its stage's validator. A step whose input comes from an earlier step is checked on everything
    but that input: ``model: from X`` composes X's model preset, ``data: from generate-pairs`` the
    generated-pairs option, each pointing at a directory that does not exist yet."""
    try:
        steps = expand(OmegaConf.to_container(cfg.get("stages"), resolve=True))
    except ConfigError as e:
        return list(e.problems)
    presets: dict[int, str | None] = {}
    problems: list[str] = []
    for step in steps:
        config_name = BY_NAME[step.stage].config
        pending = f"{PENDING_INPUT}/{step.dir_name}"
        args = list(step.overrides)
        for key, source in step.inputs.items():
            if key == "model":
                preset = presets.get(source)
                args += ([f"model={preset}"] if preset else []) + [f"model.name_or_path={pending}"]
            else:  # data from generate-pairs
                args += ["data=generated", f"data.path={pending}"]
        try:
            composed = compose_config(config_name, group_overrides(config_name, args))
        except ConfigError as e:
            problems += [f"{step.label}: {p}" for p in e.problems]
            continue
        name = composed.get("model", {}).get("name")
        presets[step.index] = name if name in group_options("model") else presets.get(step.inputs.get("model"))
        problems += [f"{step.label}: {p}" for p in validate_composed(step.stage, composed, warn)
                     if PENDING_INPUT not in p]
    return problems


def stage_problems(stage: str, cfg, warn: bool = False) -> list[str]:
    """Preflight's check of a composed config (``run/preflight.preflight(check=...)``): an
    experiment's whole chain, or one stage's validator."""
    return experiment_problems(cfg, warn) if stage == RUNNER else validate_composed(stage, cfg, warn)
