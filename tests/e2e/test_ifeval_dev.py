"""The dev split of the bundled IFEval-style prompts is an eval benchmark (``ifeval_dev``) beside
IFEval itself: each scored, each in a directory of its own, both in ``simpo report``'s metrics."""

from simpo_cli.stages.eval import run_eval
from simpo_cli.sweeps.report import eval_metrics
from tests.helpers import compose, read_jsonl


def test_ifeval_and_the_dev_split_in_one_eval(tmp_path):
    cfg = compose(["eval.pairs=false", "eval.benchmarks=[ifeval,ifeval_dev]", "eval.limit=2", "eval.max_new_tokens=4",
                   f"paths.cache_dir={tmp_path / 'cache'}"], "eval")
    summary = run_eval(cfg, tmp_path / "e").summary
    dev = read_jsonl(tmp_path / "e" / "ifeval-dev" / "input_response_data.jsonl")
    ifeval = read_jsonl(tmp_path / "e" / "ifeval" / "input_response_data.jsonl")
    assert len(dev) == len(ifeval) == 2 and dev[0]["prompt"].startswith("Add three examples of vernacular architecture.")
    assert summary["benchmarks"]["ifeval_dev"]["file"] == "ifeval-dev/input_response_data.jsonl"
    metrics = eval_metrics(summary)
    for name in ("ifeval", "ifeval_dev"):
        assert metrics[f"{name}/prompt_loose"] == summary["benchmarks"][name]["ifeval"]["metrics"]["prompt_loose"]["value"]
