"""``simpo eval``'s answer diagnostics end to end (in process, two tiny models, IFEval prompts so
that the starting model answers too): a randomly initialised tiny model loops ("cuptt cuptt ..."),
so its answers are flagged, listed in report.md and counted before (the starting model) and after."""

from simpo_cli.config.schema import TinyModelConfig
from simpo_cli.evaluation.diagnostics import repetition_share
from simpo_cli.models.loading import build_tiny_model
from simpo_cli.stages.eval import run_eval
from simpo_cli.stages.summaries import print_eval
from tests.helpers import compose, read_jsonl


def two_models(tmp_path, tiny_model, tiny_tokenizer):
    """The policy and a differently seeded tiny model as its starting model, saved locally."""
    for name, model in (("policy", tiny_model), ("start", build_tiny_model(TinyModelConfig(seed=5), tiny_tokenizer))):
        model.save_pretrained(tmp_path / name)
        tiny_tokenizer.save_pretrained(tmp_path / name)


def test_looping_answers_are_listed_with_the_rate_before_and_after(tmp_path, tiny_model, tiny_tokenizer, capsys):
    two_models(tmp_path, tiny_model, tiny_tokenizer)
    args = [f"model.name_or_path={tmp_path / 'policy'}", f"reference.name_or_path={tmp_path / 'start'}",
            "eval.pairs=false", "eval.benchmarks=[ifeval]", "eval.limit=4", "eval.max_new_tokens=32",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    result = run_eval(compose(args, "eval"), tmp_path / "a")
    a = result.summary["benchmarks"]["ifeval"]["answers"]
    after, before = a["after"], a["before"]
    # The stats are those of the answer files the stage wrote.
    written = {"after": read_jsonl(tmp_path / "a/ifeval/input_response_data.jsonl"),
               "before": read_jsonl(tmp_path / "a/ifeval/before/input_response_data.jsonl")}
    for when, stats in (("after", after), ("before", before)):
        loops = [r["response"] for r in written[when] if repetition_share(r["response"], 4)[0] > 0.25]
        assert stats["n"] == 4 and stats["repetition_rate"] == len(loops) / 4
        assert [f["answer"] for f in stats["flagged"]] == loops
        assert stats["mean_tokens"] <= 32 and set(stats["distinct"]) == {"distinct-1", "distinct-2"}
    assert after["flagged"], "the tiny policy is expected to loop within 32 tokens"
    assert after["repetition_rate"] > before["repetition_rate"]

    codes = [f["code"] for f in result.summary["diagnostics"]["findings"]]
    assert codes == ["answers_repeat"]
    report = (tmp_path / "a/report.md").read_text()
    assert "## Findings" in report and "answers_repeat: ifeval:" in report
    assert f"{before['repetition_rate']:.1%} → {after['repetition_rate']:.1%}" in report
    assert "looping answers, trained model" in report
    for f in after["flagged"]:
        assert f"| {f['id']} | {f['share']:.0%} | {f['repeated']} |" in report

    print_eval(result)
    out = capsys.readouterr().out
    assert "looping answers (start -> trained)" in out and "answers_repeat: ifeval:" in out


def test_answers_before_on_single_turn_benchmarks(tmp_path, tiny_model, tiny_tokenizer):
    """diagnostics.answers_before=true: the starting model answers AlpacaEval too (sampled with the
    benchmark's temperatures, which are part of its cache key); MT-Bench (two turns) stays after-only."""
    two_models(tmp_path, tiny_model, tiny_tokenizer)
    args = [f"model.name_or_path={tmp_path / 'policy'}", f"reference.name_or_path={tmp_path / 'start'}",
            "eval.pairs=false", "eval.benchmarks=[alpaca_eval,mt_bench]", "eval.limit=2", "eval.max_new_tokens=8",
            f"paths.cache_dir={tmp_path / 'cache'}", "diagnostics.answers_before=true"]
    s = run_eval(compose(args, "eval"), tmp_path / "a").summary["benchmarks"]
    before = s["alpaca_eval"]["answers"]["before"]
    assert before["n"] == 2 and before["mean_tokens"] <= 8 and s["mt_bench"]["answers"]["before"] is None
    assert len(list((tmp_path / "cache/ifeval").iterdir())) == 1
    run_eval(compose([*args, "benchmarks.alpaca_eval.default_temperature=0.3"], "eval"), tmp_path / "b")
    assert len(list((tmp_path / "cache/ifeval").iterdir())) == 2
    # Off (the default): no starting-model answers for AlpacaEval.
    s = run_eval(compose(args[:-1], "eval"), tmp_path / "c").summary["benchmarks"]
    assert s["alpaca_eval"]["answers"]["before"] is None
