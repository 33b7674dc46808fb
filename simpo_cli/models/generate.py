"""Sampling ``n`` responses per prompt, reproducibly, for ``simpo generate-pairs``.

Reproducibility does not come from a global RNG (whose draws depend on batch composition) but from
the Gumbel-max trick with counter-based noise: for the response ``j`` of prompt ``i`` the noise at
decoding step ``t`` over vocabulary entry ``v`` is a fixed hash of ``(row_key(seed, i, j), t, v)``.
``argmax(scores + Gumbel)`` is an exact sample from ``softmax(scores)`` (Gumbel 1954; Maddison et
al. 2014, "A* sampling"), so each response depends only on its own key and the model's logits:
the same whichever prompts share its batch, in which order, or whether a run was resumed. (Logits
themselves can differ in the last float bit between batch shapes; see tests/generate_pairs.)

Backends: ``transformers`` (``model.generate`` with a KV cache, left padding, CPU or GPU) and
``vllm`` (per-request ``SamplingParams.seed``; optional extra, not exercised in CI).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch
from transformers import (GenerationConfig, LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

from simpo_cli.data.tokenize import plain_prompt
from simpo_cli.errors import UserError
from simpo_cli.models.loading import tokenizer_location

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
    if template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False).input_ids
    ids = tokenizer(plain_prompt(messages), add_special_tokens=False).input_ids
    if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    return ids


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


class TransformersBackend:
    """Batched sampling with ``model.generate`` (KV cache, left padding) and ``SeededGumbelNoise``.

    ``generate(prompts, keys)``: ``prompts`` are token-id lists, ``keys[i]`` the ``n`` row keys of
    prompt ``i``; all ``len(prompts) * n`` sequences run as one batch. Returns ``n`` ``Sample``s per
    prompt.
    """

    def __init__(self, model, tokenizer, gen):
        self.model, self.tokenizer, self.gen = model.eval(), tokenizer, gen
        self.device = next(model.parameters()).device
        self.eos = _eos_ids(model, tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos[0]
        # The order of transformers' own sampling warpers: temperature, top-k, top-p.
        warpers = [TemperatureLogitsWarper(gen.temperature)] if gen.temperature != 1.0 else []
        if gen.top_k > 0:
            warpers.append(TopKLogitsWarper(gen.top_k))
        if gen.top_p < 1.0:
            warpers.append(TopPLogitsWarper(gen.top_p))
        self._warpers, self._list = warpers, LogitsProcessorList

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], keys: list[list[int]]) -> list[list[Sample]]:
        rows = [p for p, ks in zip(prompts, keys) for _ in ks]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's next token is at the same column
            input_ids[i, width - len(r):] = torch.tensor(r)
            attention_mask[i, width - len(r):] = 1
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=self.gen.max_new_tokens,
                                  eos_token_id=self.eos, pad_token_id=self.pad)
        noise = SeededGumbelNoise([k for ks in keys for k in ks], width)
        out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                                  generation_config=config, logits_processor=self._list([*self._warpers, noise]))
        samples = [self._sample(row.tolist()) for row in out[:, width:].cpu()]
        n = len(keys[0]) if keys else 0
        return [samples[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _sample(self, tokens: list[int]) -> Sample:
        stop = next((i for i, t in enumerate(tokens) if t in self.eos), None)
        kept = tokens if stop is None else tokens[:stop]
        return Sample(self.tokenizer.decode(kept, skip_special_tokens=True), len(kept),
                      "length" if stop is None else "stop")


class VLLMBackend:
    """vLLM sampling, one request per (prompt, sample) with ``SamplingParams(seed=row key)`` so each
    response is reproducible regardless of batching. UNTESTED in this project's CI (no GPU there):
    the code path is kept small on purpose. Samples differ from the transformers backend's."""

    def __init__(self, model_cfg, gen, seed: int):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("generation.backend=vllm needs vLLM: pip install 'simpo-cli[vllm]'") from None
        if model_cfg.name_or_path is None:
            raise UserError("generation.backend=vllm needs model.name_or_path (the tiny model is "
                            "transformers-only)")
        self.gen = gen
        self.llm = LLM(model=model_cfg.name_or_path, tokenizer=tokenizer_location(model_cfg),
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
