"""Benchmark: the cost of ``simpo generate-pairs``' batch-invariant sampling and scoring, on the tiny
models (CPU unless a GPU is present) and the bundled demo prompts.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python bench/generate_pairs.py [--prompts 32] [--n 5]
        [--max-new-tokens 32] [--batch-size 8] [--scorer-batch-size 16] [--max-prompt-length 256]
        [--repeats 2]

Sampling: ``per_prompt`` (generate-pairs with ``generation.batch_invariant=true``: ``Sampler``, one
prompt's n rows per ``generate`` call, one CPU thread; the default batched sampling is measured by
``bench.generate``) vs ``cross_prompt`` (the scheme before issue 15: ``batch-size``
prompts left-padded into one call, all threads). Scoring the samples: ``group_per_prompt`` (what
generate-pairs does: ``RewardModel``, one prompt's candidates per forward pass, one CPU thread) vs
``length_sorted`` (the scheme before: each generation batch's candidates sorted by length and cut
into ``scorer-batch-size`` forward passes, all threads) vs ``one_sequence`` (one candidate per
pass). Prints one JSON line per mode, whether each old scheme's results equal the shipped one's
bits, and a summary.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import GenerationConfig, LogitsProcessorList

from simpo_cli.models.generate import SeededGumbelNoise, sampling_warpers
from simpo_cli.models.reward import reward_values


def timed(fn, repeats: int, device) -> tuple[float, object]:
    best, out = None, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, out


def cross_prompt_generate(sampler, gen, prompts, keys):
    """The pre-issue-15 transformers backend: every prompt's n rows in one left-padded batch."""
    rows = [p for p, ks in zip(prompts, keys) for _ in ks]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), sampler.pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r):] = torch.tensor(r)
        attention_mask[i, width - len(r):] = 1
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=gen.max_new_tokens,
                              eos_token_id=sampler.eos, pad_token_id=sampler.pad)
    processors = LogitsProcessorList([*sampling_warpers(gen.temperature, gen.top_p, gen.top_k),
                                      SeededGumbelNoise([k for ks in keys for k in ks], width)])
    with torch.inference_mode():
        out = sampler.model.generate(input_ids=input_ids.to(sampler.device),
                                     attention_mask=attention_mask.to(sampler.device), generation_config=config,
                                     logits_processor=processors)
    samples = [sampler.to_sample(row.tolist()) for row in out[:, width:].cpu()]
    n = len(keys[0])
    return [samples[i * n:(i + 1) * n] for i in range(len(prompts))]


def length_sorted_scores(reward_model, groups, batch_size):
    """The pre-issue-15 scorer: a generation batch's sequences sorted by length, ``batch_size`` per pass."""
    flat = [s for g in groups for s in g]
    order = sorted(range(len(flat)), key=lambda i: len(flat[i]))
    scores = [0.0] * len(flat)
    model, pad = reward_model.model, reward_model.model.config.pad_token_id
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(flat[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(rows):
            ids[r, :len(flat[i])], mask[r, :len(flat[i])] = torch.tensor(flat[i]), 1
        with torch.inference_mode():
            out = model(input_ids=ids.to(reward_model.device), attention_mask=mask.to(reward_model.device))
        for i, v in zip(rows, reward_values(out).cpu().tolist()):
            scores[i] = v
    out, pos = [], 0
    for g in groups:
        out.append(scores[pos:pos + len(g)])
        pos += len(g)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per generate() call, cross_prompt mode")
    ap.add_argument("--scorer-batch-size", type=int, default=16, help="sequences per pass, length_sorted mode")
    ap.add_argument("--max-prompt-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats per mode (best is reported)")
    args = ap.parse_args()

    from omegaconf import OmegaConf

    from simpo_cli.config.schema import GenerationSettings, ModelConfig, TinyModelConfig
    from simpo_cli.data.prompts import read_prompts
    from simpo_cli.data.templates import uses_template
    from simpo_cli.models.generate import TransformersBackend, encode_prompt, row_key
    from simpo_cli.models.loading import build_tiny_model, load_tokenizer
    from simpo_cli.models.reward import RewardModelScorer
    from tests.helpers import compose

    cfg = compose([], "generate-pairs")  # the bundled demo prompts and the tiny scorer
    tokenizer = load_tokenizer(OmegaConf.structured(ModelConfig(name="tiny", tokenizer="pkg:tiny-tokenizer")))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_tiny_model(TinyModelConfig(), tokenizer).to(device)
    template = uses_template(tokenizer, cfg.data.chat_template)
    prompts = [p for p in read_prompts(cfg.data)
               if len(encode_prompt(p.messages, tokenizer, template)) <= args.max_prompt_length][:args.prompts]
    prompts.sort(key=lambda p: len(encode_prompt(p.messages, tokenizer, template)))  # as generate-pairs did
    ids = [encode_prompt(p.messages, tokenizer, template) for p in prompts]
    keys = [[row_key(42, i, j) for j in range(args.n)] for i in range(len(ids))]
    gen = OmegaConf.structured(GenerationSettings(n=args.n, max_new_tokens=args.max_new_tokens,
                                                  batch_invariant=True))
    backend = TransformersBackend(model, tokenizer, gen)
    backend.generate(ids[:1], keys[:1])  # warm-up
    bs = args.batch_size
    info = f"device={device.type} threads={torch.get_num_threads()} prompts={len(ids)} n={args.n}"

    results = {}

    def report(kind, mode, seconds, units, extra):
        results[mode] = {"kind": kind, "mode": mode, "seconds": round(seconds, 3),
                         f"{kind}_per_second": round(units / seconds, 2), **extra}
        print(json.dumps(results[mode]))

    t_new, new = timed(lambda: backend.generate(ids, keys), args.repeats, device)
    t_old, old = timed(lambda: [s for b in range(0, len(ids), bs) for s in cross_prompt_generate(
        backend.sampler, gen, ids[b:b + bs], keys[b:b + bs])], args.repeats, device)
    samples = len(ids) * args.n
    report("samples", "per_prompt", t_new, samples, {"prompts_per_call": 1})
    report("samples", "cross_prompt", t_old, samples, {"prompts_per_call": bs, "identical_to_per_prompt": old == new})

    scorer = RewardModelScorer(cfg.scorer, device)
    rm = scorer.reward_model
    groups = [[scorer.encode(p.messages + [{"role": "assistant", "content": s.text}]) for s in row]
              for p, row in zip(prompts, new)]
    rm.score_group(groups[0])  # warm-up
    t_group, s_group = timed(lambda: rm.score_groups(groups), args.repeats, device)
    t_sorted, s_sorted = timed(lambda: [s for b in range(0, len(groups), bs) for s in length_sorted_scores(
        rm, groups[b:b + bs], args.scorer_batch_size)], args.repeats, device)
    t_one, s_one = timed(lambda: [[rm.score_group([s])[0] for s in g] for g in groups], args.repeats, device)
    report("sequences", "group_per_prompt", t_group, samples, {"sequences_per_pass": args.n})
    report("sequences", "length_sorted", t_sorted, samples,
           {"sequences_per_pass": args.scorer_batch_size, "identical_to_group": s_sorted == s_group})
    report("sequences", "one_sequence", t_one, samples, {"sequences_per_pass": 1, "identical_to_group": s_one == s_group})
    print(f"{info}: sampling per prompt {results['per_prompt']['samples_per_second']} samples/s vs cross-prompt "
          f"{results['cross_prompt']['samples_per_second']} (x{t_new / t_old:.2f} time); scoring group per prompt "
          f"{results['group_per_prompt']['sequences_per_second']} seq/s vs length-sorted "
          f"{results['length_sorted']['sequences_per_second']} (x{t_group / t_sorted:.2f} time) vs one sequence "
          f"{results['one_sequence']['sequences_per_second']} (x{t_one / t_sorted:.2f} time)")


if __name__ == "__main__":
    main()
