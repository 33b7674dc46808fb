"""LM head + SimPO loss alone, forward + backward: our fused head vs Liger-Kernel vs full logits.

    OMP_NUM_THREADS=1 python -m bench.head      # both shapes; ours and liger 3 runs each, others 1
    python -m bench.head --configs 576x49152 --repeats 1 --json out.json

8 rows (4 pairs, chosen rows first) x 1,024 positions, the last 768 of each row scored; random
fp32 hidden states ``[8, 1024, H]`` and head weight ``[V, H]``; SimPO (β 2.0, γ 0.5, sigmoid).

- ``ours``: ``simpo_cli.training.fused_head.fused_head_loss`` on the scored positions, the SimPO
  objective evaluated pair by pair exactly as ``PreferenceTrainer`` does (3 matmul units/token).
- ``chunked``: today's recompute path (``chunked_head_logps``, 4 units).
- ``liger``: Liger-Kernel 0.8.5 ``LigerFusedLinearSimPOLoss`` (torch.compile, its defaults: one
  pair per chunk, ``compute_nll_loss=False``) on the full rows with ``ignore_index`` on prompt
  positions, as TRL calls it.
- ``liger-scored``: the same on the scored positions only (``[8, 768, H]``): Liger's algorithm
  on exactly our work.
- ``full``: full logits ``[8, 1024, V]``, log-softmax, gather, SimPO: plain autograd.

Every (implementation, shape, repeat) runs in a fresh subprocess (``--worker``), so its peak RSS
(``ru_maxrss``) is its own; time is one forward+backward after one warm-up call (Liger's warm-up
includes compilation). Loss and gradients (wrt the hidden states and the weight) of every
implementation are compared with ``full`` (with ``ours`` when ``full`` is not run). The FLOP bound
is 3 matmul units per scored token, ``3 x 2 x 6,144 x H x V`` FLOPs, at the best fp32 2,048^3
matmul rate measured with the same thread count by the driver or by any worker of that shape
(each measures it right after its timed call).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROWS, LENGTH, PROMPT = 8, 1024, 256
BETA, GAMMA = 2.0, 0.5
CONFIGS = ((64, 128256), (576, 49152))
IMPLS = ("ours", "chunked", "liger", "liger-scored", "full")
TOLERANCE = 1e-5


def make_inputs(hidden: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(ROWS, LENGTH, hidden, generator=g)
    w = torch.randn(vocab, hidden, generator=g) / hidden**0.5
    targets = torch.randint(0, vocab, (ROWS, LENGTH), generator=g)
    scored = torch.zeros(ROWS, LENGTH, dtype=torch.bool)
    scored[:, PROMPT:] = True
    return h, w, targets, scored


def _simpo_on_rows(row_logps, lengths):
    from simpo_cli.objectives import PreferenceLogps
    from simpo_cli.objectives.simpo import simpo

    b = ROWS // 2
    logps = PreferenceLogps(row_logps[:b], row_logps[b:], lengths[:b], lengths[b:])
    return simpo(logps, beta=BETA, gamma=GAMMA).losses.mean()


def _step(impl: str, h, w, targets, scored):
    """One forward+backward; returns (loss, grad wrt h [ROWS, LENGTH, H], grad wrt w)."""
    h = h.detach().requires_grad_()
    w = w.detach().requires_grad_()
    lengths = scored.sum(1)
    if impl == "ours":
        from simpo_cli.objectives import PreferenceLogps
        from simpo_cli.objectives.simpo import simpo
        from simpo_cli.training.fused_head import fused_head_loss, pair_logps

        b = ROWS // 2
        zeros = torch.zeros(b)
        template = PreferenceLogps(zeros, zeros, lengths[:b], lengths[b:])

        def group_loss(i, x):
            return simpo(pair_logps(template, i, x[:1], x[1:]), beta=BETA, gamma=GAMMA).losses.sum() / b

        loss = fused_head_loss(h[scored], w, None, targets[scored], lengths,
                               [(i, b + i) for i in range(b)], group_loss).loss
    elif impl == "chunked":
        from simpo_cli.training.logps import chunked_head_logps

        token_logps, _ = chunked_head_logps(h[scored], w, None, targets[scored])
        rows = torch.arange(ROWS)[:, None].expand_as(scored)[scored]
        row_logps = torch.zeros(ROWS).index_add(0, rows, token_logps)
        loss = _simpo_on_rows(row_logps, lengths)
    elif impl in ("liger", "liger-scored"):
        from liger_kernel.chunked_loss import LigerFusedLinearSimPOLoss

        fn = LigerFusedLinearSimPOLoss(beta=BETA, gamma=GAMMA, compute_nll_loss=False)
        if impl == "liger":
            out = fn(w, h, torch.where(scored, targets, -100))
        else:  # the scored positions only (every row scores its last LENGTH - PROMPT positions)
            out = fn(w, h[:, PROMPT:], targets[:, PROMPT:])
        loss = out[0] if isinstance(out, tuple) else out
    elif impl == "full":
        logits = h @ w.T
        token_logps = logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
        loss = _simpo_on_rows((token_logps * scored).sum(1), lengths)
    else:
        raise ValueError(f"unknown implementation '{impl}'")
    loss.backward()
    return loss.detach(), h.grad, w.grad


def worker(impl: str, hidden: int, vocab: int, threads: int, save: str | None) -> dict:
    torch.set_num_threads(threads)
    inputs = make_inputs(hidden, vocab)
    _step(impl, *inputs)  # warm-up (and compilation, for Liger)
    start = time.perf_counter()
    loss, grad_h, grad_w = _step(impl, *inputs)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    if save:
        torch.save({"loss": loss, "grad_h": grad_h, "grad_w": grad_w}, save)
    # The matmul rate right after the timed call, under the same load: the bound uses the best
    # rate seen by any process, so a busy moment in the driver cannot inflate it.
    return {"impl": impl, "hidden": hidden, "vocab": vocab, "seconds": seconds, "peak_rss_gb": peak,
            "matmul_flops": matmul_peak(threads)}


def matmul_peak(threads: int, n: int = 2048, tries: int = 3) -> float:
    """Best fp32 ``n^3`` matmul rate, FLOP/s."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in ("loss", "grad_h", "grad_w"))


def run(configs=CONFIGS, impls=IMPLS, repeats: int = 3, threads: int = 2, other_repeats: int = 1) -> list[dict]:
    """Run ``ours`` and ``liger`` ``repeats`` times and the others ``other_repeats`` times per shape,
    each in a fresh subprocess; returns one row
    per (shape, implementation) with median time and peak RSS, the largest absolute difference of
    loss and gradients from the reference, and ratios to Liger and to the FLOP bound."""
    driver_peak = matmul_peak(threads)
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        for hidden, vocab in configs:
            results = {}
            for impl in impls:
                runs = []
                for r in range(repeats if impl in ("ours", "liger") else other_repeats):
                    save = str(Path(tmp) / f"{impl}.pt") if r == 0 else ""
                    cmd = [sys.executable, "-m", "bench.head", "--worker", impl, "--configs",
                           f"{hidden}x{vocab}", "--threads", str(threads), "--save", save]
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if proc.returncode != 0:
                        why = (proc.stderr.strip().splitlines() or [""])[-1]
                        killed = " (killed: out of memory?)" if proc.returncode == -9 else ""
                        runs = [{"error": f"exit {proc.returncode}{killed} {why}".strip()}]
                        break
                    runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                results[impl] = runs
            peak = max([driver_peak] + [x["matmul_flops"] for runs in results.values() for x in runs
                                        if "matmul_flops" in x])
            bound = 3 * 2 * ROWS * (LENGTH - PROMPT) * hidden * vocab / peak
            reference = "full" if "full" in impls and "error" not in results["full"][0] else "ours"
            ref = torch.load(Path(tmp) / f"{reference}.pt") if reference in impls else None
            for impl in impls:
                runs = results[impl]
                row = {"hidden": hidden, "vocab": vocab, "impl": impl, "flop_bound_s": bound,
                       "matmul_gflops": peak / 1e9, "threads": threads, "load": os.getloadavg()[0]}
                if "error" in runs[0]:
                    rows.append({**row, "error": runs[0]["error"]})
                    continue
                row["seconds"] = statistics.median(x["seconds"] for x in runs)
                row["runs_s"] = [round(x["seconds"], 3) for x in runs]
                row["peak_rss_gb"] = statistics.median(x["peak_rss_gb"] for x in runs)
                if ref is not None:
                    got = torch.load(Path(tmp) / f"{impl}.pt")
                    row["max_abs_diff"] = _max_diff(got, ref)
                    row["reference"] = reference
                rows.append(row)
            liger = next((r for r in rows[-len(impls):] if r["impl"] == "liger" and "seconds" in r), None)
            for row in rows[-len(impls):]:
                if "seconds" not in row:
                    continue
                row["x_bound"] = row["seconds"] / bound
                if liger:
                    row["x_liger_time"] = row["seconds"] / liger["seconds"]
                    row["x_liger_rss"] = row["peak_rss_gb"] / liger["peak_rss_gb"]
    return rows


def rows(quick: bool = False) -> list[dict]:
    """``make bench``'s head part (``bench/run.py``): ours, Liger and full logits at both shapes
    (full logits only at hidden 576: at vocab 128,256 it needs over 16 GB), as rows with the
    driver's keys: ``impl`` (``ours``, ``liger``, ``full-logits``), ``hidden``, ``vocab``, ``s``,
    ``peak_rss_gb``, ``flop_bound_s`` (or ``failed``). ``quick``: one run of each."""
    names = {"ours": "ours", "liger": "liger", "full": "full-logits"}
    out = []
    for hidden, vocab in CONFIGS:
        impls = ("ours", "liger", "full") if vocab < 100_000 else ("ours", "liger")
        for r in run(configs=((hidden, vocab),), impls=impls, repeats=1 if quick else 3,
                     threads=int(os.environ.get("OMP_NUM_THREADS", "1"))):
            row = {"impl": names[r["impl"]], "hidden": hidden, "vocab": vocab, "flop_bound_s": r["flop_bound_s"]}
            if "error" in r:
                row["failed"] = r["error"]
            else:
                row.update(s=r["seconds"], peak_rss_gb=r["peak_rss_gb"], max_abs_diff=r.get("max_abs_diff"))
            out.append(row)
    return out


def table(rows: list[dict]) -> str:
    lines = ["| H / V | impl | s (median) | runs s | peak RSS GB | x Liger time | x Liger RSS | x FLOP bound | max abs diff (vs) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = f"{r['hidden']} / {r['vocab']:,}"
        if "error" in r:
            lines.append(f"| {shape} | {r['impl']} | error: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {shape} | {r['impl']} | {r['seconds']:.2f} | {', '.join(f'{x:.2f}' for x in r['runs_s'])} | "
            f"{r['peak_rss_gb']:.2f} | {r.get('x_liger_time', float('nan')):.2f} | "
            f"{r.get('x_liger_rss', float('nan')):.2f} | {r['x_bound']:.2f} | "
            f"{r.get('max_abs_diff', float('nan')):.1e} ({r.get('reference', 'n/a')}) |")
    first = rows[0] if rows else {}
    bounds = ", ".join(sorted({f"{r['hidden']}/{r['vocab']}: {r['flop_bound_s']:.2f} s" for r in rows}))
    lines.append(f"\nmatmul peak {first.get('matmul_gflops', 0):.0f} GFLOP/s (fp32 2048^3, "
                 f"{first.get('threads')} threads); FLOP bound {bounds}; max abs difference of loss and "
                 f"gradients (tolerance {TOLERANCE:g})")
    return "\n".join(lines)


def _shape(text: str) -> tuple[int, int]:
    hidden, vocab = text.lower().split("x")
    return int(hidden), int(vocab)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=[f"{h}x{v}" for h, v in CONFIGS], help="HxV shapes")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours and liger per shape")
    parser.add_argument("--other-repeats", type=int, default=1, help="runs of chunked and full per shape")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--save", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, *_shape(args.configs[0]), args.threads, args.save or None)))
        return
    load_before = os.getloadavg()
    rows = run([_shape(c) for c in args.configs], args.impls, args.repeats, args.threads, args.other_repeats)
    print(table(rows))
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} CPUs; timings on a shared machine are indicative)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
