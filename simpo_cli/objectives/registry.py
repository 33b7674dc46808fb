"""The single source of truth for objective names: config validation, ``--help``, error messages
and test parametrisation all read ``OBJECTIVES``."""

from __future__ import annotations

from simpo_cli.objectives.base import ObjectiveSpec

OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register(**kwargs) -> ObjectiveSpec:
    spec = ObjectiveSpec(**kwargs)
    if spec.name in OBJECTIVES:
        raise ValueError(f"objective '{spec.name}' is registered twice")
    OBJECTIVES[spec.name] = spec
    return spec


def get_objective(name: str) -> ObjectiveSpec:
    """Return the spec for ``name``; ``KeyError`` with the list of choices if unknown."""
    if name not in OBJECTIVES:
        raise KeyError(f"unknown objective '{name}'; choose from: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]
