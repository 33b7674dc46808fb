"""The package's import graph, read from the source (ast): no cycles, imports at module top (except
optional heavy dependencies), no ``_private`` name taken from another module, and ``import
simpo_cli.cli`` stays light so ``simpo --help`` answers without loading torch."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "simpo_cli"

# Imported inside the function that needs them, and only there, because each is either an optional
# extra (absent from a default install) or costly to import and needed by one option only:
OPTIONAL_HEAVY = {
    "vllm",  # generation.backend=vllm (extra `vllm`, GPU only)
    "llm_blender",  # scorer=pairrm (extra `pairrm`)
    "deepspeed",  # distributed=zero2|zero3 (extra `deepspeed`, needs a CUDA toolchain)
    "submitit",  # hydra/launcher=slurm (extra `slurm`)
    "optuna",  # +sweep=simpo_optuna (extra `optuna`)
    "peft",  # LoRA adapters (optional)
    "bitsandbytes",  # 8-bit optimisers / quantised loading (optional, CUDA only)
    "liger_kernel",  # fused LM-head loss (optional, GPU)
    "flash_attn",  # attn_implementation=flash_attention_2 (optional, GPU)
    "trl",  # only the TRL-parity tests and bench compare against it (extra `test`/`bench`)
    "wandb",  # logger=wandb only; importing it costs seconds and starts its service
    "gguf",  # SmolLM2 GGUF conversion only (installed with --no-deps by make install-test)
    "matplotlib",  # PNG plots only; the Agg backend must be chosen before pyplot is imported
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not MODULES[module].name == "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str):
    """(node, imported module names, in_function) for every import statement of ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    in_function: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function.update(id(n) for n in ast.walk(fn) if n is not fn)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [a.name for a in node.names], id(node) in in_function
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            # `from pkg import submodule` imports the submodule; `from mod import name` the module.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            yield node, names, id(node) in in_function


def _graph() -> dict[str, set[str]]:
    return {m: {n for _, names, _ in _imports(m) for n in names if n in MODULES and n != m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_the_package():
    graph = _graph()
    assert "simpo_cli.cli" in graph and "simpo_cli.objectives.simpo" in graph
    assert "simpo_cli.objectives.registry" in graph["simpo_cli.objectives.simpo"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


# The package's layers, most basic first: a module imports only from its own layer or earlier ones
# (README "How it is built").
LAYERS = ["errors", "files", "optional", "objectives", "data", "models", "training", "evaluation", "config", "run", "sweeps",
          "stages", "cli", "__main__"]


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m != "simpo_cli" and m.split(".")[1] not in LAYERS] == []


def test_imports_only_point_down_the_layers():
    up = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps if _layer(d) > _layer(m)]
    assert up == []


def test_imports_at_module_top_except_optional_heavy_dependencies():
    bad = []
    for module in MODULES:
        for node, names, in_function in _imports(module):
            if in_function and any(n.split(".")[0] not in OPTIONAL_HEAVY for n in names):
                bad.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{node.lineno} {', '.join(names)}")
    assert bad == []


def test_no_private_names_from_other_modules():
    bad = []
    for module in MODULES:
        for node, _, _ in _imports(module):
            if isinstance(node, ast.ImportFrom) and _resolve(module, node).startswith("simpo_cli"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{module}:{node.lineno} {alias.name}")
    assert bad == []


def test_stage_entry_points_resolve():
    """The CLI names each stage's module as a string (so `simpo --help` loads no torch); each must
    exist and define what the lifecycle calls."""
    from simpo_cli.stages.spec import STAGES

    for spec in STAGES:
        mod = importlib.import_module(spec.module)
        assert callable(getattr(mod, spec.run)), spec.name


def test_cli_import_is_light():
    code = "import sys, simpo_cli.cli; print(sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
