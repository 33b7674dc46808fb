"""What ``simpo train`` prints at the end (simpo_cli/stages/summaries.py), with its diagnostics."""

from pathlib import Path

from simpo_cli.evaluation import diagnostics as D
from simpo_cli.stages.summaries import print_train
from simpo_cli.stages.train import TrainResult


def metrics(chosen, rejected, margin):
    return {"logps/chosen": chosen, "logps/rejected": rejected, "rewards/margins": margin,
            "rewards/accuracies": 0.5, "loss": 0.7}


def printed(capsys, before, after, pairs_label) -> str:
    """What ``print_train`` shows for a run whose pair metrics went ``before`` -> ``after``."""
    pairs = D.pair_diagnostics(before, after)
    print_train(TrainResult(Path("runs/x"), 12, 0.7, before, after, pairs_label,
                            diagnostics={"findings": pairs.pop("findings"), "pairs": pairs}))
    return capsys.readouterr().out


def test_a_displacing_run_prints_the_finding_with_numbers_and_remedies(capsys):
    out = printed(capsys, metrics(-2.571, -2.691, 0.300), metrics(-2.679, -2.805, 0.314),
                  "48 held-out pairs of test (of 48)")
    assert "-2.5710 -> -2.6790 (-0.1080)" in out and "both fell" in out
    assert "findings (1):" in out
    assert "likelihood_displacement: held-out chosen log-likelihood fell -2.5710 -> -2.6790 nats/token" in out
    assert "objective.sft_weight" in out and "princeton-nlp/SimPO README, 'Hyperparameter tuning'" in out


def test_a_clean_run_prints_no_finding(capsys):
    out = printed(capsys, metrics(-8.3, -8.3, 0.0), metrics(-8.1, -8.5, 0.9), "train")
    assert "apart (chosen rose, rejected fell)" in out and "findings" not in out
    print_train(TrainResult(Path("runs/x"), 2, 0.8))  # trainer.evaluate=false: no pair rows, no error
    assert "log-likelihood" not in capsys.readouterr().out
