"""Dump what every stage composes (resolved, as plain containers) to JSON: every model with a recipe
(and the demo default) x every objective for `simpo train`, and the sft / generate-pairs / eval
defaults. tests/unit/config/test_composition_snapshot.py compares today's composition against the
snapshot taken before issue 24 moved beta/gamma under `objective` and folded conf/published/ into
the recipes (tests/unit/config/composition_snapshot.json).

    PYTHONPATH=. python scripts/config_snapshot.py tests/unit/config/composition_snapshot.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf


def cases() -> dict[str, tuple[str, list[str]]]:
    """``{case name: (config name, overrides)}``."""
    from simpo_cli.config import recipe_files
    from simpo_cli.config.schema import CONF_DIR

    settings = recipe_files.names()
    objectives = sorted(p.stem for p in (CONF_DIR / "objective").glob("*.yaml"))
    out: dict[str, tuple[str, list[str]]] = {"train": ("config", [])}
    for model in [None, *settings]:
        for objective in objectives:
            overrides = ([f"model={model}"] if model else []) + [f"objective={objective}"]
            out["train " + " ".join(overrides)] = ("config", overrides)
    for stage in ("sft", "generate-pairs", "eval"):
        out[stage] = (stage, [])
    return out


def composed(config_name: str, overrides: list[str]) -> dict:
    from tests.helpers import compose

    cfg = compose(overrides, config_name)
    out = OmegaConf.to_container(cfg, resolve=True)
    # paths.* derive from $HOME and the environment: kept as written, so the snapshot holds anywhere
    out["paths"] = OmegaConf.to_container(cfg.paths, resolve=False)
    return out


# Command lines whose provenance (the table a run prints, and meta.json's "provenance") is pinned
# too: group choices and keys on the command line, over a recipe and over the demo.
PROVENANCE_CASES = [
    ["model=llama3-instruct", "objective=rdpo", "hparams.learning_rate=5e-7", "model.name_or_path=/m"],
    ["hparams=mistral-base"],
    ["model=llama3-instruct", "hparams=mistral-base"],
    ["model=gemma2-9b-it", "data=demo-prefs"],
    ["model=llama3-instruct", "hparams.beta=3.0"],
    ["model=mistral-instruct", "hparams.gamma_beta_ratio=0.5"],
    ["hparams=llama3-instruct", "objective=dpo"],
    ["hparams=smollm2-cpu"],
    ["model=smollm2-135m-instruct", "hparams=smollm2-cpu", "data=local", "data.path=x.jsonl"],
    ["model=qwen3-8b", "objective=kto", "seed=3"],
]


def provenance_cases() -> dict[str, list[str]]:
    out = {name: overrides for name, (config, overrides) in cases().items() if config == "config"}
    out.update({"train " + " ".join(o): o for o in PROVENANCE_CASES})
    return out


def provenance_snapshot() -> dict[str, dict]:
    from simpo_cli.config.recipes import format_table, notes, provenance
    from tests.helpers import compose

    out = {}
    for name, overrides in provenance_cases().items():
        cfg = compose(overrides)
        table = provenance(cfg, overrides)
        out[name] = {"provenance": table, "notes": notes(cfg, table), "table": format_table(cfg, table)}
    return json.loads(json.dumps(out, default=str))


def snapshot() -> dict[str, dict]:
    return {name: composed(config, overrides) for name, (config, overrides) in cases().items()}


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(provenance_snapshot(), indent=1, sort_keys=True) + "\n")
