"""Sampling ``n`` responses per prompt, reproducibly, for ``simpo generate-pairs``.

Reproducibility does not come from a global RNG (whose draws depend on batch composition) but from
the Gumbel-max trick with counter-based noise: for the response ``j`` of prompt ``i`` the noise at
decoding step ``t`` over vocabulary entry ``v`` is a fixed hash of ``(row_key(seed, i, j), t, v)``.
``argmax(scores + Gumbel)`` is an exact sample from ``softmax(scores)`` (Gumbel 1954; Maddison et
al. 2014, "A* sampling"), so each response depends only on its own key and the model's logits:
the same whichever prompts share its batch, in which order, or whether a run was resumed. Logits
themselves differ in the last float bit between batch shapes and thread counts, which could flip
a near-tie token. Two decoders:

- ``BatchedDecoder`` (default): many prompts and samples per forward pass, length-sorted, finished
  rows dropped; every answer is reproducible for a fixed command (same prompts, batch size,
  thread count, machine), not across batch sizes or thread counts;
- ``Sampler`` (``generation.batch_invariant=true`` / ``eval.batch_invariant=true``): each prompt
  decoded in its own batch on one CPU thread, so an answer is bit-identical whatever the batch
  size, the other prompts or the thread count; several times slower (bench/README.md).

Backends: ``transformers`` (``model.generate`` with a KV cache, left padding, CPU or GPU) and
``vllm`` (per-request ``SamplingParams.seed``; optional extra, not exercised in CI).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from dataclasses import dataclass

import torch
from transformers import (DynamicCache, GenerationConfig, LogitsProcessor, LogitsProcessorList,
                          TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from simpo_cli.data.templates import prompt_ids
from simpo_cli.errors import UserError
from simpo_cli.models.invariance import one_cpu_thread

log = logging.getLogger(__name__)
MASK32 = 0xFFFFFFFF


def row_key(seed: int, index: int, sample: int) -> int:
    """The 64-bit key of response ``sample`` of the prompt at source position ``index``."""
    digest = hashlib.blake2b(f"simpo-cli/generate-pairs/{seed}/{index}/{sample}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32) without overflowing int64 (16-bit halves)."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash with strong avalanche (C. Wellons' "lowbias32")."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_noise(keys: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """Uniforms in (0, 1), shape ``[R, V]`` float32, a pure function of ``(key, step, vocab id)``.

    ``keys``: ``[R]`` int64 tensor of 64-bit row keys stored as two 32-bit lanes ``[R, 2]``.
    24 bits of each hash are used (the resolution of ``torch.rand`` in float32).
    """
    lo, hi = keys[:, 0], keys[:, 1]
    step_h = _mix32(torch.full_like(lo, (step * 0x9E3779B9) & MASK32))
    h = _mix32(_mix32(lo ^ step_h) ^ hi)  # [R]: one stream per (row, step)
    vocab = torch.arange(vocab_size, device=keys.device, dtype=torch.int64)
    h = _mix32(h[:, None] ^ vocab[None, :])
    h = _mix32((h + 0x6A09E667) & MASK32)  # a second round: neighbouring vocab ids decorrelate
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def split_keys(keys: list[int]) -> torch.Tensor:
    return torch.tensor([[k & MASK32, (k >> 32) & MASK32] for k in keys], dtype=torch.int64)


class SeededGumbelNoise(LogitsProcessor):
    """A ``LogitsProcessor`` that adds per-row Gumbel(0, 1) noise keyed by ``row_key``; greedy
    decoding over its output samples from the (temperature/top-p/top-k processed) distribution.

    ``keys``: one 64-bit key per row of the batch; ``prompt_length``: the padded prompt width, so
    ``input_ids.shape[1] - prompt_length`` is the decoding step. Masked (-inf) scores stay -inf.
    """

    def __init__(self, keys: list[int], prompt_length: int):
        self.keys = split_keys(keys)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        keys = self.keys.to(scores.device)
        u = uniform_noise(keys, step, scores.shape[-1]).to(scores.dtype)
        return scores - torch.log(-torch.log(u))


@dataclass
class Sample:
    text: str
    num_tokens: int  # generated tokens, the end-of-sequence token excluded
    finish_reason: str  # stop (end-of-sequence) | length (max_new_tokens reached)


def encode_prompt(messages: list[dict], tokenizer, template: bool) -> list[int]:
    """Prompt token ids exactly as ``simpo train`` renders them (data/tokenize.py ``encode_pair``):
    the chat template with the generation prompt, or TRL-CPO's plain text with BOS."""
    return prompt_ids(messages, tokenizer, template)


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


def sampling_warpers(temperature: float, top_p: float, top_k: int) -> list:
    """transformers' own sampling warpers, in its order: temperature, top-k, top-p."""
    warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return warpers


class Sampler:
    """Seeded sampling with ``model.generate`` (KV cache): the one sampler behind ``simpo
    generate-pairs`` (``TransformersBackend``) and ``simpo eval``'s benchmark answers
    (``evaluation.benchmarks.generate``).

    ``sample(prompt, keys, ...)`` decodes ``len(keys)`` responses to ONE prompt (token ids) as one
    batch of identical, unpadded rows, on CPU with one thread (``simpo_cli.models.invariance``).
    Response ``j`` is the greedy decode of the warped scores plus ``SeededGumbelNoise`` keyed by
    ``keys[j]`` (temperature 0: plain greedy, no noise). The batch's shapes depend only on this
    prompt and its keys, so the responses never depend on which other prompts are sampled, in
    what order or batch size, or on the thread count: batching prompts together would change the
    logits in the last float bit and, at a near tie, the sampled token.
    """

    def __init__(self, model, tokenizer, eos_ids: list[int] | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.device = next(model.parameters()).device
        self.eos = eos_ids if eos_ids else _eos_ids(model, tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos[0]
        self._list = LogitsProcessorList

    @torch.inference_mode()
    def sample(self, prompt: list[int], keys: list[int], *, temperature: float, max_new_tokens: int,
               top_p: float = 1.0, top_k: int = 0) -> list[Sample]:
        """``len(keys)`` ``Sample``s of ``prompt``, in key order."""
        input_ids = torch.tensor([prompt] * len(keys), dtype=torch.long, device=self.device)
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                  eos_token_id=self.eos, pad_token_id=self.pad)
        if temperature > 0:
            processors = [*sampling_warpers(temperature, top_p, top_k), SeededGumbelNoise(keys, len(prompt))]
        else:
            processors = []
        with one_cpu_thread(self.device):
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      generation_config=config, logits_processor=self._list(processors))
        return [self.to_sample(row.tolist()) for row in out[:, len(prompt):].cpu()]

    def to_sample(self, tokens: list[int], cut: bool = True, max_new_tokens: int | None = None) -> Sample:
        """A ``Sample`` from one row of generated ids: cut at the first end-of-sequence id
        (``cut=False``: ``tokens`` are already cut, as ``BatchedDecoder`` returns them; then an
        answer shorter than ``max_new_tokens`` stopped at an end-of-sequence id)."""
        if cut:
            stop = next((i for i, t in enumerate(tokens) if t in self.eos), None)
            kept, stopped = (tokens, False) if stop is None else (tokens[:stop], True)
        else:
            kept, stopped = tokens, max_new_tokens is not None and len(tokens) < max_new_tokens
        return Sample(self.tokenizer.decode(kept, skip_special_tokens=True), len(kept),
                      "stop" if stopped else "length")


# --------------------------------------------------------------------------- batched decoding (default)
# Batched decoding for ``simpo generate-pairs`` and ``simpo eval``: many prompts and samples per
# forward pass, finished rows dropped from the batch.
#
# Why not ``model.generate``: on a CPU a 135M-parameter model decodes at 12 tokens/s one prompt at a
# time and a batch of 32 left-padded prompts at ~130 tokens/s (issue 25), but ``generate`` keeps every
# finished row in the batch until the longest answer ends, runs the prompt of each of the ``n``
# samples ``n`` times, and has no per-row temperature. The loop below is the same greedy decoding
# over transformers' own pieces (``DynamicCache``, the model's forward with ``logits_to_keep=1``,
# ``TopKLogitsWarper``/``TopPLogitsWarper``) with three changes:
#
# - rows are ordered by prompt length (then source order) and cut into batches of ``batch_size`` rows,
#   so a batch pads little;
# - each distinct prompt of a batch is prefilled once and its KV cache repeated for its samples
#   (``Cache.batch_select_indices``);
# - a row that ends (end-of-sequence or ``max_new_tokens``) leaves the batch at once: the cache and
#   the attention mask keep only the live rows, so the remaining steps cost what the live rows cost.
#
# Sampling is ``Sampler``'s: row ``(prompt i, sample j)`` adds the counter-based Gumbel noise
# keyed by its own 64-bit key at decoding step ``t`` to the temperature/top-k/top-p processed scores
# and takes the argmax (temperature 0: plain argmax, no noise). Which noise a row gets never depends
# on the batch, but the logits do in their last float bits (batch shape, padding, thread count:
# ``models.invariance``), so an answer can differ at a near tie between batch sizes or thread counts.
# For a fixed command (same prompts, ``batch_size``, thread count, machine and torch build) the
# batches, the order in which rows finish and hence every token are the same on every run.
# ``generation.batch_invariant=true`` / ``eval.batch_invariant=true`` decode each prompt on its own
# instead (``models.generate.Sampler``), invariant to batch size and thread count, much slower.


@dataclass(frozen=True)
class Row:
    """One answer to decode: ``prompt`` token ids, its Gumbel key and temperature (0 = greedy)."""

    prompt: tuple[int, ...]
    key: int
    temperature: float


def plan_batches(rows: list[Row], batch_size: int) -> list[list[int]]:
    """Row indices in decoding batches: ordered by prompt length, then input position (stable, so
    a prompt's samples stay together), cut every ``batch_size`` rows. A pure function of the rows
    and ``batch_size``: the same command always decodes the same batches."""
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i].prompt), i))
    return [order[b:b + batch_size] for b in range(0, len(order), batch_size)]


class BatchedDecoder:
    """Decode ``Row``s in length-sorted batches of ``batch_size`` rows with a KV cache.

    ``eos_ids``: ids that end an answer (not included in the output); ``pad_id``: the left-padding
    id (masked out, its value never matters). ``top_p``/``top_k`` apply to every sampled row
    (transformers' warpers; 1.0 / 0 = off), after the row's temperature.
    """

    def __init__(self, model, eos_ids: list[int], pad_id: int, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.eos, self.pad, self.batch_size = model.eval(), list(eos_ids), pad_id, batch_size
        self.device = next(model.parameters()).device
        # transformers renamed the forward's ``past_key_values`` to ``cache`` (5.2x; the old name
        # is deprecated): use whichever this version's model takes.
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def decode(self, rows: list[Row], *, max_new_tokens: int, top_p: float = 1.0,
               top_k: int = 0) -> list[list[int]]:
        """Generated token ids of every row, in input order, cut before the first end-of-sequence
        id (an answer that hit ``max_new_tokens`` has exactly that many)."""
        out: list[list[int]] = [[] for _ in rows]
        warpers = ([TopKLogitsWarper(top_k)] if top_k > 0 else []) + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else [])
        for batch in plan_batches(rows, self.batch_size):
            for i, tokens in zip(batch, self._decode_batch([rows[i] for i in batch], max_new_tokens, warpers)):
                out[i] = tokens
        return out

    @torch.inference_mode()
    def _decode_batch(self, rows: list[Row], max_new_tokens: int, warpers: list) -> list[list[int]]:
        dev = self.device
        prompts = list(dict.fromkeys(r.prompt for r in rows))  # distinct prompts, first-seen order
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for u, p in enumerate(prompts):
            ids[u, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[u, width - len(p):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        cache = DynamicCache(config=self.model.config)
        # Left padding: positions count real tokens only, as model.generate computes them.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **{self.cache_arg: cache},
                            use_cache=True, logits_to_keep=1).logits[:, -1, :]
        # One prefill per distinct prompt, then each row takes its prompt's cache and logits.
        slot = {p: u for u, p in enumerate(prompts)}
        expand = torch.tensor([slot[r.prompt] for r in rows], dtype=torch.long, device=dev)
        cache.batch_select_indices(expand)
        logits, mask = logits[expand], mask[expand]

        live = list(range(len(rows)))  # batch position -> row
        keys = split_keys([r.key for r in rows]).to(dev)
        temps = torch.tensor([r.temperature for r in rows], dtype=torch.float32, device=dev)
        out: list[list[int]] = [[] for _ in rows]
        eos = torch.tensor(self.eos, dtype=torch.long, device=dev)
        for step in range(max_new_tokens):
            tokens = self._next_tokens(logits.float(), temps, keys, step, warpers)
            ended = torch.isin(tokens, eos)
            for b, (tok, end) in enumerate(zip(tokens.tolist(), ended.tolist())):
                if not end:
                    out[live[b]].append(tok)
            if step == max_new_tokens - 1:
                break
            keep = (~ended).nonzero().squeeze(-1)
            if keep.numel() == 0:
                break
            if keep.numel() < len(live):  # drop finished rows: the next steps skip them
                cache.batch_select_indices(keep)
                live = [live[b] for b in keep.tolist()]
                mask, keys, temps, tokens = mask[keep], keys[keep], temps[keep], tokens[keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            positions = mask.sum(-1, keepdim=True) - 1
            logits = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
                                **{self.cache_arg: cache}, use_cache=True, logits_to_keep=1).logits[:, -1, :]
        return out

    @staticmethod
    def _next_tokens(logits: torch.Tensor, temps: torch.Tensor, keys: torch.Tensor, step: int,
                     warpers: list) -> torch.Tensor:
        """``[R]`` next ids: argmax of the raw logits for greedy rows; for the others argmax of
        the temperature/top-k/top-p processed scores plus the row's Gumbel noise at ``step``
        (``SeededGumbelNoise``'s noise, so a sample is exact)."""
        greedy = temps <= 0
        if bool(greedy.all()):
            return logits.argmax(-1)
        scores = logits / torch.where(greedy, torch.ones_like(temps), temps)[:, None]
        for warp in warpers:
            scores = warp(None, scores)
        u = uniform_noise(keys, step, scores.shape[-1]).to(scores.dtype)
        sampled = (scores - torch.log(-torch.log(u))).argmax(-1)
        return torch.where(greedy, logits.argmax(-1), sampled)


class TransformersBackend:
    """``generation.backend=transformers``: ``generation.*``'s settings over one of two decoders.

    ``generate(prompts, keys)``: ``prompts`` are token-id lists, ``keys[i]`` the ``n`` row keys of
    prompt ``i``. Returns ``n`` ``Sample``s per prompt. By default the prompts of one call and all
    their samples are decoded together (``BatchedDecoder``, ``generation.batch_size`` prompts per
    call, so ``batch_size * n`` rows), reproducible for a fixed command; with
    ``generation.batch_invariant=true`` each prompt is decoded on its own (``Sampler``) and
    ``generation.batch_size`` changes how often results are gathered, never the responses.
    """

    def __init__(self, model, tokenizer, gen):
        self.gen = gen
        self.sampler = Sampler(model, tokenizer)
        self.model, self.tokenizer, self.device = self.sampler.model, tokenizer, self.sampler.device

    def generate(self, prompts: list[list[int]], keys: list[list[int]]) -> list[list[Sample]]:
        g = self.gen
        if g.get("batch_invariant", False):
            return [self.sampler.sample(p, ks, temperature=g.temperature, max_new_tokens=g.max_new_tokens,
                                        top_p=g.top_p, top_k=g.top_k) for p, ks in zip(prompts, keys)]
        rows = [Row(tuple(p), k, g.temperature) for p, ks in zip(prompts, keys) for k in ks]
        # One call's rows are one decoding batch: its composition is fixed by the shard and
        # generation.batch_size, whatever an earlier (killed) run had done.
        decoder = BatchedDecoder(self.model, self.sampler.eos, self.sampler.pad, max(1, len(rows)))
        tokens = decoder.decode(rows, max_new_tokens=g.max_new_tokens, top_p=g.top_p, top_k=g.top_k)
        samples = [self.sampler.to_sample(t, cut=False, max_new_tokens=g.max_new_tokens) for t in tokens]
        out, pos = [], 0
        for ks in keys:
            out.append(samples[pos:pos + len(ks)])
            pos += len(ks)
        return out


class VLLMBackend:
    """vLLM sampling, one request per (prompt, sample) with ``SamplingParams(seed=row key)``.
    vLLM batches the requests itself, so a response can depend on the other requests unless its
    batch-invariance mode is on (``VLLM_BATCH_INVARIANT=1``, beta, recent GPUs only:
    https://docs.vllm.ai/en/stable/features/batch_invariance/). UNTESTED in this project's CI (no
    GPU there): the code path is kept small on purpose. Samples differ from the transformers
    backend's."""

    def __init__(self, model_cfg, source, gen, seed: int):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("generation.backend=vllm needs vLLM: pip install 'simpo-cli[vllm]'") from None
        if source.kind in ("tiny", "adapter"):
            raise UserError("generation.backend=vllm needs a full model in model.name_or_path (the tiny "
                            "model and LoRA adapters are transformers-only)")
        self.gen = gen
        self.llm = LLM(model=source.location, tokenizer=source.tokenizer,
                       revision=model_cfg.revision, dtype=model_cfg.dtype, seed=seed,
                       trust_remote_code=model_cfg.trust_remote_code,
                       gpu_memory_utilization=gen.vllm_gpu_memory_utilization,
                       tensor_parallel_size=gen.vllm_tensor_parallel_size)

    def generate(self, prompts: list[list[int]], keys: list[list[int]]) -> list[list[Sample]]:
        from vllm import SamplingParams

        requests, params = [], []
        for p, ks in zip(prompts, keys):
            for k in ks:
                requests.append({"prompt_token_ids": p})
                params.append(SamplingParams(n=1, temperature=self.gen.temperature, top_p=self.gen.top_p,
                                             top_k=self.gen.top_k if self.gen.top_k > 0 else -1,
                                             max_tokens=self.gen.max_new_tokens, seed=k % (1 << 31)))
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        samples = [Sample(o.outputs[0].text, len(o.outputs[0].token_ids),
                          "stop" if o.outputs[0].finish_reason == "stop" else "length") for o in outputs]
        n = len(keys[0]) if keys else 0
        return [samples[i * n:(i + 1) * n] for i in range(len(prompts))]
