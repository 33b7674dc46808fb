"""Training: the preference trainer, per-sequence log-probs, the reference model, batching, and the
reliability mixin (atomic checkpoints, resume, signals, NaN guard)."""
