"""PNG plots of ``simpo eval`` and of training runs (matplotlib, headless Agg backend), written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def margin_histogram(path: Path, margins, bins: int, title: str, xlabel: str) -> None:
    """Histogram of reward margins r(y_w) − r(y_l) with the zero line (paper Fig. 4/6 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(margins, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(m, bins=bins, color="#4C72B0", edgecolor="white")
    ax.axvline(0.0, color="black", linewidth=1, linestyle="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.set_title(f"{title}\nmean {m.mean():.3f}, accuracy {np.mean(m > 0):.1%} (n={m.size})")
    _save(fig, Path(path))
    plt.close(fig)


def loglik_vs_length(path: Path, series: dict, title: str) -> None:
    """Scatter of average log-likelihood (nats/token) against response length (tokens), one colour
    per series ``{label: (lengths, avg_logps, spearman)}`` (paper Fig. 2b/c)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (label, (lengths, avg, rho)), color in zip(series.items(), ("#4C72B0", "#DD8452", "#55A868")):
        ax.scatter(lengths, avg, s=14, alpha=0.7, color=color, label=f"{label} (Spearman ρ = {rho:.3f})")
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel("average log-likelihood (nats/token)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    _save(fig, Path(path))
    plt.close(fig)


CURVE_PANELS = (
    ("loss", ("loss",)),
    ("rewards (chosen, rejected)", ("rewards/chosen", "rewards/rejected")),
    ("reward margin", ("rewards/margins",)),
    ("reward accuracy", ("rewards/accuracies",)),
)


def training_curves(metrics_path: Path, path: Path, title: str) -> bool:
    """``curves.png``: loss, rewards/chosen and rewards/rejected, margins and accuracy against the
    optimizer step, from a run's ``metrics.jsonl`` (training log records; an SFT run has only
    loss). Chosen and rejected rewards falling together is the classic sign of a run that lowers
    both likelihoods. Returns False (and writes nothing) when there is no logged step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = []
    if Path(metrics_path).is_file():
        for line in Path(metrics_path).read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                if "loss" in record:  # training records (the others are eval / summary lines)
                    rows.append(record)
    if not rows:
        return False
    panels = [(label, keys) for label, keys in CURVE_PANELS if any(k in r for r in rows for k in keys)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (label, keys) in zip(axes[0], panels):
        for key, color in zip(keys, ("#4C72B0", "#DD8452")):
            points = [(r["step"], r[key]) for r in rows if key in r]
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3,
                    color=color, label=key)
        if label == "reward margin":
            ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(label)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, y=1.02)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
    return True
