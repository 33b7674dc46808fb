"""Files every layer reads or writes (bottom layer): the run directory's layout, one name per file,
and atomic writes (a reader never sees half a file)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# A run directory, as every stage writes it and every reader (eval, report, sweeps, resume) finds it.
CONFIG_FILE = "config.yaml"  # the resolved config the run started with
META_FILE = "meta.json"  # stage, status (running|completed|failed|interrupted), times, versions, results
METRICS_FILE = "metrics.jsonl"  # one JSON line per training log
MODEL_DIR = "model"  # final weights + tokenizer: what the next stage takes as model.name_or_path
CHECKPOINTS_DIR = "checkpoints"  # resumable training checkpoints (resume=auto)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
