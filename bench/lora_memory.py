"""Benchmark (not a test): peak memory and step time of SimPO training with LoRA vs full fine-tuning.

Full fine-tuning keeps, beside the fp32 weights, a gradient and two AdamW moments for every weight
(4x the weights); LoRA keeps them only for the adapter, so the base costs its weights alone
(Hu et al. 2021, §4.2). This script trains the same model on the same pairs with the same recipe
three ways, each in a fresh process (``bench/reference_memory.py``'s instrumented worker):

- ``full``        adapter=none
- ``lora``        adapter=lora        (r 8, alpha 8, all linear layers)
- ``lora-paper``  adapter=lora-paper  (r 64, alpha 128, all linear layers)

and reports, for the training phase only, peak memory (CUDA: ``max_memory_allocated``; CPU: peak
resident set size sampled every 2 ms), its increase over the memory held at train start, the
median step time (first step excluded), the trainable parameters, and each peak as a ratio of the
full fine-tuning peak.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/lora_memory.py                  # CPU-sized model
    PYTHONPATH=. python bench/lora_memory.py --hidden 2048 --layers 16 --steps 10   # on a GPU

Extra ``key=value`` arguments are passed to every ``simpo train`` run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"full": ["adapter=none"], "lora": ["adapter=lora"], "lora-paper": ["adapter=lora-paper"]}


def model_overrides(hidden: int, layers: int) -> list[str]:
    """The tiny Llama scaled up: MLP 11/4 x hidden, heads of 64, 2 query heads per KV head."""
    return [f"model.tiny.hidden_size={hidden}", f"model.tiny.intermediate_size={hidden * 11 // 4}",
            f"model.tiny.num_hidden_layers={layers}", f"model.tiny.num_attention_heads={max(hidden // 64, 1)}",
            f"model.tiny.num_key_value_heads={max(hidden // 128, 1)}"]


def parameter_counts(overrides: list[str]) -> dict:
    """Trainable and total parameters of the composed model (built on the meta device: no memory)."""
    import torch
    from hydra import compose, initialize_config_dir

    from simpo_cli.config.schema import CONF_DIR
    from simpo_cli.config.store import register_configs
    from simpo_cli.models import adapters
    from simpo_cli.models.loading import build_tiny_model, load_tokenizer

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with torch.device("meta"):
        model = build_tiny_model(cfg.model.tiny, load_tokenizer(cfg.model))
    return adapters.parameter_counts(adapters.wrap(model, cfg.adapter))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    args, extra = parser.parse_known_args()
    common = [
        *model_overrides(args.hidden, args.layers), "objective=simpo",
        f"trainer.max_steps={args.steps}", f"hparams.per_device_train_batch_size={args.batch}",
        f"hparams.max_length={args.max_length}", f"hparams.max_prompt_length={args.max_length // 2}",
        f"data.max_samples={args.batch * args.steps}", "trainer.save_model=false", "trainer.evaluate=false",
        "trainer.progress_bar=false", "trainer.logging_steps=1000", *extra,
    ]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SIMPO_CACHE": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1",
               "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        for name, overrides in VARIANTS.items():
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", "bench.reference_memory", "--worker", str(out), *overrides, *common,
                   f"paths.output_root={tmp}/outputs"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
            if proc.returncode:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            results[name] = {**json.loads(out.read_text()), **parameter_counts([*overrides, *common])}
    key = "peak_cuda_mib" if "peak_cuda_mib" in results["full"] else "peak_rss_mib"
    inc = "cuda_increase_mib" if key == "peak_cuda_mib" else "rss_increase_mib"
    print(f"device: {results['full']['device']}; SimPO, model hidden {args.hidden} x {args.layers} layers "
          f"({results['full']['parameters'] / 1e6:.1f}M parameters), batch {args.batch} pairs, "
          f"max_length {args.max_length}, {args.steps} steps")
    print(f"{'variant':<12} {'trainable':>12} {'peak MiB':>10} {'+train MiB':>11} {'step s':>8}  peak vs full")
    full = results["full"]
    for name, r in results.items():
        print(f"{name:<12} {r['trainable_parameters']:>12,} {r[key]:>10.1f} {r[inc]:>11.1f} "
              f"{r['step_time_s']:>8.3f}  x{r[key] / full[key]:.3f}")
    print(f"LoRA (r 8) peak memory: {results['lora'][key] / full[key]:.3f} x full fine-tuning's; "
          f"training increase {results['lora'][inc] / max(full[inc], 1e-9):.3f} x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
