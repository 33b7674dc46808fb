"""Benchmark: samples/s of ``simpo generate-pairs``' transformers backend, batched vs one prompt at
a time, on the tiny model (CPU unless a GPU is present) and the bundled demo prompts.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/generate_pairs.py [--prompts 32] [--n 5]
        [--max-new-tokens 32] [--batch-size 8] [--max-prompt-length 256] [--repeats 2]

Both modes sample with the same per-sample keys, so the script also checks that they produce the
same responses (batching changes speed, not results). Prints one JSON line per mode and a summary.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per generate() call when batched")
    ap.add_argument("--max-prompt-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats per mode (best is reported)")
    args = ap.parse_args()

    from omegaconf import OmegaConf

    from simpo_cli.config.schema import GenerationSettings, ModelConfig, TinyModelConfig
    from simpo_cli.data.prompts import read_prompts
    from simpo_cli.data.tokenize import uses_template
    from simpo_cli.models.generate import TransformersBackend, encode_prompt, row_key
    from simpo_cli.models.loading import build_tiny_model, load_tokenizer
    from tests.helpers import compose

    data_cfg = compose([], "generate-pairs").data  # the bundled demo prompts
    tokenizer = load_tokenizer(OmegaConf.structured(ModelConfig(name="tiny", tokenizer="pkg:tiny-tokenizer")))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_tiny_model(TinyModelConfig(), tokenizer).to(device)
    template = uses_template(tokenizer, data_cfg.chat_template)
    ids = [encode_prompt(p.messages, tokenizer, template) for p in read_prompts(data_cfg)]
    ids = [x for x in ids if len(x) <= args.max_prompt_length][:args.prompts]
    ids.sort(key=len)  # as generate-pairs batches them
    keys = [[row_key(42, i, j) for j in range(args.n)] for i in range(len(ids))]
    gen = OmegaConf.structured(GenerationSettings(n=args.n, max_new_tokens=args.max_new_tokens))
    backend = TransformersBackend(model, tokenizer, gen)
    backend.generate(ids[:1], keys[:1])  # warm-up

    results, outputs = {}, {}
    for mode, bs in (("batched", args.batch_size), ("one_prompt_at_a_time", 1)):
        best = None
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = []
            for b in range(0, len(ids), bs):
                out += backend.generate(ids[b:b + bs], keys[b:b + bs])
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            best = elapsed if best is None else min(best, elapsed)
        samples = sum(len(o) for o in out)
        tokens = sum(s.num_tokens for o in out for s in o)
        results[mode] = {"mode": mode, "prompts_per_call": bs, "prompts": len(ids), "samples": samples,
                         "generated_tokens": tokens, "seconds": round(best, 3),
                         "samples_per_second": round(samples / best, 2),
                         "tokens_per_second": round(tokens / best, 1)}
        outputs[mode] = out
        print(json.dumps(results[mode]))
    same = outputs["batched"] == outputs["one_prompt_at_a_time"]
    speedup = results["batched"]["samples_per_second"] / results["one_prompt_at_a_time"]["samples_per_second"]
    print(f"device={device.type} threads={torch.get_num_threads()} n={args.n} "
          f"max_new_tokens={args.max_new_tokens}: batched {results['batched']['samples_per_second']} samples/s, "
          f"one prompt at a time {results['one_prompt_at_a_time']['samples_per_second']} samples/s "
          f"(x{speedup:.2f}); identical responses: {same}")


if __name__ == "__main__":
    main()
