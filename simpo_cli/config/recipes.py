"""Recipes: ``simpo train objective=X model=M`` is the published run of X on M, and every run says
where each training-relevant value came from.

A setting is one file, ``simpo_cli/recipes/M.yaml`` (``config/recipe_files.py`` makes Hydra's
options from it). The composition is Hydra's (``conf/config.yaml``)::

    model: M                             the recipe's ``model:`` (every stage)
    objective: X                         the objective's defaults (beta, gamma, its own knobs)
    /data/demo-prefs, /hparams/default   what a model without a recipe trains with (the demo)
    optional recipe: ${model}            the recipe's data and hparams, its ``train:`` (precision,
                                         the training checkpoint) and ``published: {X: {beta: ..}}``
    data: null, hparams: null            data=<option> / hparams=<preset> on the command line

then, once, :func:`apply_published` writes the recipe's ``published.X`` values into ``objective.*``
except the keys the command line sets (``objective.beta=...``). With ``hparams=<preset>`` the
values are those of the setting whose preset it is (the recipe that holds or names it).

:func:`provenance` says, for every training-relevant key, which of these set it last. It reads the
options the choices name (the model, the objective, the recipe and the options it includes, the
command line's options) in composition order; Hydra's defaults list is not replayed.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Iterable

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from simpo_cli.config import recipe_files
from simpo_cli.config.schema import CONF_DIR
from simpo_cli.config.store import register_configs
from simpo_cli.errors import ConfigError

log = logging.getLogger(__name__)

# The values that decide what a training run computes: recorded with their source in meta.json.
TRAINING_KEYS = ("seed", "model.name_or_path", "model.revision", "model.dtype", "model.attn_implementation",
                 "model.chat_template", "model.chat_template_kwargs", "data.name", "data.path", "data.split",
                 "data.eval_split", "data.max_samples", "objective", "hparams", "trainer.bf16", "trainer.fp16",
                 "trainer.gradient_checkpointing", "trainer.max_steps", "trainer.use_cpu", "reference.mode",
                 "reference.name_or_path", "distributed.name", "distributed.num_processes")
# The short table printed at the start of a run.
SUMMARY_KEYS = ("model.name_or_path", "data.path", "objective.name", "objective.beta", "objective.gamma",
                "hparams.learning_rate", "hparams.global_batch_size", "hparams.num_train_epochs",
                "hparams.max_length", "hparams.max_prompt_length", "model.dtype", "trainer.bf16",
                "trainer.gradient_checkpointing", "model.attn_implementation")
COMMAND_LINE = "command line"


# -- the files a composition reads ------------------------------------------------------------

def config_file(group: str, option: str) -> dict:
    """A group option as written: ``conf/<group>/<option>.yaml`` or a recipe file's node (``{}``
    if there is none)."""
    return recipe_files.option_doc(group, option)


def _includes(doc: dict) -> dict[str, str]:
    """The group options a file's defaults list includes: ``{"data": "ultrafeedback", ...}`` for
    ``/data/ultrafeedback@data`` entries and ``{"model": "tiny-llama"}`` for ``model: tiny-llama``."""
    out: dict[str, str] = {}
    for entry in doc.get("defaults") or []:
        if isinstance(entry, str) and entry.startswith("/") and entry.count("/") >= 2:
            group, option = entry.lstrip("/").split("@", 1)[0].rsplit("/", 1)
            out[group] = option
        elif isinstance(entry, dict):
            for group, option in entry.items():
                if isinstance(option, str) and not group.startswith("override "):
                    out[group.removeprefix("optional ")] = option
    return out


def command_line(overrides: Iterable[str]) -> tuple[dict[str, str], set[str]]:
    """The command line's group choices (``{"hparams": "mistral-base"}``) and keys (``{"objective.beta"}``)."""
    choices, keys = {}, set()
    for o in overrides:
        key, sep, value = o.partition("=")
        key = key.lstrip("+~")
        if not sep or key.startswith("hydra"):
            continue
        if "." not in key and (CONF_DIR / key.split("@", 1)[0]).is_dir():  # a config group
            choices[key.split("@", 1)[-1]] = value
        else:
            keys.add(key)
    return choices, keys


# -- published values -------------------------------------------------------------------------

def published_setting(cfg, overrides: Iterable[str]) -> str | None:
    """The setting whose published objective values apply: the one whose hyperparameters run
    (an explicit ``hparams=<preset>``: the recipe that includes that preset), else the model's."""
    choices, _ = command_line(overrides)
    if "hparams" in choices:
        return next((n for n in recipe_files.names() if _includes(config_file("recipe", n)).get("hparams")
                     == choices["hparams"]), None)
    return (cfg.get("recipe") or {}).get("name")


def published_values(cfg, overrides: Iterable[str]) -> tuple[str | None, dict]:
    """``(setting, {key: value})``: the published ``objective.*`` values of ``cfg``'s objective on
    the setting :func:`published_setting` names, less the keys the command line sets."""
    overrides = list(overrides)
    setting = published_setting(cfg, overrides)
    if setting is None:
        return None, {}
    table = config_file("recipe", setting).get("published") or {}
    _, keys = command_line(overrides)
    values = table.get(cfg.objective.name) or {}
    return setting, {k: v for k, v in values.items() if f"objective.{k}" not in keys}


def apply_published(cfg, overrides: Iterable[str] | None) -> dict:
    """Write the recipe's published values of the chosen objective into ``cfg.objective`` (in
    place), except the keys set on the command line; return them. ``overrides``: the command
    line (``None``: none). A published key the objective does not have raises ``ConfigError``."""
    _, values = published_values(cfg, overrides or [])
    unknown = [k for k in values if k not in cfg.objective]
    if unknown:
        raise ConfigError([f"{recipe_files.display_path(published_setting(cfg, overrides or []))}: published."
                           f"{cfg.objective.name}.{k} is not a setting of objective {cfg.objective.name}"
                           for k in unknown])
    for key, value in values.items():
        cfg.objective[key] = value
    return values


def finish(cfg, config_name: str, overrides: Iterable[str] | None):
    """What follows Hydra's composition of a stage config (``simpo train``: the published values)."""
    if config_name == "config" and cfg.get("objective") is not None:
        apply_published(cfg, overrides)
    return cfg


# -- provenance -------------------------------------------------------------------------------

def _flatten(node: dict, prefix: str = "") -> Iterable[tuple[str, object]]:
    """``(dotted key, value)`` for every leaf of a plain (unresolved) container."""
    for key, value in node.items():
        if key in ("defaults", "hydra") and not prefix:
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            yield from _flatten(value, path)
        else:
            yield path, value


@functools.lru_cache(maxsize=None)
def _schema(group: str) -> dict:
    """The schema a group's option starts from (``base_<group>`` in Hydra's ConfigStore), plain."""
    register_configs()
    node = ConfigStore.instance().load(f"{group}/base_{group}.yaml").node
    return OmegaConf.to_container(node, resolve=False)


def value_sources(cfg, overrides: list[str], config_name: str = "config") -> dict[str, str]:
    """For every key a file of ``cfg``'s composition sets: which set it last (a label: ``recipe
    <setting>``, ``objective default (<name>)``, ``command line``, ...), in composition order."""
    choices, keys = command_line(overrides)
    primary = recipe_files.read_yaml(CONF_DIR / f"{config_name}.yaml")
    defaults = _includes(primary)
    sources: dict[str, str] = {}

    def layer(doc: dict, package: str, label: str, group: str | None = None) -> None:
        if group and f"base_{group}" in (doc.get("defaults") or []):  # the file's schema comes first
            layer(_schema(group), package, "schema default")
        for key, value in _flatten(doc):
            if value != "???":  # a schema's ??? does not override a set value
                sources[f"{package}.{key}" if package else key] = label

    model = choices.get("model", defaults.get("model"))
    if model:
        # a setting's model is a section of its recipe file; tiny-llama is a conf/model/ preset
        label = f"recipe {model}" if model in recipe_files.names() else f"model preset ({model})"
        layer(config_file("model", model), "model", label, "model")
    objective = cfg.objective.name if cfg.get("objective") is not None else None
    if objective:
        layer(config_file("objective", objective), "objective", f"objective default ({objective})")
    for group in ("data", "hparams"):  # the demo's: what a model without a recipe trains with
        if group in defaults:
            layer(config_file(group, defaults[group]), group, f"default ({group}/{defaults[group]})", group)
    recipe = config_file("recipe", model) if model else {}
    if recipe:
        for group, option in _includes(recipe).items():
            layer(config_file(group, option), group, f"recipe {model}", group)
        layer({k: v for k, v in recipe.items() if k != "published"}, "", f"recipe {model}")
    for group in ("data", "hparams"):
        if group in choices:
            layer(config_file(group, choices[group]), group, f"{COMMAND_LINE} ({group}={choices[group]})", group)
    setting, published = published_values(cfg, overrides) if config_name == "config" else (None, {})
    for key in published:
        sources[f"objective.{key}"] = f"recipe {setting} (published {objective} values)"
    for group in ("logger", "adapter", "distributed"):
        option = choices.get(group, defaults.get(group))
        if option:
            label = (f"{COMMAND_LINE} ({group}={option})" if group in choices else f"default ({group}/{option})")
            layer(config_file(group, option), group, label, group)
    layer(primary, "", "default (<root>)")  # the stage config itself (conf/config.yaml: seed, stage)
    if "sweep" in choices:
        layer(config_file("sweep", choices["sweep"]), "", f"sweep file ({choices['sweep']})")
    for key in keys:
        for known in list(sources):
            if known.startswith(key + "."):
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
    sources = value_sources(cfg, list(overrides or []), config_name)
    result = {}
    for key, value in _selected(cfg, TRAINING_KEYS).items():
        if key.startswith("objective.wpo") and not cfg.objective.get("wpo"):
            continue  # the WPO modifier (objective.wpo*) is listed only when it is on
        source = sources.get(key)
        if source is None:  # a key the schema fills in (e.g. hparams.weight_decay) or a folded value
            parent = key.rsplit(".", 1)[0]
            source = sources.get(parent, "schema default")
        if key == "objective.gamma" and cfg.objective.get("gamma_beta_ratio") is not None:
            source = (f"objective.gamma_beta_ratio x objective.beta "
                      f"({sources.get('objective.gamma_beta_ratio', '?')})")
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
    knobs = [k for k, v in table.items() if k.startswith("objective.") and k != "objective.name"
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
            and not (k == "objective.gamma" and table[k]["value"] is None)]
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
    """``simpo train``'s config for ``overrides`` (the package's conf, schemas registered, the
    published values applied)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return finish(compose(config_name="config", overrides=overrides), "config", overrides)


def recipe_models() -> list[str]:
    """Every model option with a recipe: the six paper settings first, then the others."""
    names = recipe_files.names()
    return [s for s in SETTINGS if s in names] + [n for n in names if n not in SETTINGS]


def settings_table(names: Iterable[str] | None = None) -> str:
    """The README's markdown table of what ``simpo train objective=simpo model=<setting>`` composes,
    generated from the recipe files (``python scripts/recipe_table.py`` writes it into README.md),
    one row per setting of ``names`` (default: every recipe)."""
    rows = ["| `model=` | starting model | data | β | γ | lr | max length / prompt | source |",
            "|---|---|---|---|---|---|---|---|"]
    for name in recipe_models() if names is None else names:
        cfg = compose_train([f"model={name}", "objective=simpo"])
        hp, ob = cfg.hparams, cfg.objective
        source = cfg.recipe.source if cfg.recipe.published else "none published: objective defaults"
        rows.append(f"| `{name}` | `{cfg.model.name_or_path}` | `{cfg.data.path}` | {ob.beta:g} | {ob.gamma:g} | "
                    f"{hp.learning_rate:g} | {hp.max_length} / {hp.max_prompt_length} | {source} |")
    return "\n".join(rows)
