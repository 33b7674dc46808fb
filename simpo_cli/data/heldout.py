"""Which pairs ``simpo train`` scores before and after training (its "pair metrics").

Reward accuracy on the pairs a model was trained on measures memorisation, and scoring a whole
training set twice costs two extra forward passes over all of it. So the pair metrics are on a
small held-out set by default:

- ``data.eval_split`` set: a seeded sample of at most ``trainer.eval_pairs`` pairs of that split;
- else ``data.eval_size > 0``: that many pairs (``< 1`` a fraction, ``>= 1`` a count, at least 1,
  at most ``trainer.eval_pairs``) carved from the tokenised training split with a seeded sample
  and removed from training — the same pairs on every run, rank and machine, and no second
  tokenisation (a ``select`` of rows already tokenised);
- else (``data.eval_size=0``): a seeded sample of at most ``trainer.eval_pairs`` training pairs,
  reported as NOT held out.

Samples use Python's ``random.Random(seed)`` (stable across platforms and versions) and keep the
dataset's order, so the training pairs keep their order too.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from simpo_cli.errors import UserError


@dataclass
class PairsInfo:
    """What the pair metrics are computed on, as recorded in ``meta.json["pairs"]``.

    ``split``: the split the pairs come from; ``held_out``: False when they are training pairs;
    ``count``: pairs scored; ``of``: pairs in the split they were drawn from (after tokenisation
    and drops); ``carved``: True when they were carved from the training split (then ``of`` is
    that split's size before carving)."""

    split: str
    held_out: bool
    count: int
    of: int
    carved: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """``"1 held-out pairs carved from train (of 16)"``, for the run's summary table."""
        if self.carved:
            return f"{self.count} held-out pairs carved from {self.split} (of {self.of})"
        if self.held_out:
            return f"{self.count} held-out pairs of {self.split} (of {self.of})"
        return f"{self.count} training pairs of {self.split} (of {self.of}), NOT held out"


def sample_indices(n: int, k: int | None, seed: int) -> list[int]:
    """``k`` indices of ``range(n)`` drawn without replacement with ``random.Random(seed)``, in
    increasing order; all of them when ``k`` is None or ``>= n``."""
    if k is None or k >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), k))


def carve_count(eval_size: float, n: int, cap: int | None) -> int:
    """Pairs to carve from ``n`` training pairs: ``round(eval_size * n)`` for a fraction, else
    ``int(eval_size)``; at least 1, at most ``cap``. Raises ``UserError`` when that leaves no
    training pair."""
    count = int(round(eval_size * n)) if eval_size < 1 else int(eval_size)
    count = max(count, 1)
    if cap is not None:
        count = min(count, cap)
    if count >= n:
        raise UserError(f"data.eval_size={eval_size} holds out {count} of the {n} training pairs and leaves "
                        "none to train on; set data.eval_size=0 (score training pairs), data.eval_split, "
                        "or trainer.evaluate=false")
    return count


def metric_pairs(train_ds, eval_ds, *, split: str, eval_split: str | None, eval_size: float,
                 cap: int | None, seed: int):
    """Choose the pairs of the before/after metrics (see the module docstring).

    Returns ``(train_ds, pairs_ds, PairsInfo)``: ``train_ds`` minus the carved pairs when
    carving, else unchanged. Raises ``UserError`` when carving would leave no training pair."""
    if eval_ds is not None:
        keep = sample_indices(len(eval_ds), cap, seed)
        return train_ds, eval_ds.select(keep), PairsInfo(eval_split or "eval", True, len(keep), len(eval_ds))
    n = len(train_ds)
    if eval_size > 0:
        held = sample_indices(n, carve_count(eval_size, n, cap), seed)
        held_set = set(held)
        rest = [i for i in range(n) if i not in held_set]
        return train_ds.select(rest), train_ds.select(held), PairsInfo(split, True, len(held), n, carved=True)
    keep = sample_indices(n, cap, seed)
    return train_ds, train_ds.select(keep), PairsInfo(split, False, len(keep), n)
