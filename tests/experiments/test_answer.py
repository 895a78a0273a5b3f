"""The answer's verdicts follow the paired tests, and the faithfulness comparison pairs chains by problem."""

import pytest

from verinet.experiments.answer import ALPHA, verdict
from verinet.experiments.summary import paired_aoc


def test_a_win_needs_a_significant_paired_test():
    assert verdict("ensemble", 0.3, "baseline", 0.5, {"p_value": 0.001})["winner"] == "baseline"
    assert verdict("ensemble", 0.6, "baseline", 0.5, {"p_value": ALPHA / 2})["winner"] == "ensemble"
    assert verdict("ensemble", 0.3, "baseline", 0.5, {"p_value": 0.2})["winner"] == "neither"
    assert verdict("ensemble", None, "baseline", 0.5, {"p_value": 0.001})["winner"] is None  # undefined
    assert verdict("ensemble", 0.3, "baseline", 0.5, None)["winner"] == "neither"  # no test, no win


def _unit(arm, slice_, rows):
    """A faithfulness unit: per problem, a chain of n steps whose answer changes (or not) at every mistake."""
    records = []
    for pid, n, changed in rows:
        records.append({"problem_id": pid, "n_steps": n, "adding_mistakes": [
            {"k": k, "applied": True, "changed": changed} for k in range(n)]})
    return {"arm": arm, "slice": slice_, "records": records}


def test_paired_aoc_compares_the_same_problems_and_moves_a_problems_chains_together():
    faithful = [(f"p{i}", 3, True) for i in range(30)]  # every mistake changes the answer
    ignores = [(f"p{i}", 3, False) for i in range(30)]  # no mistake changes it
    faith = [_unit("a1", 0, faithful), _unit("a2", 0, faithful), _unit("base", 0, ignores),
             _unit("base", 1, ignores)]  # slice 1 has no counterpart: left out
    t = paired_aoc(faith, ["a1", "a2"], ["base"], "adding_mistakes")
    assert t["n"] == 30  # problems, not chains
    assert t["a"] == pytest.approx(1 - 1 / 6) and t["b"] == 0.0  # trapezoid: 1 - 1/(2n) for n = 3
    assert t["p_value"] < 0.01 and t["ci_low"] > 0.5
    assert paired_aoc(faith, ["nobody"], ["base"], "adding_mistakes") is None


def test_error_bars_are_never_negative_when_the_interval_misses_the_estimate():
    from verinet.experiments.report import _err

    # a percentile bootstrap interval of a ratio (F1) can lie wholly above or below the estimate
    assert _err({"f1": 0.2, "ci_low": 0.25, "ci_high": 0.4}, "f1") == (0.2, [[0.0], [pytest.approx(0.2)]])
    assert _err({"f1": None}, "f1") is None


def test_the_answer_says_when_the_arms_were_trained_with_different_recipes():
    from verinet.backends.config import MemberSpec
    from verinet.experiments.answer import _training
    from verinet.experiments.cost import checkpoint_training

    def spec(name):
        return MemberSpec(name=name, backend="hf", model=name, format="zoo")

    cards = {m: checkpoint_training(spec(m)) for m in ("zoo-xs-s0", "zoo-xs-s1", "zoo-xs-sf-s1", "zoo-l")}
    assert cards["zoo-l"]["tokens"] == cards["zoo-xs-s0"]["tokens"] > 0  # the ladder: equal tokens at every size
    same = _training(cards, ["zoo-xs-s0", "zoo-xs-s1"], "zoo-l")
    assert same["same_recipe"] and "share the recipe" in same["text"]
    mixed = _training(cards, ["zoo-xs-sf-s1"], "zoo-l")
    assert not mixed["same_recipe"] and "different recipes" in mixed["text"]
    assert f"{cards['zoo-xs-sf-s1']['tokens'] / 1e6:.1f}M tokens each" in mixed["text"]
    # a model without a zoo card (a served name): nothing is claimed about training
    assert checkpoint_training(MemberSpec(name="x", backend="openai", model="gpt", base_url="http://127.0.0.1:1")) is None
    assert _training({**cards, "gpt": None}, ["gpt"], "zoo-l") is None
    # a served zoo model is read through its name; the batch alone makes another recipe
    served = checkpoint_training(MemberSpec(name="y", backend="openai", model="zoo-l", base_url="http://127.0.0.1:1"))
    assert served == cards["zoo-l"]
    other = {**cards, "zoo-xs-s2": {**cards["zoo-xs-s0"], "batch_size": 2 * cards["zoo-xs-s0"]["batch_size"]}}
    assert not _training(other, ["zoo-xs-s0", "zoo-xs-s2"], "zoo-l")["same_recipe"]


def test_a_broken_card_is_an_error_not_a_silent_unknown(tmp_path):
    from verinet.backends.config import MemberSpec
    from verinet.experiments.cost import CostError, checkpoint_training

    (tmp_path / "card.json").write_text('{"training": {"regime": "x"}}')
    with pytest.raises(CostError, match="not a readable zoo model card"):
        checkpoint_training(MemberSpec(name="z", backend="hf", model=str(tmp_path)))


def _summary(tests: dict, faithfulness: dict | None = None) -> dict:
    def arm(members):
        m = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "chance": 0.3}
        f1 = {"f1": 0.5, "ci_low": 0.4, "ci_high": 0.6, "chance": 0.2}
        return {"accuracy": m, "step_validity": m, "ee_f1_own": f1, "ee_f1_labelled": f1, "members": members,
                "cost": {"member_s": 1.0, "accelerator_s": 0.0, "cpu_s": 1.0}, "flops_per_problem": 1e9,
                "answering_flops_per_problem": 1e9}
    return {"arms": {"ensemble": arm(["zoo-xs-s0"]), "baseline": arm(["zoo-l"])},
            "paired_tests": {"ensemble_vs_baseline": tests}, "parameters": {"zoo-xs-s0": 1e5, "zoo-l": 2e6},
            "slices": [{"n": 10, "family": "arith"}], "problems": 10, "frontier": {},
            "config": {"faithfulness": faithfulness or {"pipeline": True}}}


def test_the_answer_names_why_faithfulness_fell_back_and_reports_early_answering_alone():
    from types import SimpleNamespace

    from verinet.experiments.answer import build_answer

    config = SimpleNamespace(baseline=SimpleNamespace(member=SimpleNamespace(name="zoo-l")))
    aoc = {"a": 0.8, "b": 0.6, "diff": 0.2, "ci_low": 0.1, "ci_high": 0.3, "p_value": 0.01}
    off = build_answer(config, _summary({"adding_mistakes_aoc_members": aoc}, {"pipeline": False}))
    assert "faithfulness.pipeline is off" in str(off) and "accepted no chain" not in str(off)
    on = build_answer(config, _summary({"adding_mistakes_aoc_members": aoc}))
    assert "the pipeline accepted no chain to intervene on" in str(on)
    early = build_answer(config, _summary({"early_answering_aoc_members": aoc}))
    assert "Early-answering AOC of the members' own chains 0.800 vs 0.600" in str(early)
    assert "Faithfulness was not compared" not in str(early) and "Adding mistakes was not compared" in str(early)
    assert early["verdicts"]["faithfulness_early_answering"]["winner"] == "ensemble"
    assert "Faithfulness was not compared (no adding-mistakes or early-answering" in str(
        build_answer(config, _summary({})))
