"""Run diagnostics (simpo_cli.evaluation.diagnostics): synthetic pair metrics, training logs and
answer sets that trigger each finding, clean ones that trigger none, every threshold at its edge."""

import json

import pytest
from omegaconf import OmegaConf

from simpo_cli.config.eval import EvalConfig
from simpo_cli.config.schema import TrainConfig
from simpo_cli.evaluation import diagnostics as D


def pairs(chosen, rejected, margin):
    return {"logps/chosen": chosen, "logps/rejected": rejected, "rewards/margins": margin, "loss": 0.7}


# --------------------------------------------------------------------------- held-out pairs


def test_displacement_is_reported_with_numbers_and_remedies():
    """The README's SmolLM2 run: chosen -2.571 -> -2.679 (4.2% down), rejected -2.691 -> -2.805,
    margin 0.300 -> 0.314: both fell while the margin grew."""
    out = D.pair_diagnostics(pairs(-2.571, -2.691, 0.300), pairs(-2.679, -2.805, 0.314))
    assert out["movement"] == "both fell"
    assert out["chosen_change"] == pytest.approx(-0.108) and out["rejected_change"] == pytest.approx(-0.114)
    (f,) = out["findings"]
    assert f["code"] == "likelihood_displacement"
    assert "-2.5710 -> -2.6790 nats/token" in f["message"] and "0.3000 -> 0.3140" in f["message"]
    assert "4.2% > 2%" in f["message"]
    texts = " ".join(r["text"] for r in f["remedies"])
    assert "learning rate" in texts and "β" in texts and "sft_weight" in texts
    assert {r["source"] for r in f["remedies"]} == {D.SIMPO_README, D.SIMPO_ISSUE_42}


def test_a_clean_run_has_no_pair_finding():
    """The tiny run of tests/e2e/test_train.py: chosen rose, rejected fell, margin grew."""
    out = D.pair_diagnostics(pairs(-8.328, -8.329, 0.002), pairs(-8.114, -8.549, 0.871))
    assert out["findings"] == [] and out["movement"] == "apart (chosen rose, rejected fell)"
    assert D.pair_diagnostics(pairs(-2.0, -2.0, 0.1), pairs(-1.5, -1.9, 0.2))["movement"] == "both rose"


@pytest.mark.parametrize("factor, flagged", [(1 + 0.02 - 1e-6, False), (1 + 0.02 + 1e-6, True)])
def test_chosen_drop_threshold_edge(factor, flagged):
    """Default chosen_drop 0.02: a drop of 2% of -2.0 (to -2.04) is the edge; just under it is quiet."""
    out = D.pair_diagnostics(pairs(-2.0, -2.0, 0.1), pairs(-2.0 * factor, -2.5, 0.2))
    assert bool(out["findings"]) is flagged


def test_chosen_drop_is_exclusive_and_configurable():
    """chosen_drop 0.25: -4 -> -5 is exactly 25% (not more): quiet; 0.2499: reported."""
    before, after = pairs(-4.0, -4.0, 0.0), pairs(-5.0, -6.0, 1.0)
    assert D.pair_diagnostics(before, after, {"chosen_drop": 0.25})["findings"] == []
    assert D.pair_diagnostics(before, after, {"chosen_drop": 0.2499})["findings"]


def test_no_finding_unless_the_margin_grew():
    """The chosen likelihood fell 50%, but the margin did not grow (equal): not displacement."""
    out = D.pair_diagnostics(pairs(-2.0, -2.0, 0.5), pairs(-3.0, -3.0, 0.5))
    assert out["findings"] == [] and out["movement"] == "both fell"


def test_summed_objectives_use_the_same_relative_threshold():
    """DPO logs summed log-probs (nats/response): -200 -> -210 is 5%, reported in that unit."""
    out = D.pair_diagnostics(pairs(-200.0, -220.0, 0.0), pairs(-210.0, -240.0, 0.5), unit="nats/response")
    assert "nats/response" in out["findings"][0]["message"] and "5.0%" in out["findings"][0]["message"]


def test_missing_pair_metrics_give_nothing():
    assert D.pair_diagnostics({}, {}) == {}
    assert D.pair_diagnostics(pairs(-2.0, -2.0, 0.1), {"loss": 0.5}) == {}


# --------------------------------------------------------------------------- training log


def history(chosen, rejected, loss=None, grad_norm=None):
    """metrics.jsonl records, steps 10, 20, ...; plus the final summary record (no ``loss``)."""
    n = len(chosen)
    loss = loss or [0.7 - 0.01 * i for i in range(n)]
    grad_norm = grad_norm or [1.0] * n
    return [{"step": 10 * (i + 1), "loss": loss[i], "grad_norm": grad_norm[i], "rewards/chosen": chosen[i],
             "rewards/rejected": rejected[i]} for i in range(n)] + [{"step": 10 * n, "train_loss": 0.6}]


def test_a_clean_history_has_no_finding():
    """Chosen rises, rejected falls, the loss falls smoothly, the grad norm is flat."""
    records = history([-5.0, -4.8, -4.6, -4.5, -4.4, -4.3], [-5.0, -5.2, -5.4, -5.6, -5.8, -6.0])
    assert D.step_findings(records) == []


def test_rewards_falling_together_names_the_steps():
    records = history([-5.0, -5.1, -5.2, -5.3, -5.4], [-5.0, -5.3, -5.6, -5.9, -6.2])
    (f,) = D.step_findings(records)
    assert f["code"] == "rewards_fall_together" and f["numbers"]["steps"] == [20, 30, 40, 50]
    assert "4 of 4 logged steps" in f["message"] and "steps 20, 30, 40, 50" in f["message"]
    assert any("sft_weight" in r["text"] for r in f["remedies"])


@pytest.mark.parametrize("fell, flagged", [(2, False), (3, True)])
def test_falling_fraction_edge(fell, flagged):
    """4 later steps: both below the first at 2 of them is exactly half (not most): quiet; 3: reported."""
    chosen = [-5.0] + [-5.5] * fell + [-4.5] * (4 - fell)
    rejected = [-5.0] + [-6.0] * 4
    assert bool(D.step_findings(history(chosen, rejected))) is flagged


@pytest.mark.parametrize("later, flagged", [(3, False), (4, True)])
def test_min_logged_steps_edge(later, flagged):
    """Both fall at every later step: 3 later steps are too few to call "most of a run", 4 are enough."""
    chosen = [-5.0 - 0.1 * i for i in range(later + 1)]
    assert bool(D.step_findings(history(chosen, chosen))) is flagged


@pytest.mark.parametrize("value, flagged", [(3.0, False), (3.0001, True)])
def test_loss_spike_edge(value, flagged):
    """Median of the 3 values before is 1.0: exactly 3x is not a spike, just above it is."""
    records = history([0.0] * 4, [0.0] * 4, loss=[1.0, 1.0, 1.0, value])
    findings = D.step_findings(records)
    assert [f["code"] for f in findings] == (["loss_spike"] if flagged else [])
    if flagged:
        assert findings[0]["numbers"]["steps"] == [40] and "step 40: 3" in findings[0]["message"]


def test_spike_needs_history_and_uses_a_window():
    """A jump after 2 values is not judged (spike_min_history 3); the median is over the last 5
    values only (an early high plateau does not hide a later spike)."""
    assert D.step_findings(history([0.0] * 3, [0.0] * 3, loss=[1.0, 1.0, 100.0])) == []
    loss = [10.0] * 5 + [1.0] * 5 + [3.5]
    (f,) = D.step_findings(history([0.0] * 11, [0.0] * 11, loss=loss))
    assert f["code"] == "loss_spike" and f["numbers"]["steps"] == [110]


def test_grad_norm_spike_and_nonfinite_values():
    records = history([0.0] * 6, [0.0] * 6, grad_norm=[1.0, 1.2, float("nan"), 0.9, 1.1, 40.0])
    (f,) = D.step_findings(records)
    assert f["code"] == "grad_norm_spike" and f["numbers"]["steps"] == [60]


def test_read_records_skips_a_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n{\"step\": 2, \"lo")
    assert D.read_records(path) == [{"step": 1, "loss": 0.5}]
    assert D.read_records(tmp_path / "absent.jsonl") == []


# --------------------------------------------------------------------------- answers

README_LOOP = ("The United States is a federal republic with a system of government based on the rule of law. "
               "The United States is a federal republic with a system of government based on the rule of law.")


def test_repetition_share_by_hand():
    """'a b c d a b c d': the 4-gram at position 4 repeats position 0, covering 4 of 8 words.
    The README's looping answer: a 20-token sentence (19 words + '.') said twice -> 20/40."""
    assert D.repetition_share("a b c d a b c d", 4) == (0.5, "a b c d")
    assert D.repetition_share(README_LOOP, 4) == (0.5, "the united states is")
    assert D.repetition_share("", 4) == (0.0, "")
    assert D.repetition_share("one two three four five six", 4) == (0.0, "")
    assert D.repetition_share("yes yes yes yes yes", 4)[0] == pytest.approx(4 / 5)  # overlapping repeats count


def answers(texts, tokens=None):
    return [{"id": i, "prompt": f"prompt {i}", "answer": t, "tokens": (tokens or [10] * len(texts))[i]}
            for i, t in enumerate(texts)]


@pytest.mark.parametrize("n_words, flagged", [(16, False), (15, True)])
def test_repetition_threshold_edge(n_words, flagged):
    """The last 4 words repeat the first 4: 4/16 = 25% is the edge (not flagged), 4/15 > 25% is."""
    text = " ".join(f"w{i}" for i in range(n_words - 4)) + " w0 w1 w2 w3"
    stats = D.answer_stats(answers([text]))
    assert (stats["repetition_rate"] == 1.0) is flagged


def test_distinct_n_by_hand():
    """'a b a b': unigrams a, b, a, b -> 2/4; bigrams ab, ba, ab -> 2/3; over two answers the
    n-grams are pooled."""
    assert D.distinct_n(["a b a b"], 1) == 0.5
    assert D.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert D.distinct_n(["a b", "a c"], 1) == 0.75
    assert D.distinct_n(["a"], 2) is None


def test_answer_stats_and_findings_before_after():
    clean = [f"answer number {i} says something different about topic {i}" for i in range(19)]
    before = D.answer_stats(answers(clean + ["a fine closing answer with nothing repeated"], [100] * 20))
    after = D.answer_stats(answers(clean + [README_LOOP], [100] * 19 + [300]))
    assert before["repetition_rate"] == 0.0 and after["repetition_rate"] == 0.05
    assert after["mean_tokens"] == 110.0 and after["flagged"][0]["id"] == 19
    assert after["flagged"][0]["repeated"] == "the united states is"
    assert set(after["distinct"]) == {"distinct-1", "distinct-2"}
    (f,) = D.answer_findings("ifeval", after, before)
    assert f["code"] == "answers_repeat" and "1 of 20 answers (5.0%)" in f["message"]
    assert "starting model: 0.0%" in f["message"]
    # The same rate before: not a change the run made.
    assert D.answer_findings("ifeval", after, after) == []
    # No starting-model answers: the rate alone, said so.
    (f,) = D.answer_findings("alpaca_eval", after)
    assert "no starting-model answers" in f["message"]


def test_repetition_rate_edge():
    """repetition_rate 0.05: 1 looping answer of 20 is reported, of 21 (4.8%) is not."""
    clean = [f"answer number {i} says something different about topic {i}" for i in range(20)]
    assert D.answer_findings("x", D.answer_stats(answers(clean[:19] + [README_LOOP])))
    assert D.answer_findings("x", D.answer_stats(answers(clean + [README_LOOP]))) == []


@pytest.mark.parametrize("after_tokens, flagged", [(120, False), (121, True)])
def test_length_growth_edge(after_tokens, flagged):
    """length_growth 0.2: 100 -> 120 tokens is +20% exactly (quiet), 121 is reported."""
    before = D.answer_stats(answers(["a b c"], [100]))
    after = D.answer_stats(answers(["a b c"], [after_tokens]))
    codes = [f["code"] for f in D.answer_findings("x", after, before)]
    assert codes == (["answers_longer"] if flagged else [])


def test_thresholds_come_from_the_config_sections():
    """Both stage configs carry a ``diagnostics`` section; an override reaches the functions."""
    for schema in (TrainConfig, EvalConfig):
        cfg = OmegaConf.structured(schema)
        cfg.diagnostics.repetition_n = 2
        cfg.diagnostics.distinct_n = [3]
        stats = D.answer_stats(answers(["a b a b"]), cfg.diagnostics)
        assert stats["repetition"]["n"] == 2 and set(stats["distinct"]) == {"distinct-3"}


def test_lines_for_the_terminal():
    out = D.pair_diagnostics(pairs(-2.0, -2.0, 0.1), pairs(-2.5, -3.0, 0.2))
    text = D.lines(out["findings"])
    assert text[0].startswith("likelihood_displacement: held-out chosen log-likelihood fell -2.0000 -> -2.5000")
    assert all(line.startswith("  - try ") for line in text[1:]) and len(text) == 4


def test_out_of_range_thresholds_are_one_line_each_before_any_model(tmp_path):
    """``simpo validate``/preflight list every bad ``diagnostics.*`` value (exit 2, no run directory)."""
    from tests.helpers import run_simpo

    assert D.config_problems(None) == []
    assert D.config_problems({"spike_factor": 1.0, "repetition_n": 0, "distinct_n": [0, 2]}) == [
        "diagnostics.spike_factor must be > 1, got 1.0", "diagnostics.repetition_n must be >= 1, got 0",
        "diagnostics.distinct_n must be a list of n >= 1, got [0, 2]"]
    for stage in ("train", "eval"):
        proc = run_simpo([stage, "diagnostics.chosen_drop=-0.1", "diagnostics.falling_fraction=1.0"], tmp_path,
                         check=False)
        assert proc.returncode == 2 and "diagnostics.chosen_drop must be >= 0, got -0.1" in proc.stderr
        assert "diagnostics.falling_fraction must be in [0, 1), got 1.0" in proc.stderr
        assert not (tmp_path / "outputs").exists()
