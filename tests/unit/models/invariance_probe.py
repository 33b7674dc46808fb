"""Reward scores, sampled responses and evaluation log-probs of fixed inputs, printed as one JSON
object with every float in ``float.hex`` (exact bits). Run in subprocesses with different
``OMP_NUM_THREADS`` by ``test_batch_invariance.py``: ``python -m tests.unit.models.invariance_probe``."""

from __future__ import annotations

import json

from tests.unit.models.test_batch_invariance import CANDIDATES, PROMPTS, eval_logps, sampler_outputs, tiny_scorer


def main() -> None:
    scores = tiny_scorer(8).score_candidates(PROMPTS, CANDIDATES)
    logps = eval_logps()
    print(json.dumps({"scores": [[s.hex() for s in row] for row in scores],
                      "samples": sampler_outputs(),
                      "logps": {k: [float(v).hex() for v in vals] for k, vals in logps.items()}}))


if __name__ == "__main__":
    main()
