"""`simpo eval` end to end: a tiny 2-step SimPO run, then the real CLI on it."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.unit.evaluation import schemas
from tests.unit.evaluation.test_benchmarks import make_reward_model
from tests.helpers import FAST_TRAIN, read_jsonl, run_dirs, run_simpo

EXPECTED = ["eval.json", "report.md", "pairs.jsonl", "margins.png", "loglik_vs_length.png",
            "alpaca_eval/model_outputs.json", "arena-hard-v0.1/model_answer/tiny-llama-simpo.jsonl",
            "mt_bench/model_answer/tiny-llama-simpo.jsonl", "config.yaml", "meta.json"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Train 2 steps on the first 16 bundled pairs; evaluate on 12 pairs of the same public file the
    run never saw (records 200-211 of dpo_en_demo), 2 prompts per benchmark, 4 new tokens, and a
    tiny reward model judging AlpacaEval answers against a baseline file."""
    from simpo_cli.data.records import resolve_path
    from simpo_cli.models.loading import load_tokenizer
    from simpo_cli.config.schema import ModelConfig

    tmp = tmp_path_factory.mktemp("eval_e2e")
    run_simpo(["train", *FAST_TRAIN, "trainer.evaluate=false", "paths.output_root=out"], tmp)
    (run,) = run_dirs(tmp / "out")
    demo = json.loads(Path(resolve_path("pkg:data/dpo_en_demo.json")).read_text())
    (tmp / "heldout.json").write_text(json.dumps(demo[200:212]))
    tok = load_tokenizer(OmegaConf.structured(ModelConfig(name="tiny", tokenizer="pkg:tiny-tokenizer")))
    rm = make_reward_model(tmp / "rm", tok)
    prompts = json.loads(Path(resolve_path("pkg:benchmarks/alpaca-eval/eval_instructions.json")).read_text())[:2]
    baseline = [{"instruction": p["instruction"], "output": "I do not know.", "generator": "sft"} for p in prompts]
    (tmp / "baseline.json").write_text(json.dumps(baseline))
    proc = run_simpo(["eval", f"model={run}", f"data.path={tmp / 'heldout.json'}", "data.max_samples=null",
                      "eval.limit=2", "eval.max_new_tokens=4", f"judge.reward_model={rm}",
                      f"judge.baseline={tmp / 'baseline.json'}", "judge.n_resamples=200"], tmp)
    (out,) = [d for d in run_dirs(run / "eval")]
    return run, out, proc


def test_eval_writes_every_file(evaluated):
    run, out, proc = evaluated
    assert f"eval directory: {out}" in proc.stdout
    for rel in EXPECTED:
        assert (out / rel).is_file() and (out / rel).stat().st_size > 0, rel
    for png in ("margins.png", "loglik_vs_length.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    leftovers = [p.name for p in out.rglob(".*") if p.name != ".hydra" and ".hydra" not in p.parts]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["stage"] == "eval" and meta["status"] == "completed"
    assert set(meta["files"]) == set(EXPECTED) - {"config.yaml", "meta.json"}

    s = json.loads((out / "eval.json").read_text())
    assert s["run"] == str(run) and s["model"] == str(run / "model") and s["objective"] == "simpo"
    assert s["beta"] == 2.0 and s["reference"].startswith("tiny:")  # the run's starting model
    p = s["pairs"]
    assert p["n_pairs"] == 12 and p["held_out"] is True
    assert set(p["reward_accuracy"]) == {"objective", "length_normalized", "summed"}
    assert all(0 <= v <= 1 for v in p["reward_accuracy"].values())
    hist = p["margins"]["objective"]["histogram"]
    assert sum(hist["counts"]) == 12 and len(hist["edges"]) == 21
    assert -1 <= p["spearman_avg_logps_vs_length"]["chosen"] <= 1 and p["kl_chosen"]["n"] == 12
    for name in ("alpaca_eval", "arena_hard", "mt_bench"):
        b = s["benchmarks"][name]
        assert b["n_prompts"] == 2 and b["max_new_tokens"] == 4 and b["length_tokens"]["max"] <= 4
    assert s["benchmarks"]["mt_bench"]["n_turns"] == 4
    # Diagnostics: the held-out pairs' log-likelihoods start -> trained, each benchmark's answers
    # (after only: the starting model answers IFEval-format sets alone), MT-Bench by turn.
    d = p["diagnostics"]
    assert d["unit"] == "nats/token" and d["chosen_before"] == s["pairs"]["reference_model"]["avg_logps"]["chosen"]
    assert d["chosen_after"] == p["avg_logps"]["chosen"] and d["movement"]
    for name in ("alpaca_eval", "arena_hard", "mt_bench"):
        answers = s["benchmarks"][name]["answers"]
        assert answers["before"] is None and answers["after"]["n"] == s["benchmarks"][name]["n_turns"]
    assert isinstance(s["diagnostics"]["findings"], list)
    j = s["judge"]
    assert j["n"] == 2 and j["ci"][0] <= j["win_rate"] <= j["ci"][1] and j["wins"] + j["ties"] + j["losses"] == 2
    report = (out / "report.md").read_text()
    assert "held out" in report and "Win rate" in report and "KL" in report and "mt_bench" in report
    assert "## Findings" in report and "## Answer diagnostics" in report


def test_per_example_logps_match_a_direct_transformers_computation(evaluated):
    """Each pair's summed log-probs of chosen and rejected, for the trained policy and the reference
    (the run's starting model), recomputed one sequence at a time with plain transformers:
    log_softmax(logits[t-1])[token t] summed over the response tokens. Summed values agree to a
    relative 1e-5 (float32 sums of ~100 tokens), per-token averages to 1e-5 nats; KL follows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simpo_cli.config.schema import TinyModelConfig
    from simpo_cli.data.preference import build_preference_dataset
    from simpo_cli.models.loading import build_tiny_model

    run, out, _ = evaluated
    cfg = OmegaConf.load(out / "config.yaml")
    tok = AutoTokenizer.from_pretrained(run / "model")
    policy = AutoModelForCausalLM.from_pretrained(run / "model", dtype=torch.float32).eval()
    reference = build_tiny_model(TinyModelConfig(**cfg.model.tiny), tok).eval()
    ds, _ = build_preference_dataset(cfg.data, tok, cfg.hparams, None, split=cfg.data.split)
    rows = {r["index"]: r for r in read_jsonl(out / "pairs.jsonl")}
    assert len(rows) == len(ds) == 12

    def direct(model, prompt, response):
        ids = torch.tensor([list(prompt) + list(response)])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        targets = ids[0, 1:]
        return float(logp.gather(-1, targets[:, None])[len(prompt) - 1:].sum())

    kl_num, kl_den = 0.0, 0
    for ex in ds:
        row = rows[ex["index"]]
        for side in ("chosen", "rejected"):
            n = len(ex[f"{side}_input_ids"])
            assert row[f"{side}_length"] == n
            want = direct(policy, ex["prompt_input_ids"], ex[f"{side}_input_ids"])
            assert row[f"{side}_logps"] == pytest.approx(want, rel=1e-5)
            assert row[f"{side}_avg_logps"] == pytest.approx(want / n, abs=1e-5)
            ref = direct(reference, ex["prompt_input_ids"], ex[f"{side}_input_ids"])
            assert row[f"ref_{side}_logps"] == pytest.approx(ref, rel=1e-5)
        kl_num += row["chosen_logps"] - row["ref_chosen_logps"]
        kl_den += row["chosen_length"]
        assert row["chosen_reward_length_normalized"] == pytest.approx(2.0 * row["chosen_avg_logps"])
    kl = json.loads((out / "eval.json").read_text())["pairs"]["kl_chosen"]
    assert kl["per_token"] == pytest.approx(kl_num / kl_den, rel=1e-9)


def test_answer_files_pass_the_judges_schemas(evaluated):
    _, out, _ = evaluated
    alpaca = schemas.check_alpaca_eval(out / "alpaca_eval/model_outputs.json")
    arena = schemas.check_arena_hard(out / "arena-hard-v0.1/model_answer/tiny-llama-simpo.jsonl")
    mt = schemas.check_mt_bench(out / "mt_bench/model_answer/tiny-llama-simpo.jsonl")
    assert len(alpaca) == len(arena) == len(mt) == 2
    assert alpaca[0]["generator"] == arena[0]["model_id"] == mt[0]["model_id"] == "tiny-llama-simpo"


def test_bad_run_directory_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "nope").mkdir()
    (tmp_path / "nope" / "meta.json").write_text('{"stage": "train"}')
    proc = run_simpo(["eval", f"model={tmp_path / 'nope'}", "paths.output_root=out"], tmp_path, check=False)
    assert proc.returncode == 2
    err = [l for l in proc.stderr.splitlines() if l.strip()]
    assert err[-1].startswith("simpo: error: invalid config: model=") and "config.yaml" in err[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "nope" / "eval").exists()
    proc = run_simpo(["eval", f"run={tmp_path / 'nope'}"], tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(f"run= is gone; evaluate a train run with "
                                                                 f"model={tmp_path / 'nope'}")


def test_invalid_eval_options_are_listed_together(tmp_path):
    proc = run_simpo(["eval", "eval.limit=0", "eval.benchmarks=[nope]", "judge.reward_model=rm",
                      "paths.output_root=out"], tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert "eval.limit" in err and "unknown benchmark 'nope'" in err and "judge.baseline" in err
