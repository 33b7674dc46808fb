"""Build the bundled IFEval-style training and dev prompts (``simpo_cli/assets/data/ifeval-alpaca/``)
for ``experiment=smollm2-ifeval``: a request from the bundled Alpaca demo file (LLaMA-Factory
``alpaca_en_demo.json``, Apache-2.0; records without an ``input``, 20-300 characters, each
request once), followed by
1-3 verifiable instructions written by ``if-verifiable``'s own instruction classes
(``INSTRUCTION_DICT[id](id).build_description()`` with the kwargs it samples, recorded with
``get_instruction_args()``), never two that IFEval lists as conflicting. Every one of the 25
instruction types is dealt from a shuffled deck, so each split covers all of them.

Deterministic (``--seed``, Python's ``random``, which if-verifiable samples from):
    python scripts/make_ifeval_prompts.py            # rewrites train.jsonl and dev.jsonl
No request is one of IFEval's 541 prompts (tests/unit/data/test_ifeval_alpaca_prompts.py).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS, INSTRUCTION_DICT

ASSETS = Path(__file__).resolve().parents[1] / "simpo_cli" / "assets" / "data"
SOURCE = ASSETS / "alpaca_en_demo.json"
OUT = ASSETS / "ifeval-alpaca"
DEV_SIZE = 128
COUNTS = (1, 1, 2, 2, 3)  # instructions per prompt, drawn uniformly from this list (mean 1.8; IFEval's 541: 1.54)


def requests(path: Path = SOURCE) -> list[tuple[int, str]]:
    """(index in the source, instruction) of the Alpaca records usable as a request."""
    records, seen, out = json.loads(path.read_text()), set(), []
    for i, r in enumerate(records):
        text = r["instruction"].strip()
        if not r["input"].strip() and 20 <= len(text) <= 300 and text not in seen:  # the file repeats some
            seen.add(text)
            out.append((i, text))
    return out


def conflicts(a: str, b: str) -> bool:
    return b in INSTRUCTION_CONFLICTS.get(a, ()) or a in INSTRUCTION_CONFLICTS.get(b, ())


def build(request: str, ids: list[str]) -> tuple[str, list[dict]]:
    """The prompt (request, blank line, the instructions' descriptions) and each one's kwargs."""
    descriptions, kwargs = [], []
    for iid in ids:
        inst = INSTRUCTION_DICT[iid](iid)
        if iid == "combination:repeat_prompt":
            text = inst.build_description(prompt_to_repeat=request)
        else:
            text = inst.build_description()
        args = inst.get_instruction_args() or {}
        descriptions.append(text.strip())
        kwargs.append({k: v for k, v in args.items() if v is not None})
    return request + "\n\n" + " ".join(descriptions), kwargs


def make(seed: int = 0) -> dict[str, list[dict]]:
    random.seed(seed)
    pool = requests()
    random.shuffle(pool)
    splits = {"dev": pool[:DEV_SIZE], "train": pool[DEV_SIZE:]}
    out: dict[str, list[dict]] = {}
    types = sorted(INSTRUCTION_DICT)
    for name, items in splits.items():
        deck: list[str] = []
        records = []
        for n, (index, request) in enumerate(items):
            if not deck:
                deck = random.sample(types, len(types))
            ids = [deck.pop()]
            for _ in range(random.choice(COUNTS) - 1):
                options = [t for t in types if not any(conflicts(t, i) for i in ids)]
                if not options:  # e.g. after an instruction that conflicts with every other
                    break
                ids.append(random.choice(options))
            prompt, kwargs = build(request, ids)
            records.append({"key": (1 if name == "train" else 2) * 100000 + n,
                            "prompt_id": f"ifeval-alpaca-{name}-{n:04d}", "prompt": prompt,
                            "instruction_id_list": ids, "kwargs": kwargs,
                            "source": f"alpaca_en_demo.json[{index}]"})
        out[name] = records
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, records in make(args.seed).items():
        path = args.out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        print(f"{path}: {len(records)} prompts, {sum(len(r['instruction_id_list']) for r in records)} instructions")


if __name__ == "__main__":
    main()
