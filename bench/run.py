"""``python -m bench [--quick]``: our ``simpo train`` against TRL 1.16 on identical tiny models.

Each (implementation, vocabulary) runs in its own subprocess (``bench.worker``), so the peak RSS
is that run's alone. Prints one table: s/step, tokens/s and peak RSS per implementation, the
ratios the issue's targets are stated in, and a FLOP bound: forward+backward FLOPs of the tokens
that must be computed (every token through the body, only response tokens through the LM head)
divided by a matmul throughput measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

FULL = dict(vocabs=(512, 32_000, 128_256), prompt_len=256, response_len=768, warmup=1, steps=2)
QUICK = dict(vocabs=(512, 32_000), prompt_len=64, response_len=192, warmup=1, steps=2)
IMPLS = ("simpo", "trl-cpo-simpo", "dpo-cached", "trl-dpo")


def measured_matmul_flops(n: int = 1024, repeats: int = 5) -> float:
    """Best observed fp32 FLOP/s of an ``n x n @ n x n`` matmul in this process's thread setting."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def step_flops(vocab: int, batch: int, prompt_len: int, response_len: int, hidden: int = 64,
               intermediate: int = 172, layers: int = 2, heads: int = 4, kv_heads: int = 2) -> float:
    """Forward+backward FLOPs of one step (3x the forward; 2 FLOPs per multiply-add).

    Body, per token: the Llama projections (q, o: H·H each; k, v: H·H·kv/heads each; MLP 3·H·I)
    plus causal attention (QK^T and AV over on average L/2 keys: 2·L/2·H). Head: H·V, for the
    response tokens only (the tokens that are scored). Embedding lookups are free."""
    rows, length = 2 * batch, prompt_len + response_len
    proj = 2 * hidden * hidden + 2 * hidden * hidden * kv_heads // heads + 3 * hidden * intermediate
    attn = 2 * (length / 2) * hidden
    body = rows * length * layers * (proj + attn)
    head = rows * response_len * hidden * vocab
    return 3 * 2 * (body + head)


def run_worker(impl: str, vocab: int, cfg: dict, threads: str) -> dict:
    cmd = [sys.executable, "-m", "bench.worker", "--impl", impl, "--vocab", str(vocab),
           "--prompt-len", str(cfg["prompt_len"]), "--response-len", str(cfg["response_len"]),
           "--warmup", str(cfg["warmup"]), "--steps", str(cfg["steps"])]
    env = {**os.environ, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return {**json.loads(line[len("BENCH_RESULT "):]), "wall_s": wall}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"impl": impl, "vocab": vocab, "failed": f"exit {proc.returncode}: {tail[0][:160]}"}


def ratio(a: dict | None, b: dict | None, key: str) -> str:
    if not a or not b or key not in a or key not in b:
        return "-"
    return f"{a[key] / b[key]:.2f}x"


def table(results: list[dict], cfg: dict, peak: float, batch: int) -> str:
    by = {(r["impl"], r["vocab"]): r for r in results}
    lines = [f"batch {batch} pairs, length {cfg['prompt_len']}+{cfg['response_len']}, fp32 CPU, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, matmul peak "
             f"{peak / 1e9:.1f} GFLOP/s, {cfg['steps']} timed steps after {cfg['warmup']} warm-up",
             "",
             "| vocab | impl | s/step | tokens/s | peak RSS GB | FLOP bound s/step |",
             "|---|---|---|---|---|---|"]
    for vocab in cfg["vocabs"]:
        bound = step_flops(vocab, batch, cfg["prompt_len"], cfg["response_len"]) / peak
        for impl in IMPLS:
            r = by.get((impl, vocab))
            if r is None:
                continue
            if "s_per_step" not in r:
                lines.append(f"| {vocab} | {impl} | {r.get('skipped') or r.get('failed')} | | | |")
                continue
            lines.append(f"| {vocab} | {impl} | {r['s_per_step']:.3f} | {r['tokens_per_s']:.0f} | "
                         f"{r['peak_rss_gb']:.2f} | {bound:.3f} |")
    lines += ["", "| vocab | SimPO/TRL-CPO s/step | SimPO/TRL-CPO RSS | DPO-cached/SimPO s/step | "
              "TRL-DPO/TRL-CPO s/step | SimPO/FLOP bound |", "|---|---|---|---|---|---|"]
    for vocab in cfg["vocabs"]:
        ours, cpo = by.get(("simpo", vocab)), by.get(("trl-cpo-simpo", vocab))
        dpo, tdpo = by.get(("dpo-cached", vocab)), by.get(("trl-dpo", vocab))
        bound = step_flops(vocab, batch, cfg["prompt_len"], cfg["response_len"]) / peak
        vs_bound = f"{ours['s_per_step'] / bound:.1f}x" if ours and "s_per_step" in ours else "-"
        lines.append(f"| {vocab} | {ratio(ours, cpo, 's_per_step')} | {ratio(ours, cpo, 'peak_rss_gb')} | "
                     f"{ratio(dpo, ours, 's_per_step')} | {ratio(tdpo, cpo, 's_per_step')} | {vs_bound} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="vocab 512 and 32000, length 64+192, 2 timed steps")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {','.join(IMPLS)}")
    p.add_argument("--vocabs", default=None, help="comma-separated vocabulary sizes (overrides the mode's)")
    p.add_argument("--threads", default=os.environ.get("OMP_NUM_THREADS", "2"))
    p.add_argument("--json", default=None, help="also write every result to this file")
    args = p.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.vocabs:
        cfg["vocabs"] = tuple(int(v) for v in args.vocabs.split(","))
    os.environ["OMP_NUM_THREADS"] = args.threads
    import torch

    torch.set_num_threads(int(args.threads))
    peak = measured_matmul_flops()
    results = []
    for vocab in cfg["vocabs"]:
        for impl in args.impls.split(","):
            r = run_worker(impl, vocab, cfg, args.threads)
            print(json.dumps({k: v for k, v in r.items() if k != "step_times"}), file=sys.stderr, flush=True)
            results.append(r)
    print(table(results, cfg, peak, batch=4))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "matmul_flops": peak, "results": results}, f, indent=1)
