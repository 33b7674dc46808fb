"""IFEval end to end on the tiny model (the real CLI where the command line matters):
``simpo eval eval.benchmarks=[ifeval]`` (alone, and on a train run: before, after, paired difference, the start's answers cached) and
``simpo generate-pairs`` with the verifiable scorers ``ifeval`` and ``function`` (a reward function
written exactly as for TRL's GRPOTrainer)."""

import json

import pytest

from simpo_cli.evaluation.ifeval import METRICS
from tests.helpers import FAST_TRAIN, read_jsonl, run_dirs, run_simpo

IFEVAL = ["eval.pairs=false", "eval.benchmarks=[ifeval]", "eval.limit=4", "eval.max_new_tokens=8"]


def test_eval_scores_ifeval_and_writes_the_reference_files(tmp_path):
    proc = run_simpo(["eval", *IFEVAL, "paths.output_root=out"], tmp_path)
    (out,) = run_dirs(tmp_path / "out" / "eval")
    s = json.loads((out / "eval.json").read_text())["benchmarks"]["ifeval"]
    res = s["ifeval"]
    assert s["n_prompts"] == 4 and s["temperatures"] == {"0.0": 4} and s["length_tokens"]["max"] <= 8
    assert res["n_prompts"] == 4 and res["n_unavailable"] == 0 and res["unavailable_reason"] is None
    for k in METRICS:
        v, (lo, hi) = res["metrics"][k]["value"], res["metrics"][k]["ci"]
        assert 0 <= lo <= v <= hi <= 1
        assert f"ifeval {k}" in proc.stdout
    assert res["length_words"]["n"] == 4 and "before" not in res  # no train run: no starting model
    responses = read_jsonl(out / "ifeval/input_response_data.jsonl")
    strict = read_jsonl(out / "ifeval/eval_results_strict.jsonl")
    assert [set(r) for r in responses] == [{"prompt", "response"}] * 4
    assert [r["prompt"] for r in strict] == [r["prompt"] for r in responses]
    # the metrics are the files' own counts
    assert res["metrics"]["prompt_strict"]["value"] == sum(r["follow_all_instructions"] for r in strict) / 4
    n = sum(len(r["follow_instruction_list"]) for r in strict)
    assert res["metrics"]["instruction_strict"]["value"] == sum(sum(r["follow_instruction_list"]) for r in strict) / n
    report = (out / "report.md").read_text()
    assert "## IFEval" in report and "instruction type" in report and "prompt_loose" in report


def test_before_after_in_process_with_the_start_cached(tmp_path, tiny_model, tiny_tokenizer):
    """The fast variant of the test below: policy and reference are two local tiny models (the
    reference a differently seeded one); the second eval reads the reference's answers from the
    cache and gives identical numbers."""
    from simpo_cli.config.schema import TinyModelConfig
    from simpo_cli.models.loading import build_tiny_model
    from simpo_cli.stages.eval import run_eval
    from tests.helpers import compose

    for name, model in (("policy", tiny_model), ("start", build_tiny_model(TinyModelConfig(seed=5), tiny_tokenizer))):
        model.save_pretrained(tmp_path / name)
        tiny_tokenizer.save_pretrained(tmp_path / name)
    args = [f"model.name_or_path={tmp_path / 'policy'}", f"reference.name_or_path={tmp_path / 'start'}",
            *IFEVAL, f"paths.cache_dir={tmp_path / 'cache'}"]
    a = run_eval(compose(args, "eval"), tmp_path / "a").summary["benchmarks"]["ifeval"]["ifeval"]
    (key,) = [p.stem for p in (tmp_path / "cache/ifeval").iterdir()]
    b = run_eval(compose(args, "eval"), tmp_path / "b").summary["benchmarks"]["ifeval"]["ifeval"]
    assert a == b and a["before"]["model"] == str(tmp_path / "start")
    before = read_jsonl(tmp_path / "a/ifeval/before/input_response_data.jsonl")
    after = read_jsonl(tmp_path / "a/ifeval/input_response_data.jsonl")
    assert [r["response"] for r in before] != [r["response"] for r in after]  # two different models
    cached = json.loads((tmp_path / f"cache/ifeval/{key}.json").read_text())
    assert cached["answers"] == [r["response"] for r in before]
    for k in METRICS:
        d = a["paired"][k]
        assert d["difference"] == pytest.approx(a["metrics"][k]["value"] - a["before"]["metrics"][k]["value"])
        assert d["ci"][0] <= d["difference"] <= d["ci"][1]
    # another decoding setting is another cache entry
    run_eval(compose([*args, "eval.max_new_tokens=6"], "eval"), tmp_path / "c")
    assert len(list((tmp_path / "cache/ifeval").iterdir())) == 2


@pytest.mark.slow
def test_eval_of_a_train_run_compares_with_its_starting_model_once(tmp_path):
    run_simpo(["train", *FAST_TRAIN, "trainer.evaluate=false", "paths.output_root=out"], tmp_path)
    (run,) = run_dirs(tmp_path / "out")
    first = run_simpo(["eval", f"model={run}", *IFEVAL], tmp_path)
    assert "starting model's answers from the cache" not in first.stderr + first.stdout
    (cached,) = (tmp_path / "cache" / "ifeval").iterdir()
    second = run_simpo(["eval", f"model={run}", *IFEVAL], tmp_path)
    assert "starting model's answers from the cache" in second.stderr + second.stdout
    outs = sorted(run_dirs(run / "eval"))
    assert len(outs) == 2
    a, b = (json.loads((o / "eval.json").read_text())["benchmarks"]["ifeval"]["ifeval"] for o in outs)
    assert a == b  # the cached start scores exactly as the generated one
    assert a["before"]["model"].startswith("tiny:") and set(a["paired"]) == set(METRICS)
    for k in METRICS:
        d = a["paired"][k]
        assert d["difference"] == pytest.approx(a["metrics"][k]["value"] - a["before"]["metrics"][k]["value"])
        assert d["ci"][0] <= d["difference"] <= d["ci"][1]
    mc = a["paired"]["prompt_strict"]["mcnemar"]
    assert 0 <= mc["p_value"] <= 1 and mc["gained"] + mc["lost"] <= 4
    assert (outs[0] / "ifeval/before/eval_results_loose.jsonl").is_file()
    assert "Before → after" in (outs[0] / "report.md").read_text() and "starting model" in second.stdout


# Instructions a random tiny model's 12-token answers follow sometimes, so candidates differ.
PROMPTS = [{"prompt": f"Say something about topic {i}.", "topic": i,
            "instruction_id_list": ["length_constraints:number_words", "keywords:letter_frequency"],
            "kwargs": [{"relation": "less than", "num_words": 6},
                       {"letter": "e", "let_frequency": 3, "let_relation": "at least"}]} for i in range(6)]

# Exactly as TRL's GRPOTrainer documentation writes reward functions: standard-format data gets
# completions as strings; dataset columns arrive as keyword lists.
TRL_REWARDS = '''
def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]


def reward_topic(prompts, completions, topic, **kwargs):
    assert len(prompts) == len(completions) == len(topic) == len(kwargs["completion_ids"])
    assert kwargs["trainer_state"] is None and callable(kwargs["log_metric"])
    return [len(c) % 7 + t for c, t in zip(completions, topic)]
'''


def _generate(tmp_path, scorer: list[str]) -> tuple[dict, list[dict]]:
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    run_simpo(["generate-pairs", "data=ifeval-demo-prompts", f"data.path={tmp_path / 'prompts.jsonl'}", *scorer,
               "generation.n=4", "generation.max_new_tokens=12", "progress_bar=false", "run_dir=gen"], tmp_path)
    meta = json.loads((tmp_path / "gen/meta.json").read_text())
    return meta, read_jsonl(tmp_path / "gen/candidates/candidates-00000.jsonl")


def test_generate_pairs_with_the_ifeval_scorer(tmp_path):
    from simpo_cli.data.ifeval import IFEvalPrompt, score_response

    meta, cands = _generate(tmp_path, ["scorer=ifeval", "scorer.mode=strict"])
    assert meta["prompts"] == 6 and meta["pairs"] + sum(meta["dropped"].values()) == 6 and meta["pairs"] >= 1
    item = IFEvalPrompt(0, "", tuple(PROMPTS[0]["instruction_id_list"]), tuple(PROMPTS[0]["kwargs"]))
    for c in cands[0]["candidates"]:  # the reward is the fraction of instructions followed, strict
        strict, _ = score_response(item, c["text"])
        assert c["score"] == sum(strict) / 2
    for r in cands:
        if r["dropped"] is None:
            assert r["candidates"][r["chosen"]]["score"] > r["candidates"][r["rejected"]]["score"]


def test_generate_pairs_with_a_trl_reward_function(tmp_path, monkeypatch):
    """In process (the CLI path is the ifeval test's): the function module is found on sys.path."""
    from simpo_cli.stages.generate_pairs import run_generate_pairs
    from tests.helpers import compose

    (tmp_path / "trl_rewards.py").write_text(TRL_REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    cfg = compose(["data=ifeval-demo-prompts", f"data.path={tmp_path / 'prompts.jsonl'}", "scorer=function",
                   "scorer.function=trl_rewards:reward_topic", "generation.n=4", "generation.max_new_tokens=12",
                   "progress_bar=false", f"paths.cache_dir={tmp_path / 'cache'}"],
                  "generate-pairs")
    result = run_generate_pairs(cfg, tmp_path / "gen")
    assert result.pairs >= 1
    for r in read_jsonl(tmp_path / "gen/candidates/candidates-00000.jsonl"):
        for c in r["candidates"]:
            assert c["score"] == len(c["text"]) % 7 + r["source_index"]


def test_a_record_without_ifeval_fields_is_one_error_before_any_model(tmp_path):
    from simpo_cli.errors import DataError
    from simpo_cli.stages.generate_pairs import run_generate_pairs
    from tests.helpers import compose

    cfg = compose(["data.max_samples=2", "scorer=ifeval", "progress_bar=false",
                   f"paths.cache_dir={tmp_path / 'cache'}"], "generate-pairs")
    with pytest.raises(DataError) as e:
        run_generate_pairs(cfg, tmp_path / "gen")
    assert str(e.value) == ("pkg:data/dpo_en_demo.json: record 0: field 'instruction_id_list': missing or not a "
                            "non-empty list of IFEval instruction ids")
    assert not (tmp_path / "gen/candidates").exists()
