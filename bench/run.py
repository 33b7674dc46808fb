"""``python -m bench [--quick]``: every benchmark of issue 18, one invocation, one table.

Three parts (``--parts``), each configuration in its own subprocess so each peak RSS is its own:

1. ``head``: the LM head + SimPO loss micro-benchmark, ours vs Liger-Kernel vs full logits
   (``bench/head.py``: ``rows(quick: bool) -> list[dict]``, see ``head_rows``); a "skipped" row
   when that module is absent.
2. ``step``: the whole training step of ``simpo train`` vs TRL 1.16 on tiny Llamas
   (``bench.worker``).
3. ``smollm2``: SmolLM2-135M-Instruct SimPO on real UltraFeedback pairs, ``simpo train`` (whole
   run, bookkeeping included) vs TRL's CPOTrainer (``bench.smollm2``).
4. ``generate``: ``simpo eval``'s and ``generate-pairs``' generation on SmolLM2 with IFEval prompts vs
   plain batched ``model.generate`` (``bench.generate``, tokens/s; its own table, printed last).

Prints one table (s/step, peak RSS, their ratios to the part's baseline: Liger for the head, TRL
CPOTrainer otherwise, and the FLOP bound: forward+backward FLOPs of what must be computed divided
by the fp32 matmul throughput measured here), then the issue's targets, met or not.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time

FULL = dict(vocabs=(512, 32_000, 128_256), prompt_len=256, response_len=768, warmup=1, steps=2)
QUICK = dict(vocabs=(512, 32_000), prompt_len=64, response_len=192, warmup=1, steps=2)
IMPLS = ("simpo", "trl-cpo-simpo", "dpo-cached", "trl-dpo")
PARTS = ("head", "step", "smollm2", "generate")
SMOLLM2_IMPLS = ("simpo", "simpo-padded", "trl-cpo-simpo")
BASELINE = {"head": "liger", "step": "trl-cpo-simpo", "smollm2": "trl-cpo-simpo"}
# bench.generate's settings: 64 IFEval prompts x 128 new tokens (QUICK: 8 x 32, no slow rows)
GENERATE_ARGS = {False: ["--prompts", "64", "--max-new-tokens", "128"],
                 True: ["--prompts", "8", "--pairs-prompts", "4", "--max-new-tokens", "32",
                        "--rows", "eval,eval-plain,pairs,pairs-plain"]}


def measured_matmul_flops(n: int = 2048, repeats: int = 5, device: str = "cpu", dtype: str = "fp32") -> float:
    """Best observed FLOP/s of an ``n x n @ n x n`` matmul (in this process's thread setting on
    CPU, 2048^3 as in ``bench.head``: 1024^3 read 0.5-1x of it on 2 threads; synchronised,
    4096^3 on a GPU)."""
    import torch

    if device == "cuda":
        n = max(n, 4096)
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=kind), torch.randn(n, n, device=device, dtype=kind)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
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


def run_worker(impl: str, vocab: int, cfg: dict, threads: str, device: str = "cpu", dtype: str = "fp32") -> dict:
    cmd = [sys.executable, "-m", "bench.worker", "--impl", impl, "--vocab", str(vocab),
           "--prompt-len", str(cfg["prompt_len"]), "--response-len", str(cfg["response_len"]),
           "--warmup", str(cfg["warmup"]), "--steps", str(cfg["steps"]), "--device", device, "--dtype", dtype]
    env = {**os.environ, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return {**json.loads(line[len("BENCH_RESULT "):]), "wall_s": wall}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"impl": impl, "vocab": vocab, "failed": f"exit {proc.returncode}: {tail[0][:160]}"}


def head_rows(quick: bool, device: str = "cpu", dtype: str = "fp32") -> list[dict]:
    """Rows of ``bench.head.rows(quick=..., [device=..., dtype=...])`` (device and dtype passed
    when its signature takes them), each tagged ``part="head"``. Expected keys: ``impl`` (``ours``,
    ``liger``, ``full-logits``), ``hidden``, ``vocab``, ``s`` (seconds per forward+backward),
    ``peak_rss_gb`` (or ``peak_gpu_mem_gb``), ``flop_bound_s``; or ``skipped``/``failed``."""
    try:
        head = importlib.import_module("bench.head")
    except ModuleNotFoundError as e:
        if e.name != "bench.head":
            return [{"part": "head", "impl": "-", "config": "-", "skipped": f"bench/head.py needs {e.name}"}]
        return [{"part": "head", "impl": "-", "config": "-", "skipped": "bench/head.py is not on this branch"}]
    import inspect

    params = inspect.signature(head.rows).parameters
    kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if k in params}
    if (device, dtype) != ("cpu", "fp32") and len(kwargs) < 2:
        return [{"part": "head", "impl": "-", "config": "-",
                 "skipped": f"bench.head.rows takes no device/dtype; {device}/{dtype} not run"}]
    rows = []
    for r in head.rows(quick=quick, **kwargs):
        config = r.get("config") or (f"H{r['hidden']}/V{r['vocab']}" if "hidden" in r else "-")
        rows.append({"part": "head", "config": config, **r})
    return rows


def run_module(module: str, args: list[str], threads: str, base: dict) -> dict:
    """``python -m MODULE ARGS`` in its own process → its ``BENCH_RESULT`` dict + ``process_s``."""
    env = {**os.environ, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return {**base, **json.loads(line[len("BENCH_RESULT "):]), "process_s": wall}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {**base, "failed": f"exit {proc.returncode}: {tail[0][:160]}"}


def step_rows(cfg: dict, impls: list[str], threads: str, peak: float, batch: int = 4,
              device: str = "cpu", dtype: str = "fp32") -> list[dict]:
    rows = []
    for vocab in cfg["vocabs"]:
        bound = step_flops(vocab, batch, cfg["prompt_len"], cfg["response_len"]) / peak
        for impl in impls:
            r = run_worker(impl, vocab, cfg, threads, device, dtype)
            rows.append({"part": "step", "config": f"V{vocab} b{batch} L{cfg['prompt_len']}+{cfg['response_len']}",
                         **r, "flop_bound_s": bound})
            print(json.dumps({k: v for k, v in r.items() if k != "step_times"}), file=sys.stderr, flush=True)
    return rows


def smollm2_rows(quick: bool, threads: str, peak: float) -> list[dict]:
    rows = []
    for impl in SMOLLM2_IMPLS:
        r = run_module("bench.smollm2", ["--impl", impl] + (["--quick"] if quick else []), threads,
                       {"impl": impl, "config": "SmolLM2-135M"})
        if "step_flops" in r:
            r["flop_bound_s"] = r["step_flops"] / peak
        rows.append({"part": "smollm2", **r})
        print(json.dumps({k: v for k, v in r.items() if k != "step_times"}), file=sys.stderr, flush=True)
    return rows


def memory(r: dict | None) -> float | None:
    """Peak GPU memory (GB) when measured on a GPU, else peak RSS (GB)."""
    if not r:
        return None
    return r.get("peak_gpu_mem_gb", r.get("peak_rss_gb"))


def seconds(r: dict | None) -> float | None:
    """Seconds per step (whole-step parts) or per forward+backward (head rows)."""
    if not r:
        return None
    return r.get("s_per_step", r.get("s"))


def _x(a, b) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def baseline_of(rows: list[dict], r: dict) -> dict | None:
    base = BASELINE[r["part"]]
    return next((b for b in rows if b["part"] == r["part"] and b.get("config") == r.get("config")
                 and str(b.get("impl", "")).startswith(base) and seconds(b) is not None), None)


def unified_table(rows: list[dict]) -> str:
    """One Markdown table of every row, with ratios to the row's baseline and to the FLOP bound."""
    lines = ["| part | config | impl | s/step | peak mem GB | s vs base | RSS vs base | FLOP bound s | "
             "s / bound | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, bound = seconds(r), r.get("flop_bound_s")
        if s is None:
            lines.append(f"| {r['part']} | {r.get('config', '-')} | {r.get('impl', '-')} | | | | | | | "
                         f"{r.get('skipped') and 'skipped: ' + r['skipped'] or r.get('failed') or 'no time'} |")
            continue
        base = baseline_of(rows, r)
        rss = memory(r)
        note = []
        # simpo rows only: their wall_s is the whole run_train; TRL's is its train() call alone.
        if r["part"] == "smollm2" and str(r["impl"]).startswith("simpo") and r.get("train_s") and "wall_s" in r:
            note.append(f"wall {r['wall_s']:.0f} s / train {r['train_s']:.0f} s = {r['wall_s'] / r['train_s']:.2f}x")
        if r.get("pairs"):
            note.append(f"pair metrics on {r['pairs']['count']} held-out" if r["pairs"]["held_out"]
                        else f"pair metrics on {r['pairs']['count']} training pairs")
        lines.append(
            f"| {r['part']} | {r.get('config', '-')} | {r['impl']} | {s:.3f} | "
            f"{'-' if rss is None else f'{rss:.2f}'} | "
            f"{'base' if base is r else _x(s, seconds(base))} | "
            f"{'base' if base is r else _x(rss, memory(base))} | "
            f"{'-' if not bound else f'{bound:.3f}'} | {_x(s, bound)} | {'; '.join(note)} |")
    return "\n".join(lines)


def _find(rows, part, impl, config_has=""):
    return next((r for r in rows if r["part"] == part and r.get("impl") == impl
                 and config_has in str(r.get("config")) and seconds(r) is not None), None)


def targets(rows: list[dict]) -> list[tuple[str, float | None, float]]:
    """``(target, measured ratio or None, threshold)`` of issue 18's targets, for what was run.
    Whole step: at the largest vocabulary measured (the target is stated at 128,256)."""
    out = []
    for hv, limit_s, limit_rss in (("H576/V49152", 0.9, 0.5), ("H64/V128256", 0.7, None)):
        ours, liger = _find(rows, "head", "ours", hv), _find(rows, "head", "liger", hv)
        if ours and liger:
            out.append((f"head {hv}: ours s / Liger s", seconds(ours) / seconds(liger), limit_s))
            if limit_rss and memory(ours) and memory(liger):
                out.append((f"head {hv}: ours memory / Liger", memory(ours) / memory(liger), limit_rss))
        if ours and ours.get("flop_bound_s") and hv.startswith("H576"):
            out.append((f"head {hv}: ours s / FLOP bound", seconds(ours) / ours["flop_bound_s"], 1.5))
    steps = [r for r in rows if r["part"] == "step" and r.get("impl") == "simpo" and seconds(r) is not None]
    if steps:
        ours = max(steps, key=lambda r: r.get("vocab", 0))
        trl = _find(rows, "step", "trl-cpo-simpo", ours["config"])
        if trl:
            at = f"step V{ours['vocab']}" + ("" if ours["vocab"] == 128_256 else " (target stated at V128256)")
            out.append((f"{at}: simpo s/step / TRL", seconds(ours) / seconds(trl), 0.25))
            out.append((f"{at}: simpo memory / TRL", memory(ours) / memory(trl), 0.1))
    ours, trl = _find(rows, "smollm2", "simpo"), _find(rows, "smollm2", "trl-cpo-simpo")
    if ours and trl:
        out.append(("SmolLM2: simpo s/step / TRL", seconds(ours) / seconds(trl), 0.4))
        out.append(("SmolLM2: simpo memory / TRL", memory(ours) / memory(trl), 0.4))
    if ours and ours.get("train_s"):
        out.append(("SmolLM2: 4-step run wall / training time", ours["wall_s"] / ours["train_s"], 1.5))
    return out


def targets_table(items) -> str:
    lines = ["| target | measured | limit | met |", "|---|---|---|---|"]
    for name, value, limit in items:
        lines.append(f"| {name} | {value:.2f}x | <= {limit}x | {'yes' if value <= limit else 'no'} |")
    return "\n".join(lines)


def machine_line(threads: str, peak: float, device: str = "cpu", dtype: str = "fp32") -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = device
    if device == "cuda":
        import torch

        where = torch.cuda.get_device_name(0)
    return (f"{where}, {os.cpu_count()} CPUs, load average {load:.1f} at the end, OMP_NUM_THREADS={threads}, "
            f"{dtype} matmul peak {peak / 1e12:.3f} TFLOP/s ({'4096' if device == 'cuda' else '2048'}^3)")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="short settings: step vocab 512/32000 length 64+192; SmolLM2 batch 2 length 256")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"step part: comma-separated subset of {','.join(IMPLS)}")
    p.add_argument("--vocabs", default=None, help="step part: comma-separated vocabulary sizes (overrides the mode's)")
    p.add_argument("--threads", default=os.environ.get("OMP_NUM_THREADS", "2"))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="head and step parts (SmolLM2: CPU only)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="head and step parts")
    p.add_argument("--json", default=None, help="also write every result to this file")
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    cfg = dict(QUICK if args.quick else FULL)
    if args.vocabs:
        cfg["vocabs"] = tuple(int(v) for v in args.vocabs.split(","))
    os.environ["OMP_NUM_THREADS"] = args.threads
    import torch

    torch.set_num_threads(int(args.threads))
    peak = measured_matmul_flops(device=args.device, dtype=args.dtype)
    rows: list[dict] = []
    if "head" in parts:
        rows += head_rows(args.quick, args.device, args.dtype)
    if "step" in parts:
        rows += step_rows(cfg, args.impls.split(","), args.threads, peak, device=args.device, dtype=args.dtype)
    if "smollm2" in parts and args.device != "cpu":
        rows.append({"part": "smollm2", "impl": "-", "config": "-", "skipped": "CPU only (--device cpu)"})
    elif "smollm2" in parts:
        rows += smollm2_rows(args.quick, args.threads, peak)
    print(machine_line(args.threads, peak, args.device, args.dtype) + (", QUICK settings" if args.quick else ""))
    print()
    print(unified_table(rows))
    print()
    print(targets_table(targets(rows)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "quick": args.quick, "matmul_flops": peak, "results": rows}, f, indent=1)
    if "generate" in parts:  # tokens/s, not s/step: its own table
        print()
        subprocess.run([sys.executable, "-m", "bench.generate", *GENERATE_ARGS[args.quick]], check=False,
                       env={**os.environ, "OMP_NUM_THREADS": args.threads})
