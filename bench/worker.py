"""One benchmark configuration in its own process, so its peak RSS is its own.

``python -m bench.worker --impl simpo --vocab 32000 ...`` prints one JSON line:
``{"impl", "vocab", "s_per_step", "tokens_per_s", "peak_rss_gb", "step_times", ...}``.
Every implementation trains the same tiny Llama (``build_tiny_model``, same seed, eager attention)
on the same synthetic pairs (BOS + ``prompt_len - 1`` words, responses of ``response_len - 1``
words + EOS, so every row is exactly ``prompt_len + response_len`` tokens) with a word-level
tokenizer of exactly ``vocab`` tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

IMPLS = ("simpo", "dpo-cached", "trl-cpo-simpo", "trl-dpo")


def make_tokenizer(vocab: int, path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    words.update({f"w{i}": i for i in range(4, vocab)})
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(str(path))
    assert len(fast) == vocab
    return fast


def make_pairs(n: int, vocab: int, prompt_len: int, response_len: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(k):
        return " ".join(f"w{rng.randrange(4, vocab)}" for _ in range(k))

    return [{"prompt": text(prompt_len - 1), "chosen": text(response_len - 1),
             "rejected": text(response_len - 1)} for _ in range(n)]


class StepTimer:
    """Wall time between consecutive optimizer-step ends (data loading, forward, backward, optimizer)."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                timer.marks.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kw):
                timer.marks.append(time.perf_counter())

        self.marks: list[float] = []
        self.callback = _CB()

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def tiny_cfg(args):
    from simpo_cli.config.schema import TinyModelConfig

    return TinyModelConfig(architecture="llama", hidden_size=args.hidden, intermediate_size=args.intermediate,
                           num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=max(4096, args.prompt_len + args.response_len), seed=0)


def build_model(args, tokenizer):
    import torch

    from simpo_cli.models.loading import build_tiny_model

    model = build_tiny_model(tiny_cfg(args), tokenizer)
    # build_tiny_model picks eager attention (tests compare exact numbers); the bench measures the
    # default attention of a real run.
    model.set_attn_implementation(args.attn)
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    return model


def common_args(args, out: Path) -> dict:
    return dict(output_dir=str(out / "trainer"), per_device_train_batch_size=args.batch,
                max_steps=args.warmup + args.steps, learning_rate=1e-4, lr_scheduler_type="constant",
                logging_steps=10_000, save_strategy="no", report_to="none", disable_tqdm=True,
                use_cpu=args.device == "cpu", bf16=args.dtype == "bf16", dataloader_num_workers=0,
                # TRL's configs default to gradient checkpointing; ours runs without it.
                gradient_checkpointing=False, seed=0)


def run_ours(args, work: Path, pairs: list[dict], timer: StepTimer):
    """Our ``simpo train`` path: the composed Hydra config, ``build_preference_dataset``,
    ``training_arguments`` and ``PreferenceTrainer`` exactly as ``run_train`` wires them."""
    import torch
    from hydra import compose, initialize_config_dir

    from simpo_cli.config.schema import CONF_DIR

    from simpo_cli.config.store import register_configs
    from simpo_cli.data.preference import PreferenceCollator, build_preference_dataset
    from simpo_cli.training.logps import sequence_logps
    from simpo_cli.models.loading import load_tokenizer
    from simpo_cli.objectives import OBJECTIVES
    from simpo_cli.run.rundir import RunDir
    from simpo_cli.training.common import training_arguments
    from simpo_cli.training.trainer import PreferenceTrainer

    objective = "simpo" if args.impl == "simpo" else "dpo"
    if objective not in OBJECTIVES:
        return {"skipped": f"objective '{objective}' is not registered on this branch"}
    data_file = work / "pairs.jsonl"
    data_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    overrides = [
        f"objective={objective}", f"model.tokenizer={work / 'tok'}",
        f"model.tiny.hidden_size={args.hidden}", f"model.tiny.intermediate_size={args.intermediate}",
        f"model.tiny.num_hidden_layers={args.layers}",
        f"model.tiny.max_position_embeddings={max(4096, args.prompt_len + args.response_len)}",
        "data=local", f"data.path={data_file}", "data.chat_template=never",
        f"hparams.max_length={args.prompt_len + args.response_len}",
        f"hparams.max_prompt_length={args.prompt_len}",
        f"hparams.per_device_train_batch_size={args.batch}", "hparams.gradient_accumulation_steps=1",
        "hparams.global_batch_size=null", "hparams.learning_rate=1e-4", "hparams.lr_scheduler_type=constant",
        "hparams.warmup_ratio=0.0", f"trainer.max_steps={args.warmup + args.steps}",
        "trainer.logging_steps=10000", "trainer.progress_bar=false", f"trainer.bf16={args.dtype == 'bf16'}",
        f"trainer.use_cpu={args.device == 'cpu'}", f"paths.cache_dir={work / 'cache'}",
    ]
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    from simpo_cli.config.checks import resolve_objective

    resolve_objective(cfg)
    tokenizer = load_tokenizer(cfg.model)
    train_ds, _ = build_preference_dataset(cfg.data, tokenizer, cfg.hparams, cfg.paths.cache_dir)
    model = build_model(args, tokenizer)
    if OBJECTIVES[objective].needs_reference:
        # The reference is the starting policy; its log-probs are computed once, with the same
        # fast path, and travel with the data (the cached-reference setting).
        collate = PreferenceCollator(tokenizer.pad_token_id)
        ref_c, ref_r = [], []
        model.eval()
        with torch.no_grad():
            for i in range(0, len(train_ds), args.batch):
                batch = collate([train_ds[j] for j in range(i, min(i + args.batch, len(train_ds)))])
                out = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])
                b = batch["input_ids"].shape[0] // 2
                ref_c += out.logps[:b].tolist()
                ref_r += out.logps[b:].tolist()
        model.train()
        train_ds = train_ds.add_column("ref_chosen_logps", ref_c).add_column("ref_rejected_logps", ref_r)
    run = RunDir(work / "run")
    trainer = PreferenceTrainer(
        model=model, args=training_arguments(cfg, run), data_collator=PreferenceCollator(tokenizer.pad_token_id),
        train_dataset=train_ds, processing_class=tokenizer, callbacks=[timer.callback],
        objective=OBJECTIVES[objective], objective_kwargs=OBJECTIVES[objective].kwargs(cfg.objective),
    )
    output = trainer.train()
    return {"train_loss": output.training_loss}


def run_trl(args, work: Path, pairs: list[dict], timer: StepTimer):
    import datasets

    tokenizer = make_tokenizer(args.vocab, work / "tok")
    model = build_model(args, tokenizer)
    ds = datasets.Dataset.from_list(pairs)
    max_length = args.prompt_len + args.response_len
    if args.impl == "trl-cpo-simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        cfg = CPOConfig(loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=1.0, max_length=max_length,
                        **common_args(args, work))
        trainer = CPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tokenizer,
                             callbacks=[timer.callback])
    else:
        from trl import DPOConfig, DPOTrainer

        cfg = DPOConfig(loss_type=["sigmoid"], beta=0.1, max_length=max_length, **common_args(args, work))
        import copy

        # The reference is a frozen copy of the starting policy, run every step (TRL's default
        # setting; its model-path loader cannot rebuild a model made in code).
        trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model).eval(), args=cfg, train_dataset=ds,
                             processing_class=tokenizer, callbacks=[timer.callback])
    output = trainer.train()
    return {"train_loss": output.training_loss}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--impl", choices=IMPLS, required=True)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--response-len", type=int, default=768)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--intermediate", type=int, default=172)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    logging.disable(logging.WARNING)
    pairs = make_pairs(args.batch * (args.warmup + args.steps), args.vocab, args.prompt_len, args.response_len)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="simpo-bench-") as tmp:
        work = Path(tmp)
        if args.impl in ("simpo", "dpo-cached"):
            make_tokenizer(args.vocab, work / "tok")
            extra = run_ours(args, work, pairs, timer)
        else:
            extra = run_trl(args, work, pairs, timer)
    if args.device == "cuda":
        peak_gpu = torch.cuda.max_memory_allocated() / 2**30
        extra["peak_gpu_mem_gb"] = round(peak_gpu, 3)
    result = {"impl": args.impl, "vocab": args.vocab, **extra}
    if "skipped" not in extra:
        times = timer.step_times()[args.warmup:]
        s_per_step = sum(times) / len(times)
        tokens = 2 * args.batch * (args.prompt_len + args.response_len)
        result.update(s_per_step=s_per_step, tokens_per_s=tokens / s_per_step, step_times=times)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
