"""``simpo report``'s diagnostic columns: which jobs drifted (findings from training and from the
job's latest eval), the log-likelihood changes and the eval's loop rate, on a hand-made sweep."""

import csv
import io
import json

from simpo_cli.files import write_json
from simpo_cli.sweeps.report import collect_jobs, write_report
from tests.helpers import run_simpo

DISPLACED = {"code": "likelihood_displacement", "message": "...", "remedies": [], "numbers": {}}
LOOPS = {"code": "answers_repeat", "message": "...", "remedies": [], "numbers": {}}


def job(root, num, acc, chosen_change=None, findings=None, eval_summary=None):
    d = root / str(num)
    meta = {"stage": "train", "status": "completed", "ended": f"2026-12-06T04:00:0{num}+00:00",
            "overrides": [f"objective.beta={num}"], "steps": 2, "final_loss": 0.5,
            "pairs_after": {"rewards/accuracies": acc}}
    if findings is not None:  # a run from before diagnostics existed records none
        meta["diagnostics"] = {"pairs": {"unit": "nats/token", "chosen_change": chosen_change,
                                         "rejected_change": -0.3, "movement": "both fell"},
                               "findings": findings}
    write_json(d / "meta.json", meta)
    if eval_summary is not None:
        write_json(d / "eval/2026-12-06/04-10-00/meta.json", {"stage": "eval", "status": "completed"})
        write_json(d / "eval/2026-12-06/04-10-00/eval.json", eval_summary)


def test_findings_and_diagnostic_numbers_are_columns(tmp_path):
    root = tmp_path / "sweep"
    answers = {"after": {"repetition_rate": 0.25, "mean_tokens": 40.0},
               "before": {"repetition_rate": 0.0, "mean_tokens": 32.0}}
    job(root, 0, 0.6, chosen_change=-0.11, findings=[DISPLACED])
    job(root, 1, 0.7, chosen_change=0.2, findings=[],
        eval_summary={"benchmarks": {"ifeval": {"answers": answers}}, "diagnostics": {"findings": [LOOPS]}})
    job(root, 2, 0.8, chosen_change=0.1, findings=[])
    job(root, 3, 0.5)  # older run: no diagnostics recorded

    jobs = {j.dir: j for j in collect_jobs(root)}
    assert jobs["0"].findings == ["likelihood_displacement"] and jobs["0"].metrics["diagnostics/chosen_change"] == -0.11
    assert jobs["1"].findings == ["answers_repeat"]
    assert jobs["1"].metrics["ifeval/loop_rate"] == 0.25 and jobs["1"].metrics["ifeval/before/loop_rate"] == 0.0
    assert jobs["1"].metrics["ifeval/mean_tokens"] == 40.0
    assert jobs["2"].findings == [] and jobs["3"].findings is None

    report = write_report(root, metric="rewards/accuracies")
    md = (report.out_dir / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert "diagnostics/chosen_change" in header and "diagnostics/rejected_change" in header
    assert header.endswith("| findings |")
    rows = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| ") and "rank" not in line}
    assert rows["0"].endswith("| -0.11 | -0.3 | likelihood_displacement |")
    assert rows["1"].endswith("| answers_repeat |") and rows["2"].endswith("| none |")
    assert rows["3"].endswith("|  |")
    table = {r["job"]: r for r in csv.DictReader(io.StringIO((report.out_dir / "report.csv").read_text()))}
    assert table["0"]["findings"] == "likelihood_displacement" and table["3"]["findings"] == ""
    assert table["1"]["ifeval/loop_rate"] == "0.25"
    # The command says which runs drifted.
    out = run_simpo(["report", str(root)], tmp_path).stdout.splitlines()
    assert "findings: 0: likelihood_displacement" in out and "findings: 1: answers_repeat" in out
    assert not [line for line in out if line.startswith(("findings: 2", "findings: 3"))]


def test_an_experiment_collects_the_findings_of_its_stages(tmp_path):
    exp = tmp_path / "sweep" / "0"
    write_json(exp / "meta.json", {"stage": "run", "status": "completed", "overrides": ["objective=simpo"]})
    write_json(exp / "02-train/meta.json", {"stage": "train", "status": "completed",
                                            "diagnostics": {"pairs": {}, "findings": [DISPLACED]}})
    write_json(exp / "03-eval/meta.json", {"stage": "eval", "status": "completed"})
    write_json(exp / "03-eval/eval.json", {"diagnostics": {"findings": [LOOPS, DISPLACED]}})
    (exp / "experiment.json").write_text(json.dumps({"stages": [{"dir": "02-train"}, {"dir": "03-eval"}]}))
    (job,) = collect_jobs(tmp_path / "sweep")
    assert job.findings == ["likelihood_displacement", "answers_repeat"]
