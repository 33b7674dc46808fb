"""The chain of an experiment (``simpo_cli/stages/chain.py``): hand-offs by reference, rounds unrolled,
what a rerun does with each step; and the whole chain checked in preflight before stage 1."""

import pytest
from omegaconf import OmegaConf

from simpo_cli.errors import ConfigError
from simpo_cli.stages.chain import decide, expand, experiment_problems, format_value, step_args
from tests.helpers import compose


def test_handoffs_resolve_to_the_nearest_earlier_step_and_never_become_overrides():
    steps = expand([
        {"sft": {"data": "alpaca-demo"}},
        {"generate-pairs": {"model": "from sft", "generation": {"n": 4, "temperature": 0.8}}},
        {"train": {"model": "from sft", "data": "from generate-pairs", "objective": "simpo"}},
        {"eval": {"model": "from train", "eval.benchmarks": ["ifeval", "ifeval_dev"], "eval.limit": None}},
    ])
    assert [s.dir_name for s in steps] == ["01-sft", "02-generate-pairs", "03-train", "04-eval"]
    assert steps[1].overrides == ["generation.n=4", "generation.temperature=0.8"]  # nested keys flatten
    assert steps[1].inputs == {"model": 1}
    assert steps[2].inputs == {"model": 1, "data": 2} and steps[2].overrides == ["objective=simpo"]
    assert steps[3].overrides == ["eval.benchmarks=[ifeval,ifeval_dev]"]  # null: the stage's default
    args = step_args(steps[2], steps, lambda s: f"/exp/{s.dir_name}")
    assert args == ["objective=simpo", "model=/exp/01-sft", "data=/exp/02-generate-pairs", "resume=auto"]
    assert step_args(steps[3], steps, lambda s: f"/exp/{s.dir_name}")[-1] == "model=/exp/03-train"  # eval: no resume


def test_rounds_repeat_the_block_each_round_from_the_previous_policy():
    steps = expand([
        {"eval": {}},
        {"rounds": 3, "stages": [{"generate-pairs": {"data": "ifeval-demo-prompts"}},
                                 {"train": {"data": "from generate-pairs"}}]},
        {"eval": {"model": "from train"}},
    ])
    assert [s.dir_name for s in steps] == ["01-eval", "02-generate-pairs-r1", "03-train-r1", "04-generate-pairs-r2",
                                           "05-train-r2", "06-generate-pairs-r3", "07-train-r3", "08-eval"]
    by = {s.dir_name: s for s in steps}
    assert by["02-generate-pairs-r1"].inputs == {} and by["03-train-r1"].inputs == {"data": 2}
    assert by["04-generate-pairs-r2"].inputs == {"model": 3}  # samples from round 1's policy
    assert by["05-train-r2"].inputs == {"data": 4, "model": 3}  # trains on round 2's pairs from it
    assert by["07-train-r3"].inputs == {"data": 6, "model": 5} and by["08-eval"].inputs == {"model": 7}


def test_chain_mistakes_are_all_reported_with_their_place():
    with pytest.raises(ConfigError) as e:
        expand([{"trian": {}}, {"train": {"data": "from sft"}}, {"eval": {"model": "from train", "tokenizer": "from sft"}},
                {"rounds": 0, "stages": [{"train": {}}]}, {"generate-pairs": {"model": "from train"}, "x": 1}])
    problems = e.value.problems
    assert problems[0].startswith("stages[1]: unknown stage 'trian'; choose from: train, sft, generate-pairs, eval")
    assert "stage 1 (train): data: from sft: a data comes from generate-pairs" in problems
    assert "stage 2 (eval): tokenizer: from sft: only model, data are handed off between stages" in problems
    assert "stages[4]: rounds must be an integer >= 1, got 0" in problems
    assert any(p.startswith("stages[5]: a stage entry is one mapping") for p in problems)
    with pytest.raises(ConfigError, match=r"stage 1 \(eval\): model: from train: no earlier train stage"):
        expand([{"eval": {"model": "from train"}}])


@pytest.mark.parametrize("status, action", [("completed", "skip"), ("running", "resume"), ("failed", "resume"),
                                            ("interrupted", "resume"), (None, "start")])
def test_a_rerun_skips_completed_steps_and_resumes_started_ones(status, action):
    assert decide(status) == action


def test_values_become_hydra_override_values():
    assert [format_value(v) for v in (True, None, 2e-5, ["a", "b"], "pkg:data/x.jsonl", "a b")] == \
        ["true", "null", "2e-05", "[a,b]", "pkg:data/x.jsonl", "'a b'"]


def _smoke(**changes):
    cfg = compose(["experiment=ifeval-smoke"], "run")
    OmegaConf.set_struct(cfg, False)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def test_preflight_checks_every_stage_before_the_first_one_starts():
    assert experiment_problems(_smoke()) == []
    # a mistake in stage 3 and one in stage 2, each named by its stage; stage 2's model and data
    # come from earlier stages and are not reported missing
    problems = experiment_problems(_smoke(eval_limit=0, learning_rate=-1.0))
    assert problems == ["stage 2 (train): hparams.learning_rate must be > 0, got -1.0",
                        "stage 3 (eval): eval.limit must be >= 1, got 0"]
    cfg = _smoke()
    cfg.stages[0]["generate-pairs"]["scorer"] = "nope"
    (problem,) = experiment_problems(cfg)
    assert problem.startswith("stage 1 (generate-pairs): unknown scorer option 'nope'; choose from:")


def test_the_smollm2_experiment_is_valid_and_chains_pairs_train_eval():
    cfg = compose(["experiment=smollm2-ifeval"], "run")
    assert experiment_problems(cfg) == []
    steps = expand(OmegaConf.to_container(cfg.stages, resolve=True))
    assert [s.dir_name for s in steps] == ["01-generate-pairs-r1", "02-train-r1", "03-eval"]
    assert {"scorer=ifeval", "generation.n=4", "generation.temperature=0.8"} <= set(steps[0].overrides)
    assert "objective=simpo" in steps[1].overrides and not any("beta" in o or "gamma" in o for o in steps[1].overrides)
    assert steps[2].inputs == {"model": 2} and "eval.benchmarks=[ifeval,ifeval_dev]" in steps[2].overrides
    two = expand(OmegaConf.to_container(compose(["experiment=smollm2-ifeval", "rounds=2", "objective=dpo"], "run").stages,
                                        resolve=True))
    assert [s.dir_name for s in two][-2:] == ["04-train-r2", "05-eval"] and two[3].inputs == {"model": 2, "data": 3}
    assert "objective=dpo" in two[1].overrides
