"""Build the tiny byte-level BPE tokenizer shipped in ``simpo_cli/assets/tiny-tokenizer``.

Why: the demo and the test suite run on a 2-core CPU with no Hub access, so the tiny model needs a
small, real tokenizer that ships with the package. It is trained (deterministically) on the text of
the bundled LLaMA-Factory demo files (Apache-2.0): the preference pairs and the Alpaca SFT demo.

Run from the repository root:  python scripts/make_tiny_tokenizer.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "simpo_cli" / "assets"
OUT = ASSETS / "tiny-tokenizer"
VOCAB_SIZE = 4096
SPECIAL = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]

# Zephyr-style turns (as the alignment-handbook's default template) with a leading BOS and no
# newline after the final EOS, so a response rendered by this template ends exactly at EOS.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}"
    "{% if not loop.last %}{{ '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n<|assistant|>\n' }}{% endif %}"
)


def corpus() -> list[str]:
    texts: list[str] = []
    for rec in json.loads((ASSETS / "data" / "dpo_en_demo.json").read_text()):
        texts += [t["value"] for t in rec["conversations"]]
        texts += [rec["chosen"]["value"], rec["rejected"]["value"]]
    for rec in json.loads((ASSETS / "data" / "alpaca_en_demo.json").read_text()):
        texts += [rec["instruction"], rec["input"], rec["output"]]
    return [t for t in texts if t]


def main() -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=4096,
        chat_template=CHAT_TEMPLATE,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(OUT)
    # A generic class name keeps the folder loadable by any transformers 5.x AutoTokenizer.
    cfg_path = OUT / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    print(f"wrote {OUT} (vocab {len(fast)})")


if __name__ == "__main__":
    main()
