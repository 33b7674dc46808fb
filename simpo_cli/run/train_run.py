"""``simpo eval model=<train run>``: the run's saved ``config.yaml`` is the base of eval's composition.

Hydra composes eval like every stage. The run's ``model``, ``data``, ``objective`` and ``hparams``
sections become one option of their group, ``train-run`` (stored in Hydra's ConfigStore, typed by
the group's schema as a YAML option is), and the command line selects them::

    simpo eval model=<run> objective.beta=3 data=local data.path=held.jsonl
    -> model=train-run objective=train-run hparams=train-run seed=<run's seed> source_run=<run>
       objective.beta=3 data=local data.path=held.jsonl

A group chosen on the command line (``data=local``) takes the composed option instead; a key
(``objective.beta=3``) is set on top of the run's value, by Hydra. The policy is ``<run>/model``
(its saved tokenizer next to it); ``source_run`` tells the job whose starting model is the
reference, and the run directory defaults to ``<run>/eval/<date>/<time>``.
"""

from __future__ import annotations

from datetime import datetime

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from simpo_cli.errors import ConfigError
from simpo_cli.files import MODEL_DIR
from simpo_cli.objectives import OBJECTIVES
from simpo_cli.run.rundir import RunRecord

OPTION = "train-run"  # the group option holding the run's section
SECTIONS = ("model", "data", "objective", "hparams")


def _node(section: str, value: dict) -> dict:
    """A group option made of a saved section, with the defaults list its YAML options have."""
    schema = f"/objective_schema/{value.get('name')}@_here_" if section == "objective" else f"base_{section}"
    return {"defaults": [schema, "_self_"], **value}


def train_run_overrides(record: RunRecord, args: list[str], quote) -> list[str]:
    """The overrides that put ``record``'s saved config under the command line's ``args`` (the
    overrides other than ``model=<run>``). Stores the run's sections in Hydra's ConfigStore.
    Raises ``ConfigError`` for a run without ``config.yaml`` or ``model/``."""
    where = str(record.path)
    saved = record.config()
    if saved is None:
        raise ConfigError([f"model={where}: no config.yaml there; pass a `simpo train` run directory"])
    if not record.model_dir.is_dir():
        raise ConfigError([f"model={where}: no model/ directory (run status: {record.status or 'unknown'}; "
                           "was it trained with trainer.save_model=false?)"])
    saved = OmegaConf.to_container(saved, resolve=True)
    name = (saved.get("objective") or {}).get("name")
    if "objective" in saved and name not in OBJECTIVES:
        raise ConfigError([f"model={where}: config.yaml uses objective '{name}', which this version of "
                           f"simpo-cli does not know (known: {', '.join(sorted(OBJECTIVES))})"])
    keys = {a.partition("=")[0].lstrip("+~") for a in args}
    cs = ConfigStore.instance()
    out = []
    for section in SECTIONS:
        if section in saved and section not in keys:
            value = dict(saved[section])
            if section == "model":  # the trained weights, with the tokenizer saved next to them
                value.update(name_or_path=str(record.path / MODEL_DIR), tokenizer=None)
            cs.store(group=section, name=OPTION, node=_node(section, value))
            out.append(f"{section}={OPTION}")
    if "seed" in saved and "seed" not in keys:
        out.append(f"seed={saved['seed']}")
    out.append(f"source_run={quote(where)}")
    # next to the trained model, unless the command line names the run directory
    stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    multirun = bool({"-m", "--multirun"} & set(args))
    key, sub = ("hydra.sweep.dir", "eval/multirun") if multirun else ("hydra.run.dir", "eval")
    if key not in keys:
        out.append(f"{key}={quote(str(record.path / sub / stamp))}")
    return out
