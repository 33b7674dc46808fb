"""Recipes: ``simpo train objective=X model=M`` is the published run of X on M, and every run says
where each training-relevant value came from.

The composition is Hydra's (``conf/config.yaml``)::

    objective: X                    the objective's defaults (beta, gamma, its own knobs)
    /data/demo-prefs, /hparams/default   what a model without a recipe trains with (the demo)
    optional recipe: ${model}       conf/recipe/M.yaml: data, hparams preset (lr, lengths, batch),
                                    precision, attention, starting checkpoint
    data: recipe, hparams: recipe   empty unless data=/hparams= is given: then that option wins
    optional published: ${model}_${objective}       conf/published/M_X.yaml: X's beta/gamma on M
    optional published@_here_: ${hparams}_${objective}   the same for an explicit hparams=<preset>

Command-line keys (``hparams.beta=...``) are applied after all of it. A new objective is one
function and one YAML; its published values on a setting, where they exist, are one more file in
``conf/published/``. This module only reads the composition back: ``value_sources`` replays the
defaults list Hydra composed and records, for every key, the last config that set it.
"""

from __future__ import annotations

import logging
from typing import Iterable

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from simpo_cli.config.schema import CONF_DIR
from simpo_cli.config.store import register_configs
from simpo_cli.objectives import get_objective

log = logging.getLogger(__name__)

# The values that decide what a training run computes: recorded with their source in meta.json.
TRAINING_KEYS = ("seed", "model.name_or_path", "model.revision", "model.dtype", "model.attn_implementation",
                 "model.chat_template", "model.chat_template_kwargs", "data.name", "data.path", "data.split",
                 "data.eval_split", "data.max_samples", "objective", "hparams", "trainer.bf16", "trainer.fp16",
                 "trainer.gradient_checkpointing", "trainer.max_steps", "trainer.use_cpu", "reference.mode",
                 "reference.name_or_path", "distributed.name", "distributed.num_processes")
# The short table printed at the start of a run.
SUMMARY_KEYS = ("model.name_or_path", "data.path", "objective.name", "hparams.beta", "hparams.gamma",
                "hparams.learning_rate", "hparams.global_batch_size", "hparams.num_train_epochs",
                "hparams.max_length", "hparams.max_prompt_length", "model.dtype", "trainer.bf16",
                "trainer.gradient_checkpointing", "model.attn_implementation")
COMMAND_LINE = "command line"


def _flatten(node: dict, prefix: str = "") -> Iterable[tuple[str, object]]:
    """``(dotted key, value)`` for every leaf of a plain (unresolved) container."""
    for key, value in node.items():
        if key == "defaults" and not prefix:
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            yield from _flatten(value, path)
        else:
            yield path, value


def _label(path: str, parent: str | None, cli_groups: dict[str, str]) -> str:
    """A human label for the config file ``path`` (e.g. ``hparams/llama3-instruct``)."""
    group, _, option = path.rpartition("/")
    if group == "recipe":
        return f"recipe {option}"
    if group == "published":
        setting, _, objective = option.rpartition("_")
        return f"recipe {setting} (published {objective} values)"
    if parent and parent.startswith("recipe/"):
        return f"recipe {parent.split('/', 1)[1]}"
    if parent and parent.startswith("published/"):
        return _label(parent, None, cli_groups)
    owner = path if parent is None or parent == "config" else parent
    owner_group, _, owner_option = owner.rpartition("/")
    if option.startswith("base_") or group.startswith("objective_schema"):
        return "schema default"
    if owner_group == "objective":  # chosen on the command line or not, these are its defaults
        return f"objective default ({owner_option})"
    if owner_group == "model":
        return f"model preset ({owner_option})"
    if cli_groups.get(owner_group) == owner_option:
        return f"{COMMAND_LINE} ({owner_group}={owner_option})"
    if owner_group == "sweep":
        return f"sweep file ({owner_option})"
    if owner == "config":
        return "default"
    return f"default ({owner})"


def value_sources(overrides: list[str], config_name: str = "config") -> dict[str, str]:
    """For every key of the composed ``config_name`` with ``overrides``: which config set it last
    (a label: ``recipe <setting>``, ``objective default (<name>)``, ``command line``, ...).

    Replays Hydra's own defaults list (``compute_defaults_list``); the composition itself is not
    repeated. Works inside a Hydra job (its global state) and outside (a private one)."""
    register_configs()
    if GlobalHydra.instance().is_initialized():
        return _sources(GlobalHydra.instance().config_loader(), overrides, config_name)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _sources(GlobalHydra.instance().config_loader(), overrides, config_name)


def _sources(loader, overrides: list[str], config_name: str) -> dict[str, str]:
    parsed = OverridesParser.create().parse_overrides(overrides)
    defaults = loader.compute_defaults_list(config_name, overrides, RunMode.RUN)
    key_overrides = {o.key_or_group for o in defaults.config_overrides}
    cli_groups = {o.key_or_group.lstrip("+~"): str(o.value()) for o in parsed
                  if o.key_or_group not in key_overrides and not o.is_sweep_override()}
    sources: dict[str, str] = {}
    for d in defaults.defaults:
        if d.config_path is None or d.config_path.startswith("hydra/") or d.package == "hydra":
            continue
        loaded = loader.repository.load_config(d.config_path)  # the file as written, defaults list aside
        if loaded is None or loaded.config is None:
            continue
        label = _label(d.config_path, d.parent, cli_groups)
        package = d.package or ""
        for key, value in _flatten(OmegaConf.to_container(loaded.config, resolve=False)):
            if value == "???":  # a schema's ??? does not override a set value
                continue
            sources[f"{package}.{key}" if package else key] = label
    for key in key_overrides:
        key = key.lstrip("+~")
        for known in list(sources):
            if known == key or known.startswith(key + "."):
                sources[known] = COMMAND_LINE
        sources[key] = COMMAND_LINE
    return sources


def _selected(cfg, keys: Iterable[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in keys:
        node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if isinstance(node, DictConfig) and key in ("objective", "hparams"):
            for sub in node.keys():
                out[f"{key}.{sub}"] = OmegaConf.select(cfg, f"{key}.{sub}", throw_on_missing=False)
        elif isinstance(node, (DictConfig, ListConfig)):
            out[key] = OmegaConf.to_container(node, resolve=True)
        else:
            out[key] = node
    return out


def provenance(cfg, overrides: list[str] | None, config_name: str = "config") -> dict[str, dict]:
    """``{key: {"value": v, "source": label}}`` for the training-relevant keys of ``cfg``.

    ``overrides`` are the run's command-line overrides (``None``: unknown, e.g. a direct call;
    then values are attributed to the config files alone)."""
    sources = value_sources(list(overrides or []), config_name)
    result = {}
    for key, value in _selected(cfg, TRAINING_KEYS).items():
        source = sources.get(key)
        if source is None:  # a key the schema fills in (e.g. hparams.weight_decay) or a folded value
            parent = key.rsplit(".", 1)[0]
            source = sources.get(parent, "schema default")
        if key == "hparams.gamma" and cfg.hparams.get("gamma_beta_ratio") is not None:
            source = f"hparams.gamma_beta_ratio x hparams.beta ({sources.get('hparams.gamma_beta_ratio', '?')})"
        result[key] = {"value": value, "source": source}
    return result


def notes(cfg, table: dict[str, dict]) -> list[str]:
    """What the run must say about its recipe: none published for this model, or none published
    for this objective on this setting (so the objective's defaults are used)."""
    recipe = cfg.get("recipe") or {}
    name = recipe.get("name")
    if not name:
        return []
    objective = cfg.objective.name
    knobs = [f"hparams.{k}" for k in get_objective(objective).uses] + [
        k for k, v in table.items() if k.startswith("objective.") and k != "objective.name"
        and isinstance(v["value"], (int, float)) and not isinstance(v["value"], bool)]
    defaults = [k for k in knobs if table.get(k, {}).get("source", "").startswith("objective default")]
    values = ", ".join(f"{k.split('.', 1)[1]}={table[k]['value']}" for k in defaults)
    if not recipe.get("published"):
        return [f"no published SimPO recipe exists for model={cfg.model.name}: {recipe.get('source')}"
                + (f"; objective defaults: {values}" if values else "")]
    if any("(published " in v["source"] for v in table.values()) or not values:
        return []
    return [f"no published {objective} values for the {name} setting: using the objective's defaults "
            f"({values}; conf/objective/{objective}.yaml) with the setting's learning rate "
            f"{cfg.hparams.learning_rate:g}"]


def format_table(cfg, table: dict[str, dict], keys: Iterable[str] = SUMMARY_KEYS) -> str:
    """The short table printed at the start of a run: key, value, source."""
    rows = [(k, _short(table[k]["value"]), table[k]["source"]) for k in keys if k in table
            and not (k == "hparams.gamma" and table[k]["value"] is None)]
    width = max(len(r[0]) for r in rows)
    vwidth = min(max(len(r[1]) for r in rows), 48)
    recipe = cfg.get("recipe") or {}
    head = (f"recipe: {recipe.get('name')} ({recipe.get('source')})" if recipe.get("name")
            else f"recipe: none for model={cfg.model.name}")
    return "\n".join([head] + [f"  {k:<{width}}  {v:<{vwidth}}  {s}" for k, v, s in rows])


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def task_overrides() -> list[str] | None:
    """The running Hydra job's command-line overrides; ``None`` outside a Hydra job."""
    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def announce(cfg, config_name: str = "config") -> dict:
    """Log the recipe table and notes; return what ``meta.json`` records (``recipe`` and the
    ``provenance`` of every training-relevant value)."""
    try:
        table = provenance(cfg, task_overrides(), config_name)
    except Exception as e:  # noqa: BLE001 - a bookkeeping failure must not stop a training run
        log.warning("could not trace where the config values came from (%s: %s); meta.json records "
                    "the config only", type(e).__name__, e)
        table = {}
    if table:
        log.info("%s", format_table(cfg, table))
    for line in notes(cfg, table):
        log.warning("%s", line)
    recipe = OmegaConf.to_container(cfg.recipe, resolve=True) if cfg.get("recipe") is not None else None
    return {"recipe": recipe, "provenance": table}


# -- the README's setting table ---------------------------------------------------------------

SETTINGS = ("mistral-base", "mistral-instruct", "llama3-base", "llama3-instruct", "llama3-instruct-v0.2",
            "gemma2-9b-it")


def compose_train(overrides: list[str]):
    """``simpo train``'s config for ``overrides`` (the package's conf, schemas registered)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def recipe_models() -> list[str]:
    """Every model option with a recipe: the six paper settings first, then the others."""
    names = sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))
    return [s for s in SETTINGS if s in names] + [n for n in names if n not in SETTINGS]


def settings_table() -> str:
    """The README's markdown table of what ``simpo train objective=simpo model=<setting>`` composes,
    generated from the configs (``python scripts/recipe_table.py`` writes it into README.md)."""
    rows = ["| `model=` | starting model | data | β | γ | lr | max length / prompt | source |",
            "|---|---|---|---|---|---|---|---|"]
    for name in recipe_models():
        cfg = compose_train([f"model={name}", "objective=simpo"])
        hp = cfg.hparams
        source = cfg.recipe.source if cfg.recipe.published else "none published: objective defaults"
        rows.append(f"| `{name}` | `{cfg.model.name_or_path}` | `{cfg.data.path}` | {hp.beta:g} | {hp.gamma:g} | "
                    f"{hp.learning_rate:g} | {hp.max_length} / {hp.max_prompt_length} | {source} |")
    return "\n".join(rows)
