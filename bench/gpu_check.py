"""The GPU check's steps (run by ``bench/gpu_check.sh`` after it installs what they need).

``python -m bench.gpu_check OUTDIR [--budget SECONDS]`` runs each step in its own subprocess with
its own time box, prints a line per step and writes ``OUTDIR/gpu_check.json`` after every step
(so a killed run still leaves what finished): ``{"machine": {...}, "steps": {name: {"status":
"ok"|"failed"|"skipped", "reason": str, "seconds": float, ...numbers}}}``. Runs, caches and
models go to ``$SIMPO_GPU_WORK`` (default /tmp/simpo-gpu-work), not OUTDIR.

Steps, in the order they run (each needs a CUDA GPU; without one every step is skipped with that
reason; the quick pass/fail steps come first so the benchmark cannot starve them):

- ``padding_free``: summed response log-probs and their gradient, padded vs padding-free
  (flash-attention 2 when ``flash_attn`` imports, else sdpa), bf16 tiny Llama on the GPU; ok when
  the relative difference of the log-probs is <= 1e-3.
- ``fsdp`` / ``zero3``: ``simpo train distributed=fsdp|zero3 distributed.num_processes=1``, 2 steps
  bf16 on the tiny model; ok when the run completes and saves a ``from_pretrained`` model.
  ``zero3`` is skipped without ``deepspeed``.
- ``bench``: ``python -m bench --parts head,step --device cuda --dtype bf16`` (ours vs TRL, and
  vs Liger-Kernel in the head part when ``bench/head.py`` is present), at vocabularies 32,000 and
  128,256; the table is printed and its rows kept.
- ``vllm``: ``simpo generate-pairs generation.backend=vllm`` on the tiny model saved to disk;
  skipped unless ``vllm`` imports.
- ``qlora``: ``simpo train adapter=qlora`` on the tiny model saved to disk; skipped unless
  ``bitsandbytes`` imports and this checkout has the adapter feature (``conf/adapter/qlora.yaml``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = "GPU_CHECK_RESULT "
# name -> time box in seconds (the order they run in)
# The quick pass/fail steps first, so the benchmark cannot starve them; it gets what is left.
STEPS = {"padding_free": 45, "fsdp": 75, "zero3": 100, "bench": 240, "vllm": 60, "qlora": 60}
TRAIN_SMOKE = ["trainer.max_steps=2", "data.max_samples=16", "hparams.max_length=128",
               "hparams.max_prompt_length=64", "hparams.per_device_train_batch_size=2",
               "trainer.logging_steps=1", "trainer.progress_bar=false", "trainer.bf16=true"]


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cuda_reason() -> str | None:
    """Why GPU steps cannot run here, or None when one CUDA GPU is usable."""
    try:
        import torch
    except ImportError:
        return "torch is not importable"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible (torch.cuda.is_available() is False)"
    return None


def machine() -> dict:
    info = {"python": platform.python_version(), "host": platform.node()}
    for name in ("torch", "transformers", "accelerate", "peft", "triton", "trl", "liger_kernel", "deepspeed",
                 "bitsandbytes", "flash_attn", "vllm", "datasets", "hydra"):
        if not has(name):
            info[name] = None
            continue
        try:
            from importlib.metadata import version

            dist = {"liger_kernel": "liger-kernel", "flash_attn": "flash-attn", "hydra": "hydra-core"}.get(name, name)
            info[name] = version(dist)
        except Exception:  # noqa: BLE001  (an importable module without distribution metadata)
            info[name] = "importable"
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def skip_reason(name: str) -> str | None:
    """Why step ``name`` is skipped before it starts (a missing package or feature), or None."""
    if name == "zero3" and not has("deepspeed"):
        return "deepspeed is not installed (pip install deepspeed; make gpu-wheels does not carry it)"
    if name == "vllm" and not has("vllm"):
        return "vllm is not installed (too large to carry as a wheel here)"
    if name == "qlora":
        if not (REPO / "simpo_cli" / "conf" / "adapter" / "qlora.yaml").is_file():
            return "this checkout has no adapter feature (simpo_cli/conf/adapter/qlora.yaml)"
        if not has("bitsandbytes"):
            return "bitsandbytes is not installed (too large to carry as a wheel here)"
    if name == "bench" and not has("trl"):
        return "trl is not installed (the TRL side of the benchmark)"
    return None


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from simpo_cli.config.schema import CONF_DIR
    from simpo_cli.config.store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def save_tiny(out: Path) -> Path:
    """Save ``model=tiny-llama`` (seeded) and its tokenizer to ``out`` (a ``from_pretrained`` dir)."""
    from simpo_cli.models.loading import load_model, load_tokenizer

    if (out / "config.json").is_file():
        return out
    cfg = _compose([])
    tok = load_tokenizer(cfg.model)
    load_model(cfg.model, tok).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def padding_free_step(out: Path, device: str = "cuda") -> dict:
    """Padded vs padding-free ``sequence_logps`` on a bf16 tiny Llama (hidden 256, 4 layers) on
    ``device``: 4 pairs of random tokens, prompts 8-64 and responses 4-96 tokens (seeded)."""
    import torch

    from simpo_cli.config.schema import TinyModelConfig
    from simpo_cli.data.preference import PreferenceCollator
    from simpo_cli.models.loading import build_tiny_model, load_tokenizer
    from simpo_cli.training.logps import sequence_logps

    tok = load_tokenizer(_compose([]).model)
    model = build_tiny_model(TinyModelConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                             num_attention_heads=4, num_key_value_heads=2), tok)
    attn = "flash_attention_2" if has("flash_attn") else "sdpa"
    model.set_attn_implementation(attn)
    model = model.to(device, torch.bfloat16)
    g = torch.Generator().manual_seed(0)

    def ids(lo, hi):
        n = int(torch.randint(lo, hi, (1,), generator=g))
        return torch.randint(4, len(tok), (n,), generator=g).tolist()

    batch = PreferenceCollator(tok.pad_token_id)(
        [{"prompt_input_ids": ids(8, 64), "chosen_input_ids": ids(4, 96), "rejected_input_ids": ids(4, 96)}
         for _ in range(4)])
    batch = {k: v.to(device) for k, v in batch.items()}
    results = {}
    for padding_free in (False, True):
        model.zero_grad(set_to_none=True)
        out_ = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"],
                              padding_free=padding_free)
        out_.logps.sum().backward()
        grad = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
        results[padding_free] = (out_.logps.detach().float(), grad)
    (lp0, g0), (lp1, g1) = results[False], results[True]
    rel = ((lp1 - lp0).abs() / lp0.abs().clamp(min=1)).max().item()
    grad_rel = ((g1 - g0).norm() / g0.norm().clamp(min=1e-12)).item()
    numbers = {"attention": attn, "logps_rel_diff": rel, "logps_max_abs_diff": (lp1 - lp0).abs().max().item(),
               "grad_rel_diff": grad_rel, "tokens": int(batch["attention_mask"].sum()),
               "padded_cells": int(batch["attention_mask"].numel())}
    ok = rel <= 1e-3
    return {"status": "ok" if ok else "failed", **numbers,
            "reason": f"padding-free ({attn}) vs padded, bf16: relative log-prob difference {rel:.2e} "
                      f"({'<=' if ok else '>'} 1e-3), gradient {grad_rel:.2e}"}


def train_step(name: str, out: Path, extra: list[str], smoke: list[str] = TRAIN_SMOKE) -> dict:
    """``simpo train`` smoke through the real CLI (it re-launches itself through accelerate)."""
    run = work_dir() / "runs" / name
    cmd = [sys.executable, "-m", "simpo_cli", "train", *smoke, *extra, f"run_dir={run}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(out))
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    meta_file = run / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    numbers = {k: meta.get(k) for k in ("steps", "final_loss", "distributed")}
    if proc.returncode != 0 or meta.get("status") != "completed":
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"status": "failed", "reason": f"exit {proc.returncode}, status {meta.get('status')}: {tail[0][:300]}",
                **numbers}
    saved = (run / "model" / "config.json").is_file() or (run / "model" / "adapter_config.json").is_file()
    return {"status": "ok" if saved else "failed",
            "reason": "completed, model saved" if saved else "completed but no model saved", **numbers}


def vllm_step(out: Path) -> dict:
    model = save_tiny(work_dir() / "tiny-model")
    gen = work_dir() / "generate-pairs"
    cmd = [sys.executable, "-m", "simpo_cli", "generate-pairs", "generation.backend=vllm",
           f"model.name_or_path={model}", "data.max_samples=8", "generation.n=2", "generation.max_new_tokens=16",
           "generation.max_prompt_length=256", f"run_dir={gen}", "overwrite=true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(out))
    (out / "vllm.log").write_text(proc.stdout + proc.stderr)
    meta = json.loads((gen / "meta.json").read_text()) if (gen / "meta.json").is_file() else {}
    if proc.returncode != 0 or meta.get("status") != "completed":
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"status": "failed", "reason": f"exit {proc.returncode}: {tail[0][:300]}"}
    return {"status": "ok", "reason": "generate-pairs with vllm completed",
            "prompts": meta.get("prompts"), "pairs": meta.get("pairs")}


def bench_step(out: Path) -> dict:
    cmd = [sys.executable, "-m", "bench", "--parts", "head,step", "--device", "cuda", "--dtype", "bf16",
           "--vocabs", "32000,128256", "--impls", "simpo,trl-cpo-simpo", "--json", str(out / "bench.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(out))
    (out / "bench.log").write_text(proc.stdout + proc.stderr)
    print(proc.stdout, flush=True)
    if proc.returncode != 0 or not (out / "bench.json").is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"status": "failed", "reason": f"exit {proc.returncode}: {tail[0][:300]}"}
    data = json.loads((out / "bench.json").read_text())
    rows = [{k: r.get(k) for k in ("part", "config", "impl", "s_per_step", "s", "peak_gpu_mem_gb",
                                    "peak_rss_gb", "flop_bound_s", "skipped", "failed")} for r in data["results"]]
    failed = [r for r in rows if r.get("failed")]
    return {"status": "failed" if failed else "ok", "rows": rows, "matmul_flops": data["matmul_flops"],
            "reason": f"{len(failed)} configuration(s) failed" if failed else "bf16 table printed above"}


def run_one(name: str, out: Path) -> dict:
    """Body of one step, in the child process."""
    if name == "bench":
        return bench_step(out)
    if name == "padding_free":
        return padding_free_step(out)
    if name == "zero3":
        return train_step(name, out, ["distributed=zero3", "distributed.num_processes=1"])
    if name == "fsdp":
        return train_step(name, out, ["distributed=fsdp", "distributed.num_processes=1"])
    if name == "vllm":
        return vllm_step(out)
    if name == "qlora":
        model = save_tiny(work_dir() / "tiny-model")
        return train_step(name, out, ["adapter=qlora", f"model.name_or_path={model}"])
    raise ValueError(f"unknown step {name}")


def work_dir() -> Path:
    """Runs, caches and the saved tiny model: ``$SIMPO_GPU_WORK`` (default /tmp/simpo-gpu-work), so
    OUTDIR holds only the few result files (gpu_check.json, bench.json, the steps' logs)."""
    return Path(os.environ.get("SIMPO_GPU_WORK", "/tmp/simpo-gpu-work"))


def child_env(out: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
            "SIMPO_CACHE": str(work_dir() / "cache"), "SIMPO_GPU_WORK": str(work_dir()), "PYTHONUNBUFFERED": "1"}


def run_step(name: str, out: Path, timeout: float) -> dict:
    """Step ``name`` in its own process (a crash or a hang stays inside it), at most ``timeout`` s."""
    cmd = [sys.executable, "-m", "bench.gpu_check", str(out), "--run-step", name]
    t = time.perf_counter()
    # Its own process group, so a time-out also ends the launcher's worker processes.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(out),
                            cwd=REPO, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"status": "failed", "reason": f"timed out after {timeout:.0f} s", "seconds": time.perf_counter() - t}
    seconds = time.perf_counter() - t
    for line in stdout.splitlines():
        if line.startswith(RESULT):
            return {**json.loads(line[len(RESULT):]), "seconds": seconds}
        print(line, flush=True)  # the bench step's table
    tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
    return {"status": "failed", "reason": f"exit {proc.returncode}: {tail[0][:300]}", "seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--budget", type=float, default=420.0, help="seconds for all steps together (default 420)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    p.add_argument("--run-step", default=None, help=argparse.SUPPRESS)  # internal: one step, in this process
    args = p.parse_args(argv)
    out = args.outdir.resolve()
    if args.run_step:
        try:
            result = run_one(args.run_step, out)
        except Exception as e:  # noqa: BLE001  (reported as the step's failure, with its type)
            result = {"status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        print(RESULT + json.dumps(result), flush=True)
        return 0
    steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        p.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "budget_s": args.budget, "steps": {}}
    report_file = out / "gpu_check.json"
    no_gpu = cuda_reason()
    deadline = time.perf_counter() + args.budget
    for name in steps:
        left = deadline - time.perf_counter()
        reason = no_gpu or skip_reason(name)
        if reason is None and left < 20:
            reason = f"time budget spent ({args.budget:.0f} s for all steps)"
        if reason is not None:
            result = {"status": "skipped", "reason": reason}
        else:
            print(f"== {name} (at most {min(STEPS[name], left):.0f} s)", flush=True)
            result = run_step(name, out, min(STEPS[name], left))
        report["steps"][name] = result
        print(f"{name}: {result['status']}: {result['reason']}", flush=True)
        tmp = report_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(report_file)
    print(f"wrote {report_file}")
    return 1 if any(r["status"] == "failed" for r in report["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
