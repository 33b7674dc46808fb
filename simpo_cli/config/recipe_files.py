"""The recipe book: one file per setting, ``simpo_cli/recipes/<setting>.yaml``, and the Hydra
options made from it.

A recipe file holds everything about a setting, inline::

    recipe:    {published: true, source: ...}    what the run records (meta.json "recipe")
    model:     {name_or_path: ..., dtype: ...}   model=<setting> in every stage
    data:      {name: ..., path: ...} | <name>   the training pairs, inline or a conf/data option
    hparams:   {learning_rate: ..., ...} | <name>  inline or a conf/hparams preset
    train:     {model: {dtype: ...}, trainer: {...}}   what `simpo train` sets on top (precision)
    published: {simpo: {beta: ..., gamma: ...}, dpo: {...}}   applied by config/recipes.py

:func:`register_recipes` stores, per file, the options Hydra composes: ``model/<setting>``,
``hparams/<setting>`` and ``data/<data.name>`` (when inline) and ``recipe/<setting>``, the
``@package _global_`` overlay that ``conf/config.yaml``'s ``optional recipe: ${model}`` selects.
Nothing else is needed to add a setting. :func:`option_doc` gives any group option as written
(a ``conf/`` file or a recipe's node), for the provenance table.
"""

from __future__ import annotations

import functools
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from simpo_cli.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONF_DIR = PACKAGE_DIR / "conf"
RECIPES_DIR = PACKAGE_DIR / "recipes"
SECTIONS = ("recipe", "model", "data", "hparams", "train", "published")
TRAIN_SECTIONS = ("model", "trainer")  # what a recipe's `train:` may set on top of the model


def names() -> list[str]:
    """Every setting with a recipe file, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    return RECIPES_DIR / f"{name}.yaml"


def display_path(name: str) -> str:
    """The recipe file as error messages name it (relative to the installation when inside it)."""
    path = recipe_path(name)
    return path.relative_to(PACKAGE_DIR.parent).as_posix() if path.is_relative_to(PACKAGE_DIR.parent) else str(path)


def read_yaml(path: Path) -> dict:
    """A YAML file as written (plain, unresolved); ``{}`` if it does not exist."""
    return _read(str(path))


@functools.lru_cache(maxsize=None)
def _read(path: str) -> dict:
    file = Path(path)
    return OmegaConf.to_container(OmegaConf.load(file), resolve=False) if file.is_file() else {}


def recipe(name: str) -> dict:
    """``simpo_cli/recipes/<name>.yaml`` as written; raises ``ConfigError`` for a key it cannot hold."""
    doc = _read(str(recipe_path(name)))
    where = display_path(name)
    problems = [f"{where}: unknown section '{k}' (a recipe holds {', '.join(SECTIONS)})"
                for k in doc if k not in SECTIONS]
    problems += [f"{where}: train.{k} is not a section a recipe sets for simpo train ({', '.join(TRAIN_SECTIONS)})"
                 for k in doc.get("train") or {} if k not in TRAIN_SECTIONS]
    if not isinstance(doc.get("model"), dict):
        problems.append(f"{where}: model: missing (the starting model, model=<setting>'s keys)")
    if not isinstance(doc.get("data"), (dict, str)) or not isinstance(doc.get("hparams"), (dict, str)):
        problems.append(f"{where}: data and hparams: each the section inline or a conf/ option's name")
    elif isinstance(doc["data"], dict) and not doc["data"].get("name"):
        problems.append(f"{where}: data.name: missing (inline data is also the option data=<data.name>)")
    if problems:
        raise ConfigError(problems)
    return doc


def data_option(doc: dict) -> str:
    return doc["data"] if isinstance(doc["data"], str) else doc["data"]["name"]


def hparams_option(name: str, doc: dict) -> str:
    return doc["hparams"] if isinstance(doc["hparams"], str) else name


@functools.lru_cache(maxsize=None)
def nodes() -> dict[tuple[str, str], dict]:
    """``{(group, option): node}`` for every recipe file (the nodes :func:`register_recipes` stores)."""
    out: dict[tuple[str, str], dict] = {}
    for name in names():
        doc = recipe(name)
        out[("model", name)] = {"defaults": ["base_model", "_self_"], "name": name, **doc["model"]}
        if isinstance(doc["hparams"], dict):
            out[("hparams", name)] = {"defaults": ["base_hparams", "_self_"], **doc["hparams"]}
        if isinstance(doc["data"], dict):
            data = data_option(doc)
            if (CONF_DIR / "data" / f"{data}.yaml").is_file() or ("data", data) in out:
                raise ConfigError([f"{display_path(name)}: data.name '{data}' is already a data option; "
                                   f"name the inline data differently or write data: {data}"])
            out[("data", data)] = {"defaults": ["base_data", "_self_"], **doc["data"]}
        overlay = {"defaults": [f"/data/{data_option(doc)}@data", f"/hparams/{hparams_option(name, doc)}@hparams",
                                "_self_"],
                   "recipe": {"name": name, **(doc.get("recipe") or {})}, **(doc.get("train") or {})}
        if doc.get("published"):
            overlay["published"] = doc["published"]
        out[("recipe", name)] = overlay
    return out


def register_recipes(cs: ConfigStore) -> None:
    """Store every recipe's options in Hydra's ConfigStore (idempotent)."""
    for (group, option), node in nodes().items():
        cs.store(group=group, name=option, node=node, package="_global_" if group == "recipe" else None)


def options(group: str) -> list[str]:
    """The options the recipe files add to ``group``."""
    return sorted(option for g, option in nodes() if g == group)


def option_doc(group: str, option: str) -> dict:
    """A group option as written (plain, unresolved): ``conf/<group>/<option>.yaml``, or the node a
    recipe file makes for it; ``{}`` if neither exists."""
    doc = _read(str(CONF_DIR / group / f"{option}.yaml"))
    return doc or nodes().get((group, option), {})
