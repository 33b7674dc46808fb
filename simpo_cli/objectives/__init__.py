"""Preference objectives. Importing this package registers every objective module below."""

from simpo_cli.objectives import simpo  # noqa: F401  (registers)
from simpo_cli.objectives import cpo, dpo, ipo, kto, orpo, rdpo, rrhf, slic_hf  # noqa: F401  (registers)
from simpo_cli.objectives.base import ObjectiveOutput, ObjectiveSpec, PreferenceLogps
from simpo_cli.objectives.registry import OBJECTIVES, get_objective

__all__ = ["OBJECTIVES", "ObjectiveOutput", "ObjectiveSpec", "PreferenceLogps", "get_objective"]
