"""Preference objectives. Importing this package registers every objective module in it (a new
objective is one module here and its ``conf/objective/<name>.yaml``): SimPO first, then the others
in name order, which is the order of ``OBJECTIVES``."""

import importlib
import pkgutil

from simpo_cli.objectives.base import ObjectiveOutput, ObjectiveSpec, PreferenceLogps
from simpo_cli.objectives.registry import OBJECTIVES, get_objective

_INTERNAL = {"base", "registry", "wpo"}  # wpo: a modifier, not an objective
for _module in ["simpo", *sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "simpo")]:
    if _module not in _INTERNAL and not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")  # registers (registry.register)

__all__ = ["OBJECTIVES", "ObjectiveOutput", "ObjectiveSpec", "PreferenceLogps", "get_objective"]
