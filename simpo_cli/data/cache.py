"""On-disk cache of tokenised datasets, shared by the preference, unpaired and SFT builders, and the
fingerprints (data file, tokenizer) its keys and ``meta.json`` are built from."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import datasets
from datasets.fingerprint import Hasher

from simpo_cli.data.records import is_local, jsonl_shards, resolve_path


def cached_dataset(cache_dir: str | None, folder: str, key: dict, build: Callable[[], tuple[dict, Any]],
                   load_stats: Callable[[dict], Any]):
    """``(dataset, stats)`` from ``cache_dir/folder/<sha256(key)>``, or ``build()`` → ``(columns, stats)``
    saved there. The entry is written under a unique temporary name and renamed, so a concurrent
    or killed writer never leaves a half-written entry visible. ``stats`` must have ``as_dict()``."""
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


def data_fingerprint(data_cfg, split: str) -> str:
    """Content hash of a local file, or ``id[split]`` for a Hub dataset."""
    if is_local(data_cfg.path):
        file = Path(resolve_path(data_cfg.path))
        if file.is_file():
            return "sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()
        if file.is_dir():  # a directory of JSONL shards: hash names and contents in order
            digest = hashlib.sha256()
            for shard in jsonl_shards(file):
                digest.update(shard.name.encode() + b"\0" + shard.read_bytes() + b"\0")
            return "sha256:" + digest.hexdigest()
    return f"hub:{data_cfg.path}[{split}]"


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of what changes the tokens: vocabulary, chat template, BOS and EOS ids."""
    return Hasher.hash((tokenizer.get_vocab(), tokenizer.chat_template, tokenizer.bos_token_id,
                        tokenizer.eos_token_id))
