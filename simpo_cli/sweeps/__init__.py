"""Sweeps: one Hydra multirun job's bookkeeping (skip completed, record failures) and ``simpo report``."""
