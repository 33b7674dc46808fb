"""curves.png from a run's metrics.jsonl: one panel per logged quantity, nothing without steps."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simpo_cli.evaluation import plots  # noqa: E402


def _metrics(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_preference_run_gets_four_panels(tmp_path, monkeypatch):
    rows = [{"step": s, "loss": 1.0 / s, "rewards/chosen": -1.0 + 0.1 * s, "rewards/rejected": -1.0 - 0.2 * s,
             "rewards/margins": 0.3 * s, "rewards/accuracies": 0.5 + 0.05 * s} for s in range(1, 6)]
    rows.append({"step": 5, "train_runtime": 3.0, "train_loss": 0.4})  # the trainer's closing record: skipped
    seen = {}
    real_save = plots._save

    def spy(fig, path):
        seen["panels"] = [(ax.get_title(), [line.get_label() for line in ax.get_lines() if line.get_label()[0] != "_"],
                           [list(line.get_xdata()) for line in ax.get_lines() if line.get_label()[0] != "_"])
                          for ax in fig.axes]
        real_save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    assert plots.training_curves(_metrics(tmp_path / "metrics.jsonl", rows), tmp_path / "curves.png", "t")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    titles = [t for t, _, _ in seen["panels"]]
    assert titles == ["loss", "rewards (chosen, rejected)", "reward margin", "reward accuracy"]
    assert seen["panels"][1][1] == ["rewards/chosen", "rewards/rejected"]
    assert all(xs == [[1, 2, 3, 4, 5]] * len(xs) for _, _, xs in seen["panels"])
    plt.close("all")


def test_sft_run_gets_the_loss_panel_only(tmp_path):
    rows = [{"step": 1, "loss": 2.0}, {"step": 1, "heldout_loss": 2.1}, {"step": 2, "loss": 1.5}]
    assert plots.training_curves(_metrics(tmp_path / "metrics.jsonl", rows), tmp_path / "curves.png", "sft")
    assert (tmp_path / "curves.png").is_file()


def test_no_logged_step_writes_nothing(tmp_path):
    assert not plots.training_curves(_metrics(tmp_path / "metrics.jsonl", []), tmp_path / "curves.png", "t")
    assert not plots.training_curves(tmp_path / "missing.jsonl", tmp_path / "curves.png", "t")
    assert not (tmp_path / "curves.png").exists()
