import torch

from simpo_cli.objectives import PreferenceLogps


def make_logps(chosen, rejected, chosen_lengths=None, rejected_lengths=None, ref_chosen=None,
               ref_rejected=None, kl=None, ref_kl=None) -> PreferenceLogps:
    """Build a ``PreferenceLogps`` from plain lists (lengths default to 1)."""
    t = lambda v: None if v is None else torch.tensor(v, dtype=torch.float64)  # noqa: E731
    n = len(chosen)
    return PreferenceLogps(
        chosen=t(chosen), rejected=t(rejected),
        chosen_lengths=torch.tensor(chosen_lengths or [1] * n), rejected_lengths=torch.tensor(rejected_lengths or [1] * n),
        ref_chosen=t(ref_chosen), ref_rejected=t(ref_rejected), kl=t(kl), ref_kl=t(ref_kl),
    )
