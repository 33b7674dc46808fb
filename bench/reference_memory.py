"""Benchmark (not a test): peak memory and step time while training, SimPO vs DPO.

PAPER.md ("Efficiency"): a standard DPO keeps a reference model beside the policy and runs its
forward every step; SimPO needs neither, hence ~10% less peak memory and ~20% less time. With
``reference.mode=precompute`` (the default) the reference log-probs are scored once before
training, so DPO's training loop holds one model, like SimPO's. This script trains the same model
on the same pairs with the same recipe three ways, each in a fresh process:

- ``simpo``                           (reference-free)
- ``dpo``  reference.mode=precompute  (cached reference log-probs)
- ``dpo``  reference.mode=live        (a second, frozen model scoring every batch)

and reports, for the training phase only (from ``Trainer.train`` start to end): peak memory
(CUDA: ``torch.cuda.max_memory_allocated`` reset at train start; CPU: peak resident set size,
sampled every 2 ms), its increase over the memory held at train start, and the median step time
(first step excluded). The claim checked: DPO-precompute peak ≤ 1.10 × SimPO peak.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/reference_memory.py            # CPU-sized model
    PYTHONPATH=. python bench/reference_memory.py --hidden 1024 --layers 16 --steps 20   # on a GPU

Extra ``key=value`` arguments are passed to every ``simpo train`` run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

VARIANTS = {
    "simpo": ["objective=simpo"],
    "dpo-precompute": ["objective=dpo", "reference.mode=precompute"],
    "dpo-live": ["objective=dpo", "reference.mode=live"],
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(overrides: list[str], out_file: str) -> None:
    """One training run in this process, with ``PreferenceTrainer.train`` instrumented."""
    import torch
    from hydra import compose, initialize_config_dir
    from transformers import TrainerCallback

    from simpo_cli.config.schema import CONF_DIR

    from simpo_cli.config.store import register_configs
    from simpo_cli.stages.train import run_train
    from simpo_cli.training.trainer import PreferenceTrainer

    cuda = torch.cuda.is_available()
    result: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu"}

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], None

        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._t)

    original_train = PreferenceTrainer.train

    def instrumented_train(self, *args, **kwargs):
        timer = StepTimer()
        self.add_callback(timer)
        peak, stop = [_rss_bytes()], threading.Event()
        start_rss = peak[0]

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_bytes())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start_cuda = torch.cuda.memory_allocated()
        sampler.start()
        try:
            return original_train(self, *args, **kwargs)
        finally:
            stop.set()
            sampler.join()
            steps = timer.times[1:] or timer.times
            result.update(step_time_s=statistics.median(steps), steps=len(timer.times),
                          peak_rss_mib=peak[0] / 2**20, rss_increase_mib=(peak[0] - start_rss) / 2**20)
            if cuda:
                result.update(peak_cuda_mib=torch.cuda.max_memory_allocated() / 2**20,
                              cuda_increase_mib=(torch.cuda.max_memory_allocated() - start_cuda) / 2**20)

    PreferenceTrainer.train = instrumented_train
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run_train(cfg, Path(tmp) / "run")
    Path(out_file).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.worker is not None:
        worker(args.worker[1:], args.worker[0])
        return
    common = [
        f"model.tiny.hidden_size={args.hidden}", f"model.tiny.intermediate_size={args.hidden * 11 // 4}",
        f"model.tiny.num_hidden_layers={args.layers}", f"model.tiny.num_attention_heads={max(args.hidden // 64, 1)}",
        f"model.tiny.num_key_value_heads={max(args.hidden // 128, 1)}",
        f"trainer.max_steps={args.steps}", f"hparams.per_device_train_batch_size={args.batch}",
        f"hparams.max_length={args.max_length}", f"hparams.max_prompt_length={args.max_length // 2}",
        f"data.max_samples={args.batch * args.steps}", "trainer.save_model=false", "trainer.evaluate=false",
        "trainer.progress_bar=false", "trainer.logging_steps=1000", *extra,
    ]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SIMPO_CACHE": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1",
               "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
        for name, overrides in VARIANTS.items():
            out = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, __file__, "--worker", str(out), *overrides, *common,
                   f"paths.output_root={tmp}/outputs"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            results[name] = json.loads(out.read_text())
    key = "peak_cuda_mib" if "peak_cuda_mib" in results["simpo"] else "peak_rss_mib"
    inc = "cuda_increase_mib" if key == "peak_cuda_mib" else "rss_increase_mib"
    print(f"device: {results['simpo']['device']}; model hidden {args.hidden} x {args.layers} layers, "
          f"batch {args.batch} pairs, max_length {args.max_length}, {args.steps} steps")
    print(f"{'variant':<16} {'peak MiB':>10} {'+train MiB':>11} {'step s':>8}  vs simpo")
    base = results["simpo"][key]
    for name, r in results.items():
        print(f"{name:<16} {r[key]:>10.1f} {r[inc]:>11.1f} {r['step_time_s']:>8.3f}  x{r[key] / base:.3f}")
    ratio = results["dpo-precompute"][key] / base
    verdict = "within" if ratio <= 1.10 else "NOT within"
    print(f"DPO with cached reference log-probs: peak {ratio:.3f} x SimPO's ({verdict} 10%)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
