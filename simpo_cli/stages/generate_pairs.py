"""``simpo generate-pairs``: on-policy preference pairs, as in the paper's Instruct setting
(PAPER.md): the policy samples ``generation.n`` responses per prompt (temperature 0.8), the scorer
rates each, the best becomes ``chosen`` and the worst ``rejected``.

The run directory (named after the settings, so that rerunning the same command resumes):

- ``pairs-NNNNN.jsonl``: the pairs in the UltraFeedback-binarized schema (``prompt`` string,
  ``chosen``/``rejected`` message lists ending with the answer, ``score_chosen``,
  ``score_rejected``, plus ``prompt_id`` and ``source_index``); ``simpo train data=<run dir>``
  reads the directory as is.
- ``candidates/candidates-NNNNN.jsonl``: every prompt of the shard with all its candidates, their
  scores, the indices chosen/rejected or the reason the prompt was dropped.
- ``settings.json`` (everything that changes the output; a rerun with other settings is refused),
  ``meta.json`` (status, counts, throughput, attempts) and ``config.yaml``.

Shard ``k`` holds prompts ``[k * shard_size, (k + 1) * shard_size)`` of the source. A shard is
written whole and atomically (temporary file, then rename), candidates first, then pairs; a shard
counts as done when both exist. After an interruption (kill -9 included) a rerun skips done shards
and redoes the others from their first prompt with the same per-sample seeds and the same batches
(a shard's batches depend only on its prompts and ``generation.batch_size``), so on the same machine
and torch build, with the same thread count, the result is byte-identical to an uninterrupted run:
no prompt lost or duplicated. Scores depend only on a prompt and its candidates (each group scored
on its own, on one thread on CPU). Responses are decoded in batches of ``generation.batch_size``
prompts × ``n`` samples (``models.generate.BatchedDecoder``), so they may differ in a near-tie
token between batch sizes or thread counts: both are part of the settings a resume must match.
``generation.batch_invariant=true`` samples each prompt on its own on one thread instead (slower),
and then neither matters.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from simpo_cli.data.cache import data_fingerprint
from simpo_cli.data.prompts import read_prompts
from simpo_cli.data.records import read_jsonl_dir
from simpo_cli.data.templates import uses_template
from simpo_cli.errors import UserError
from simpo_cli.files import META_FILE
from simpo_cli.models.generate import TransformersBackend, VLLMBackend, encode_prompt, row_key
from simpo_cli.models.loading import ModelSource, ensure_files, load_model, load_tokenizer, model_source, use_source
from simpo_cli.models.reward import load_scorer, select_pair
from simpo_cli.files import write_atomic, write_json
from simpo_cli.models.verifiable import check_scorer_inputs
from simpo_cli.run.rundir import RunDir, open_run

log = logging.getLogger(__name__)
DROP_TOO_LONG = "prompt longer than generation.max_prompt_length"


@dataclass
class GenerateResult:
    run_dir: Path
    prompts: int
    pairs: int
    dropped: dict = field(default_factory=dict)
    shards_done_before: int = 0  # shards found complete when this run started (resume)
    samples_per_second: float | None = None


def output_settings(cfg) -> dict:
    """Everything that changes the output, compared on resume. The scorer's batch size and the
    progress bar are left out: scores do not depend on them (``models.reward.RewardModel``).
    ``generation.batch_size`` and the CPU thread count change batched responses in the last bits,
    so they are recorded unless ``generation.batch_invariant`` (each prompt sampled on its own,
    ``models.generate.Sampler``): then a run resumed with a smaller batch (after running out of
    memory) or other threads writes the same bytes."""
    c = OmegaConf.to_container(cfg, resolve=True)
    model = {k: c["model"].get(k) for k in ("name_or_path", "tokenizer", "revision", "dtype", "chat_template", "tiny")}
    data = {k: c["data"].get(k) for k in ("path", "format", "split", "columns", "chat_template", "max_samples")}
    data["fingerprint"] = data_fingerprint(cfg.data, cfg.data.split)
    scorer = {k: v for k, v in c["scorer"].items() if k not in ("batch_size", "name")}
    gen = {k: v for k, v in c["generation"].items() if not k.startswith("vllm_")}
    if cfg.generation.batch_invariant or cfg.generation.backend != "transformers":
        del gen["batch_size"]
    elif _device().type == "cpu":
        gen["cpu_threads"] = torch.get_num_threads()
    return {"seed": cfg.seed, "model": model, "data": data, "scorer": scorer, "generation": gen}


def _diff(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def shard_names(k: int) -> tuple[str, str]:
    return f"pairs-{k:05d}.jsonl", f"candidates/candidates-{k:05d}.jsonl"


SETTINGS_FILE = "settings.json"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:  # only written atomically, so only a foreign file gets here
        raise UserError(f"{path}: not valid JSON; pass run_dir=<new dir> or overwrite=true") from None


def _prepare_output(out: Path, settings: dict, overwrite: bool) -> dict:
    """Check an existing ``out`` was made with the same settings (``overwrite`` wipes its shards
    instead), remove temporary files a killed run left behind; returns the previous meta (or {}).

    The settings live in their own file, written once (atomically) before the first shard, so that
    a kill at any moment (even while ``meta.json`` is being rewritten) leaves them readable.
    """
    previous = _read_json(out / META_FILE)
    settings_file = out / SETTINGS_FILE
    if overwrite:
        for p in [*out.glob("pairs-*.jsonl"), *out.glob("candidates/candidates-*.jsonl"), settings_file]:
            p.unlink(missing_ok=True)
        previous = {}
    recorded = _read_json(settings_file)
    if recorded and recorded != settings:
        changes = _diff(recorded, settings)
        raise UserError(f"{out} holds pairs generated with other settings ({'; '.join(changes[:4])}); "
                        "rerun with the same settings to resume, or pass run_dir=<new dir> "
                        "or overwrite=true to start again")
    if not recorded:
        if [*out.glob("pairs-*.jsonl")]:
            raise UserError(f"{out} holds pairs-*.jsonl shards but no {SETTINGS_FILE}, so they cannot be "
                            "resumed safely; pass run_dir=<new dir> or overwrite=true")
        write_json(settings_file, settings)
    for p in [*out.glob(".pairs-*"), *out.glob("candidates/.candidates-*"), *out.glob(f".{SETTINGS_FILE}.*")]:
        p.unlink()  # write_atomic's temporary files from an interrupted write
    return previous


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def _shard_records(prompts, lengths_ok, samples, scores) -> tuple[list[str], list[str], Counter]:
    """Candidate and pair lines for one shard, in source order."""
    cand_lines, pair_lines, dropped = [], [], Counter()
    for p in prompts:
        record = {"source_index": p.index, "prompt_id": p.prompt_id, "prompt": p.messages,
                  "candidates": [], "chosen": None, "rejected": None, "dropped": None}
        if not lengths_ok[p.index]:
            record["dropped"] = DROP_TOO_LONG
        else:
            cands, sc = samples[p.index], scores[p.index]
            record["candidates"] = [{"text": s.text, "score": v, "num_tokens": s.num_tokens,
                                     "finish_reason": s.finish_reason} for s, v in zip(cands, sc)]
            sel = select_pair([s.text for s in cands], sc)
            record.update(chosen=sel.chosen, rejected=sel.rejected, dropped=sel.dropped)
            if sel.dropped is None:
                pair_lines.append(_dumps({
                    "prompt_id": p.prompt_id, "prompt": p.messages[-1]["content"],
                    "chosen": p.messages + [{"role": "assistant", "content": cands[sel.chosen].text}],
                    "rejected": p.messages + [{"role": "assistant", "content": cands[sel.rejected].text}],
                    "score_chosen": sc[sel.chosen], "score_rejected": sc[sel.rejected],
                    "source_index": p.index,
                }))
        if record["dropped"]:
            dropped[record["dropped"]] += 1
        cand_lines.append(_dumps(record))
    return cand_lines, pair_lines, dropped


def summarise(out: Path, shards: int) -> dict:
    """Counts over every candidate shard (so a resumed run reports the whole output)."""
    records = read_jsonl_dir(out / "candidates") if shards else []
    dropped = Counter(r["dropped"] for r in records if r["dropped"])
    kept = [r for r in records if not r["dropped"]]
    samples = [c for r in records for c in r["candidates"]]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "prompts": len(records), "pairs": len(kept), "dropped": dict(dropped), "samples": len(samples),
        "generated_tokens": sum(c["num_tokens"] for c in samples),
        "truncated_samples": sum(c["finish_reason"] == "length" for c in samples),
        "score_chosen_mean": mean([r["candidates"][r["chosen"]]["score"] for r in kept]),
        "score_rejected_mean": mean([r["candidates"][r["rejected"]]["score"] for r in kept]),
    }


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _backend(cfg, source, tokenizer, device):
    if cfg.generation.backend == "vllm":
        return VLLMBackend(cfg.model, ensure_files(source), cfg.generation, cfg.seed)
    return TransformersBackend(load_model(cfg.model, tokenizer, source=source).to(device), tokenizer, cfg.generation)


def model_sources(cfg) -> dict[str, ModelSource]:
    """The model ``run_generate_pairs`` samples from, resolved once: ``policy`` (``model.*``). Pure:
    preflight calls it."""
    return {"policy": model_source(cfg.model)}


def run_generate_pairs(cfg, run_dir: str | Path, sources: dict[str, ModelSource] | None = None) -> GenerateResult:
    """Sample, score and select pairs for every prompt of ``cfg.data`` into ``run_dir``, resuming
    whatever an earlier run with the same settings left there. ``sources``: as preflight resolved
    them (``model_sources``); ``None`` resolves them here.

    Raises ``ConfigError``/``UserError``/``DataError`` for user mistakes (before any model loads),
    including an existing ``run_dir`` made with other settings.
    """
    source = use_source(cfg.model, (sources if sources is not None else model_sources(cfg))["policy"])
    g, out = cfg.generation, Path(run_dir)
    settings = output_settings(cfg)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("resume") == "never" and not cfg.overwrite and [*out.glob("pairs-*.jsonl")]:
        raise UserError(f"{out} already holds pairs-*.jsonl shards; pass resume=auto to continue them, "
                        "overwrite=true to start again, or another run_dir")
    previous = _prepare_output(out, settings, cfg.overwrite)
    prompts = read_prompts(cfg.data)
    check_scorer_inputs(cfg.scorer, prompts, cfg.data.path)  # bad IFEval fields: one line, before any model loads
    shards = [prompts[i:i + g.shard_size] for i in range(0, len(prompts), g.shard_size)]
    done = [all((out / name).is_file() for name in shard_names(k)) for k in range(len(shards))]
    run = RunDir(out)
    with open_run(run, cfg, "generate-pairs"):
        run.update(started=previous.get("started", run.meta["started"]),
                   attempts=previous.get("attempts", 0) + 1, settings=settings,
                   shards=len(shards), shards_done_before=sum(done), model_source={"policy": source.as_dict()})
        samples_done, elapsed = 0, 0.0
        if not all(done):
            tokenizer = load_tokenizer(cfg.model, source)
            template = uses_template(tokenizer, cfg.data.chat_template)
            device = _device()
            backend = _backend(cfg, source, tokenizer, device)
            scorer = load_scorer(cfg.scorer, device)
            (out / "candidates").mkdir(exist_ok=True)
            bar = tqdm(total=len(prompts), initial=sum(len(s) for s, d in zip(shards, done) if d),
                       unit="prompt", desc="generate-pairs", disable=not cfg.progress_bar, dynamic_ncols=True)
            start = time.perf_counter()
            for k, shard in enumerate(shards):
                if done[k]:
                    continue
                ids = {p.index: encode_prompt(p.messages, tokenizer, template) for p in shard}
                ok = {i: len(t) <= g.max_prompt_length for i, t in ids.items()}
                # Length-sorted, so a batch pads little; the batches depend only on this shard and
                # generation.batch_size, never on what a killed run had done (each prompt keeps its
                # seeds; scores are per prompt).
                todo = sorted((p for p in shard if ok[p.index]), key=lambda p: len(ids[p.index]))
                samples, scores = {}, {}
                for b in range(0, len(todo), g.batch_size):
                    batch = todo[b:b + g.batch_size]
                    keys = [[row_key(cfg.seed, p.index, j) for j in range(g.n)] for p in batch]
                    outs = backend.generate([ids[p.index] for p in batch], keys)
                    # verifiable scorers also read the prompt records' columns (instruction_id_list, ...)
                    extra = ({"records": batch, "source": cfg.data.path, "tokenizer": tokenizer}
                             if getattr(scorer, "uses_records", False) else {})
                    rewards = scorer.score_candidates([p.messages for p in batch],
                                                      [[s.text for s in o] for o in outs], **extra)
                    for p, o, r in zip(batch, outs, rewards):
                        samples[p.index], scores[p.index] = o, r
                    samples_done += len(batch) * g.n
                    bar.update(len(batch))
                bar.update(len(shard) - len(todo))
                cand_lines, pair_lines, _ = _shard_records(shard, ok, samples, scores)
                pairs_name, cands_name = shard_names(k)
                write_atomic(out / cands_name, "".join(line + "\n" for line in cand_lines))
                write_atomic(out / pairs_name, "".join(line + "\n" for line in pair_lines))
            elapsed = time.perf_counter() - start
            bar.close()
        summary = summarise(out, len(shards))
        rate = samples_done / elapsed if elapsed > 0 else None
        run.finish("completed", **summary, samples_per_second_last_attempt=rate)
        return GenerateResult(out, summary["prompts"], summary["pairs"], summary["dropped"], sum(done), rate)
