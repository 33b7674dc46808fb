"""The bundled IFEval-style training/dev prompts (``scripts/make_ifeval_prompts.py``): reproducible
from the script, valid IFEval records covering all 25 instruction types, and disjoint from IFEval."""

import json

from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

from scripts.make_ifeval_prompts import make
from simpo_cli.data.ifeval import load_prompts
from simpo_cli.models.loading import ASSETS

DIR = ASSETS / "data" / "ifeval-alpaca"


def _records(name):
    return [json.loads(line) for line in (DIR / f"{name}.jsonl").read_text().splitlines()]


def test_the_shipped_files_are_what_the_script_makes():
    made = make(seed=0)
    assert {name: _records(name) for name in ("train", "dev")} == made


def test_records_are_valid_ifeval_records_covering_every_instruction_type():
    for name in ("train", "dev"):
        prompts = load_prompts(DIR / f"{name}.jsonl")  # checks ids and kwargs
        assert all(1 <= len(p.instruction_id_list) <= 3 for p in prompts)
        assert {i for p in prompts for i in p.instruction_id_list} == set(INSTRUCTION_DICT)
    assert len(_records("train")) == 448 and len(_records("dev")) == 128


def test_no_prompt_or_request_is_one_of_ifevals_541_and_the_splits_share_no_request():
    ifeval = [json.loads(line)["prompt"] for line in
              (ASSETS / "benchmarks" / "ifeval" / "input_data.jsonl").read_text().splitlines()]
    assert len(ifeval) == 541
    requests = {name: [r["prompt"].split("\n\n")[0] for r in _records(name)] for name in ("train", "dev")}
    ours = [r["prompt"] for name in ("train", "dev") for r in _records(name)]
    assert not set(ours) & set(ifeval)
    assert not any(req in p for p in ifeval for reqs in requests.values() for req in reqs)
    assert not set(requests["train"]) & set(requests["dev"])
