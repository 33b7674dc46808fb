"""Batching that wastes few tokens: length-grouped sampling and the padding-free forward switch.

Length grouping is transformers' own ``LengthGroupedSampler`` (``TrainingArguments(
train_sampling_strategy="group_by_length")``): megabatches of 50 batches drawn at random, sorted
by length inside, so a batch's rows are of similar width and little padding is scored. It reads
the lengths from the dataset's ``length`` column, which ``add_length_column`` fills with the
width a pair takes in ``PreferenceCollator``'s ``[2B, L]`` batch: prompt + the longer response.

It is on by default in ``simpo train`` (``trainer.group_by_length: null``) where it leaves the
results' statistics alone: every epoch still visits each pair exactly once in a seeded random
megabatch order, and the loss is a mean of per-pair terms, so the epoch's summed gradient and every
pair metric are those of random batches; only which pairs share a step changes (the longest batch
comes first, so an out-of-memory error shows at step 1). Objectives whose loss couples the
examples of a batch (``ObjectiveSpec.needs_mismatched``: KTO's z_ref is a batch-mean KL) keep
random batches, since length-sorted batches would bias that estimate.

Padding-free packing (``trainer.padding_free``, ``simpo_cli.training.logps``) is on by default with
flash-attention (varlen kernels) and sdpa (one causal sdpa call per packed sequence,
``simpo_cli.models.packed_attention``): the body then runs on real tokens only. On SmolLM2 (batch
4 x 512, CPU) it took 0.63x the padded step's time and 0.73x its peak RSS (``bench/README.md``).
Eager attention (Gemma-2) keeps padded batches: packing would need a dense ``[T, T]`` mask.
"""

from __future__ import annotations

LENGTH_COLUMN = "length"


def length_grouping(setting: bool | None, spec) -> bool:
    """``trainer.group_by_length`` resolved for objective ``spec``: true/false as given; null → on
    unless ``spec.needs_mismatched`` (a batch-level statistic in the loss)."""
    if setting is not None:
        return bool(setting)
    return not spec.needs_mismatched


def pair_length(example: dict) -> int:
    """Tokens of the pair's longer row: ``len(prompt) + max(len(chosen), len(rejected))``."""
    return len(example["prompt_input_ids"]) + max(len(example["chosen_input_ids"]),
                                                  len(example["rejected_input_ids"]))


def add_length_column(dataset):
    """``dataset`` plus an int ``length`` column (``pair_length`` of each row); a no-op when present."""
    if LENGTH_COLUMN in dataset.column_names:
        return dataset
    p, c, r = (dataset[k] for k in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids"))
    return dataset.add_column(LENGTH_COLUMN, [len(a) + max(len(b), len(d)) for a, b, d in zip(p, c, r)])


def padding_fraction(dataset, batch_size: int, order=None) -> float:
    """Share of the ``[2B, L]`` batch cells that are padding when ``dataset`` is cut into batches
    of ``batch_size`` pairs in ``order`` (default: dataset order). For logs and the benchmark."""
    order = list(order) if order is not None else list(range(len(dataset)))
    p, c, r = (dataset[k] for k in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids"))
    rows = [(len(p[i]) + len(c[i]), len(p[i]) + len(r[i])) for i in order]
    cells = real = 0
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        width = max(max(r) for r in chunk)
        cells += 2 * len(chunk) * width
        real += sum(sum(r) for r in chunk)
    return 1 - real / cells if cells else 0.0
