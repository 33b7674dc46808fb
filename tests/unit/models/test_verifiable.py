"""The verifiable scorers without a model: TRL's reward-function calling convention, IFEval
rewards, and the errors for bad records and bad functions."""

import math

import pytest
from omegaconf import OmegaConf

from simpo_cli.data.prompts import PromptRecord
from simpo_cli.errors import DataError, UserError
from simpo_cli.models.reward import load_scorer, select_pair
from simpo_cli.models.verifiable import check_scorer_inputs

CALLS = []


# Written exactly as TRL's GRPOTrainer docs write them (conversational data: completion[0]["content"]).
def reward_len(completions, **kwargs):
    CALLS.append(kwargs)
    return [-abs(20 - len(completion[0]["content"])) for completion in completions]


def reward_answer(prompts, completions, answer, **kwargs):
    return [1.0 if completion == a else None for completion, a in zip(completions, answer)]


def reward_one(completions, **kwargs):
    return [1.0]


def _cfg(**kw):
    return OmegaConf.create({"name": kw.get("type"), "mode": "loose", "function": None, **kw})


def _records():
    chat = PromptRecord(0, [{"role": "user", "content": "hi"}], "a",
                        {"conversations": [{"from": "human", "value": "hi"}], "answer": "x", "level": 1})
    chat2 = PromptRecord(1, [{"role": "user", "content": "yo"}], "b",
                         {"conversations": [{"from": "human", "value": "yo"}], "answer": "y", "level": 2})
    return [chat, chat2]


def test_a_trl_reward_function_gets_trls_arguments():
    """TRL 1.16 GRPOTrainer._calculate_rewards calls fn(prompts=, completions=, completion_ids=,
    **columns, trainer_state=, log_extra=, log_metric=); columns repeat per completion, a prompt's
    completions are consecutive; conversational records get message lists."""
    CALLS.clear()
    scorer = load_scorer(_cfg(type="function", function=f"{__name__}:reward_len"))
    recs = _records()
    out = scorer.score_candidates([r.messages for r in recs], [["a" * 20, "b"], ["c" * 25, "d" * 20, "e"]],
                                  records=recs)
    assert out == [[0.0, -19.0], [-5.0, 0.0, -19.0]]
    (kw,) = CALLS
    assert set(kw) == {"prompts", "completion_ids", "conversations", "answer", "level", "trainer_state",
                       "log_extra", "log_metric"}
    assert kw["answer"] == ["x", "x", "y", "y", "y"] and kw["level"] == [1, 1, 2, 2, 2]
    assert kw["prompts"][2] == [{"role": "user", "content": "yo"}] and kw["completion_ids"] == [None] * 5


def test_plain_string_prompts_get_string_completions_and_none_is_nan():
    scorer = load_scorer(_cfg(type="function", function=f"{__name__}:reward_answer"))
    rec = PromptRecord(0, [{"role": "user", "content": "q"}], "a", {"prompt": "q", "answer": "x"})
    (scores,) = scorer.score_candidates([rec.messages], [["x", "z"]], records=[rec])
    assert scores[0] == 1.0 and math.isnan(scores[1])
    assert select_pair(["x", "z"], scores).dropped == "non-finite score"  # the existing rule


def test_ifeval_reward_is_the_fraction_followed_loose_or_strict():
    rec = PromptRecord(0, [{"role": "user", "content": "p"}], "a",
                       {"prompt": "p", "instruction_id_list": ["punctuation:no_comma", "startend:end_checker"],
                        "kwargs": [{}, {"end_phrase": "Bye."}]})
    cands = [["Hi. **Bye.**", "Hi, there", "Hi. Bye."]]
    loose = load_scorer(_cfg(type="ifeval", mode="loose")).score_candidates([rec.messages], cands, records=[rec])
    strict = load_scorer(_cfg(type="ifeval", mode="strict")).score_candidates([rec.messages], cands, records=[rec])
    assert loose == [[1.0, 0.0, 1.0]] and strict == [[0.5, 0.0, 1.0]]
    sel = select_pair(cands[0], loose[0])
    assert (sel.chosen, sel.rejected) == (0, 1)  # among equal scores the lowest index wins


def test_bad_inputs_are_one_clear_error():
    recs = [PromptRecord(0, [{"role": "user", "content": "p"}], "a",
                         {"prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}),
            PromptRecord(7, [{"role": "user", "content": "p"}], "b", {"prompt": "p", "instruction_id_list": []})]
    with pytest.raises(DataError, match=r"^f.jsonl: record 7: field 'instruction_id_list'"):
        check_scorer_inputs(_cfg(type="ifeval"), recs, "f.jsonl")
    with pytest.raises(UserError, match="has no attribute 'missing'"):
        check_scorer_inputs(_cfg(type="function", function=f"{__name__}:missing"), recs, "f.jsonl")
    with pytest.raises(UserError, match="package.module:name"):
        check_scorer_inputs(_cfg(type="function", function="no_colon"), recs, "f.jsonl")
    scorer = load_scorer(_cfg(type="function", function=f"{__name__}:reward_one"))
    with pytest.raises(UserError, match="returned 1 rewards for 2 completions"):
        scorer.score_candidates([recs[0].messages], [["a", "b"]], records=[recs[0]])


def test_config_checks_name_the_missing_function_and_a_bad_mode():
    from simpo_cli.config.checks import validate_generate_pairs
    from simpo_cli.errors import ConfigError
    from tests.helpers import compose

    with pytest.raises(ConfigError, match="scorer=function needs scorer.function=package.module:name"):
        validate_generate_pairs(compose(["scorer=function"], "generate-pairs"))
    with pytest.raises(ConfigError, match="scorer.mode must be loose or strict, got 'lose'"):
        validate_generate_pairs(compose(["scorer=ifeval", "scorer.mode=lose"], "generate-pairs"))
    validate_generate_pairs(compose(["scorer=ifeval", "data=ifeval-demo-prompts"], "generate-pairs"))  # no model needed
