"""``simpo report`` on a sweep of experiments (``simpo run -m``): one job per experiment directory,
ranked by its final stage's metric; the stages inside are not jobs of their own."""

import json

from simpo_cli.files import write_json
from simpo_cli.sweeps.report import write_report


def _experiment(root, num, objective, prompt_loose, eval_status="completed"):
    exp = root / str(num)
    write_json(exp / "meta.json", {"stage": "run", "status": "completed" if eval_status == "completed" else "failed",
                                   "overrides": ["experiment=ifeval-smoke", f"objective={objective}"]})
    write_json(exp / "01-generate-pairs" / "meta.json", {"stage": "generate-pairs", "status": "completed",
                                                         "prompts": 12, "pairs": 3})
    write_json(exp / "02-train" / "meta.json", {"stage": "train", "status": "completed", "final_loss": 0.5, "steps": 4})
    write_json(exp / "03-eval" / "meta.json", {"stage": "eval", "status": eval_status})
    bench = {"ifeval": {"metrics": {"prompt_loose": {"value": prompt_loose}, "prompt_strict": {"value": 0.1}},
                        "before": {"metrics": {"prompt_loose": {"value": 0.25}}},
                        "paired": {"prompt_loose": {"difference": prompt_loose - 0.25}},
                        "length_words": {"mean": 40.0}}}
    write_json(exp / "03-eval" / "eval.json", {"benchmarks": {"ifeval": bench, "alpaca_eval": {"file": "x"}}})
    write_json(exp / "experiment.json", {"stages": [{"dir": d} for d in ("01-generate-pairs", "02-train", "03-eval")]})


def test_report_ranks_experiments_by_their_final_stage_metric(tmp_path):
    _experiment(tmp_path, 0, "simpo", 0.5)
    _experiment(tmp_path, 1, "dpo", 0.75)
    _experiment(tmp_path, 2, "ipo", 1.0, eval_status="failed")  # its eval failed: not ranked
    report = write_report(tmp_path, metric="ifeval/prompt_loose")
    assert sorted(j.dir for j in report.jobs) == ["0", "1", "2"]  # the stages are no jobs of their own
    assert [j.dir for j in report.ranked] == ["1", "0"]
    best = report.ranked[0].metrics
    assert best["ifeval/difference/prompt_loose"] == 0.5 and best["ifeval/before/prompt_loose"] == 0.25
    assert best["final_loss"] == 0.5 and best["pairs"] == 3  # earlier stages' numbers too
    assert "ifeval/prompt_loose" not in [m for j in report.jobs if j.dir == "2" for m in j.metrics]
    assert report.best_line == "simpo run experiment=ifeval-smoke objective=dpo"
    table = (tmp_path / "report" / "report.md").read_text()
    assert "| 1 | 1 | dpo | 0.75 |" in table and "simpo run experiment=ifeval-smoke objective=dpo" in table
    assert json.loads((tmp_path / "1" / "experiment.json").read_text())  # left as it was
