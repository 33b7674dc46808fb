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
