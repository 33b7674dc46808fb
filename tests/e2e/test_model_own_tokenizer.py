"""`simpo train model.name_or_path=<dir>` trains with the tokenizer in <dir>, not the tiny preset's
bundled one; a tokenizer whose ids do not fit the model's embedding is one line and exit 2."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from simpo_cli.data.records import resolve_path
from tests.helpers import FAST_TRAIN, run_dirs, run_simpo

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="module")
def own_model_dir(tmp_path_factory):
    """A 2-layer Llama with its own 700-token ChatML tokenizer (pad == eos, as SmolLM2)."""
    texts = []
    for rec in json.loads(open(resolve_path("pkg:data/dpo_en_demo.json")).read()):
        texts += [t["value"] for t in rec["conversations"]] + [rec["chosen"]["value"], rec["rejected"]["value"]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=700, special_tokens=["<|im_start|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", chat_template=CHATML)
    assert len(tok) == 700
    config = LlamaConfig(vocab_size=700, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("models") / "my-chatml-llama"
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_trains_with_the_models_own_tokenizer(own_model_dir, tmp_path):
    run_simpo(["train", f"model.name_or_path={own_model_dir}", *FAST_TRAIN, "trainer.evaluate=false"], tmp_path)
    (run,) = run_dirs(tmp_path / "outputs")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "completed"
    assert meta["model"]["name"] == "my-chatml-llama"  # not the preset's "tiny-llama"
    saved = AutoTokenizer.from_pretrained(run / "model")
    assert len(saved) == 700 and saved.eos_token == "<|im_end|>"
    assert json.loads((run / "model" / "config.json").read_text())["vocab_size"] == 700
    assert "name: my-chatml-llama" in (run / "config.yaml").read_text()


def test_mismatched_tokenizer_is_one_line_and_exit_2(own_model_dir, tmp_path):
    bundled = resolve_path("pkg:tiny-tokenizer")  # 4,096 tokens, named explicitly by path
    proc = run_simpo(["train", f"model.name_or_path={own_model_dir}", f"model.tokenizer={bundled}", *FAST_TRAIN],
                     tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "4096 tokens" in errors[0] and "embeds 700" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
