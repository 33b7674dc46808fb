"""Optional dependencies, probed in one place: whether a module can be imported, and which files an
installed distribution shipped. Callers go through this module (``optional.installed(...)``), so
tests fake a package's absence or presence here instead of inside ``importlib``, which every
library's own import checks would then see too."""

from __future__ import annotations

import importlib.metadata
import importlib.util


def installed(module: str) -> bool:
    """True when the top-level ``module`` can be imported here (it is not imported)."""
    return importlib.util.find_spec(module) is not None


def distribution_files(distribution: str) -> list | None:
    """``importlib.metadata.files(distribution)``: the installed files, ``None`` when the
    distribution is not installed."""
    try:
        return importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
