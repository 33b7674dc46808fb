"""On-disk cache of tokenised datasets, shared by the preference, unpaired and SFT builders."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable


def cached_dataset(cache_dir: str | None, folder: str, key: dict, build: Callable[[], tuple[dict, Any]],
                   load_stats: Callable[[dict], Any]):
    """``(dataset, stats)`` from ``cache_dir/folder/<sha256(key)>``, or ``build()`` → ``(columns, stats)``
    saved there. The entry is written under a unique temporary name and renamed, so a concurrent
    or killed writer never leaves a half-written entry visible. ``stats`` must have ``as_dict()``."""
    import datasets

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    cache = Path(cache_dir) / folder / digest if cache_dir else None
    if cache and (cache / "stats.json").is_file():
        stats = load_stats(json.loads((cache / "stats.json").read_text()))
        return datasets.load_from_disk(str(cache / "dataset")), stats
    cols, stats = build()
    ds = datasets.Dataset.from_dict(cols)
    if cache is None:
        return ds, stats
    tmp = cache.with_name(f"{cache.name}.tmp-{uuid.uuid4().hex[:8]}")
    ds.save_to_disk(str(tmp / "dataset"))
    (tmp / "stats.json").write_text(json.dumps(stats.as_dict()))
    if cache.exists():  # another process filled it first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(cache)
    return datasets.load_from_disk(str(cache / "dataset")), stats
