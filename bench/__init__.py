"""Benchmark of ``simpo train`` against TRL 1.16 (``python -m bench``; see bench/README.md)."""
