"""Results that do not depend on batch composition or thread count.

Two things make the same sequence's logits differ in the last float bits (measured with torch
2.13 on an AVX512 Xeon: the tiny reward model's scores moved by ~4e-9 between batch sizes 1, 3
and 8, and between 1 and 2 threads):

- batch shape: padding width and rows per forward change the matmul blocking and which elements
  of an elementwise kernel fall in its vectorised body or its scalar tail (``silu``/``exp``
  round differently in the two);
- thread count: ATen splits elementwise kernels into one chunk per thread, each with its own
  scalar tail, and MKL picks kernels by thread count.

So every computation whose result is written (reward scores, sampled tokens, evaluation
log-probs) runs as a unit whose tensor shapes depend only on its own inputs (one prompt's
candidates, one pair), and on CPU with one intra-op thread (``one_cpu_thread``). The result is
then a pure function of the input on a given machine and torch build; different CPU kernels
(AVX2 vs AVX512) or GPUs can still differ in the last bits.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_cpu_thread(device: torch.device | str):
    """Run the block with ``torch.set_num_threads(1)`` when ``device`` is a CPU (restored after);
    a no-op on GPUs, whose kernels do not depend on the host's thread count. Cost: scoring and
    sampling use one core on a multi-core CPU (see bench/generate_pairs.py)."""
    if torch.device(device).type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
