"""``simpo run`` reuses a completed step of another experiment only when the chain up to and
including that step is the same (stages/run.py ``reusable_step``)."""

import json

from simpo_cli.stages.run import reusable_step


def _chain(lr):
    return [{"index": 1, "stage": "generate-pairs", "round": None, "dir": "01-generate-pairs",
             "overrides": ["generation.n=4"], "inputs": {}},
            {"index": 2, "stage": "train", "round": None, "dir": "02-train",
             "overrides": [f"hparams.learning_rate={lr}"], "inputs": {"data": "01-generate-pairs"}},
            {"index": 3, "stage": "eval", "round": None, "dir": "03-eval", "overrides": [], "inputs": {}}]


def _experiment(path, chain, statuses):
    path.mkdir(parents=True)
    (path / "experiment.json").write_text(json.dumps({"chain": chain}))
    for entry, status in zip(chain, statuses):
        (path / entry["dir"]).mkdir()
        if status:
            (path / entry["dir"] / "meta.json").write_text(json.dumps({"status": status}))


def test_a_step_is_reused_only_from_a_completed_step_with_the_same_chain_prefix(tmp_path):
    _experiment(tmp_path / "sweep" / "0", _chain(1e-5), ["completed", "completed", "running"])
    me = tmp_path / "sweep" / "1"
    mine = _chain(2e-5)
    assert reusable_step(0, mine, me, [me.parent]) == (tmp_path / "sweep" / "0" / "01-generate-pairs").resolve()
    assert reusable_step(1, mine, me, [me.parent]) is None  # another learning rate
    same = _chain(1e-5)
    assert reusable_step(1, same, me, [me.parent]) == (tmp_path / "sweep" / "0" / "02-train").resolve()
    assert reusable_step(2, same, me, [me.parent]) is None  # that eval never completed
    assert reusable_step(0, mine, me, []) is None  # reuse=false: no sources


def test_an_experiment_never_reuses_itself_and_a_listed_experiment_dir_counts(tmp_path):
    _experiment(tmp_path / "a", _chain(1e-5), ["completed", None, None])
    assert reusable_step(0, _chain(1e-5), tmp_path / "a", [tmp_path]) is None
    other = tmp_path / "elsewhere" / "b"
    assert reusable_step(0, _chain(3e-5), other, [tmp_path / "a"]) == (tmp_path / "a" / "01-generate-pairs").resolve()
    changed = _chain(1e-5)
    changed[0]["overrides"] = ["generation.n=8"]
    assert reusable_step(0, changed, other, [tmp_path / "a"]) is None
