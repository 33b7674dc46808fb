"""Hydra's ConfigStore: every stage's structured-config schemas and the recipe book's options,
stored once."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from simpo_cli.config.eval import register_eval_configs
from simpo_cli.config.recipe_files import register_recipes
from simpo_cli.config.schema import register_schemas
from simpo_cli.objectives import OBJECTIVES


def register_configs() -> None:
    """Store every schema (train, sft, generate-pairs, eval and each group's base) and every
    recipe file's options (``config/recipe_files.py``) in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    register_schemas(cs)
    register_eval_configs(cs)
    register_recipes(cs)
    for name, spec in OBJECTIVES.items():
        # Not in the "objective" group itself, so `objective=glob(*)` sweeps only the YAML options.
        cs.store(group="objective_schema", name=name, node=spec.schema)
