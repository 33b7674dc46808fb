"""`run_eval` in-process, without a run directory: a model path plus data."""

import json

import pytest

from tests.helpers import compose


def test_model_path_plus_data_with_the_policy_as_its_own_reference(tmp_path, tiny_model, tiny_tokenizer):
    """Without run=, the composed groups are used as given; with reference = the policy itself,
    KL is exactly 0 and the held-out status is unknown. A real-model preset (llama3-instruct)
    picks its family's AlpacaEval preset (temperature 0.9)."""
    from simpo_cli.stages.eval import run_eval

    local = tmp_path / "local-llama"
    tiny_model.save_pretrained(local)
    tiny_tokenizer.save_pretrained(local)
    cfg = compose(["model=llama3-instruct", f"model.name_or_path={local}", "model.dtype=float32",
                   "model.attn_implementation=eager", "data.max_samples=6", "hparams.max_length=96",
                   "hparams.max_prompt_length=48", f"reference.name_or_path={local}", "eval.benchmarks=[alpaca_eval]",
                   "eval.limit=1", "eval.max_new_tokens=2", "eval.model_id=local-test",
                   f"paths.cache_dir={tmp_path / 'cache'}"], "eval")
    result = run_eval(cfg, tmp_path / "out")
    s = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert s == json.loads(json.dumps(result.summary, default=str))
    p = s["pairs"]
    assert p["n_pairs"] == 6 and p["held_out"] is None and s["run"] is None and s["device"] == "cpu"
    assert p["kl_chosen"]["per_sequence"] == 0.0 and p["kl_chosen"]["per_token"] == 0.0
    b = s["benchmarks"]["alpaca_eval"]
    assert b["temperatures"] == {"0.9": 1} and b["max_new_tokens"] == 2
    rows = json.loads((tmp_path / "out" / "alpaca_eval/model_outputs.json").read_text())
    assert rows[0]["generator"] == "local-test"
    assert "held-out status unknown" in (tmp_path / "out" / "report.md").read_text()


def test_a_failed_eval_is_recorded_and_raises_a_user_error(tmp_path):
    from simpo_cli.errors import UserError
    from simpo_cli.stages.eval import run_eval

    cfg = compose(["data=local", f"data.path={tmp_path / 'missing.jsonl'}", "eval.benchmarks=[]",
                   f"paths.cache_dir={tmp_path / 'cache'}"], "eval")
    with pytest.raises(UserError, match="missing.jsonl"):
        run_eval(cfg, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["status"] == "failed" and not (tmp_path / "out" / "eval.json").exists()
