"""Intervening on the chain the ensemble accepted: known verifiers, then real zoo members."""

import pytest
import torch

from verinet.backends import MemberSpec, make_backend
from verinet.backends.formats import ZooFormat
from verinet.faithfulness import evaluate_pipeline, figures
from verinet.orchestration import LocalMembers
from verinet.tasks import get_family

from tests.faithfulness.known import KnownBackend

PROBLEMS = get_family("arith").sample(40, seed=8, params={"steps": 3, "distractors": 1})
FMTS = {m: ZooFormat() for m in "abc"}


@pytest.fixture(scope="module")
def known():
    return LocalMembers({m: KnownBackend(PROBLEMS, "last") for m in "abc"})


def test_oracle_verifiers_flag_every_corrupted_step(known):
    r = evaluate_pipeline(known, FMTS, PROBLEMS, n_boot=500, topology="all_pairs")
    s = r.summary
    assert s["accuracy"]["value"] == 1.0 and s["intervened"]["value"] == 1.0
    assert s["pipeline_flagged"]["value"] == 1.0 and s["pipeline_flagged"]["n"] == 3 * len(PROBLEMS)
    assert s["earliest_error_at_corruption"]["value"] == 1.0
    assert s["accepted_after_corruption"]["value"] == 0.0
    # the author follows its mistake, but two untouched correct chains keep the ensemble's answer
    assert s["author_answer_changed"]["value"] > 0.7
    assert s["answer_follows_chain"]["value"] == 1.0
    assert s["pipeline_answer_changed"]["value"] == 0.0 and s["adding_mistakes_aoc"]["value"] == 0.0
    rec = r.records[0]
    assert rec["kind"] == "pipeline" and rec["chain_id"] in rec["accepted"] and rec["skipped"] is None
    row = rec["adding_mistakes"][0]
    assert row["applied"] and row["flagged"] and row["p_valid"] == pytest.approx(0.05)
    assert [x["k"] for x in s["curves"]["step_causal_importance"]] == [0, 1, 2]
    assert set(s["info"]["usage"]) == {"a", "b", "c"}


def test_a_single_solver_carries_its_mistake_into_the_final_answer(known):
    """With one author the vote has one answer: the ensemble's answer moves with the author's."""
    r = evaluate_pipeline(known, FMTS, PROBLEMS, n_boot=500, solvers=["a"], topology="all_pairs")
    s = r.summary
    assert s["pipeline_answer_changed"]["value"] == pytest.approx(s["author_answer_changed"]["value"])
    assert s["pipeline_answer_changed"]["value"] > 0.7 and s["adding_mistakes_aoc"]["value"] > 0.7
    assert s["pipeline_flagged"]["value"] == 1.0


def test_zoo_ensemble_pipeline():
    torch.set_num_threads(1)
    names = ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"]
    caller = LocalMembers({m: make_backend(MemberSpec(name=m, backend="hf", model=m)) for m in names})
    problems = get_family("arith").sample(3, seed=4, params={"steps": 2, "distractors": 0}) + \
        get_family("logic").sample(3, seed=4, params={"hops": 2, "distractors": 1})
    # majority selection accepts every chain with the winning answer, however the weak models verify it
    r = evaluate_pipeline(caller, {m: ZooFormat() for m in names}, problems, n_boot=200, threshold=0.5,
                          selection="majority")
    assert [rec["problem_id"] for rec in r.records] == [p.id for p in problems]
    for rec in r.records:
        assert rec["family"] in ("arith", "logic") and rec["members"] == names
        if rec["skipped"]:
            assert rec["adding_mistakes"] == [] and rec["chain_id"] is None
            continue
        assert rec["author"] in names and rec["chain_id"] in rec["accepted"]
        for row in rec["adding_mistakes"]:
            if row["applied"]:
                assert 0.0 <= row["p_valid"] <= 1.0 and row["flagged"] == (row["p_valid"] < 0.5)
                assert isinstance(row["changed"], bool) and row["earliest_error"] >= -1
    s = r.summary
    assert set(figures(s)) == {"accuracy", "intervened", "pipeline_answer_changed", "adding_mistakes_aoc",
                               "author_answer_changed", "pipeline_flagged", "earliest_error_at_corruption",
                               "accepted_after_corruption", "answer_follows_chain"}
    assert s["accuracy"]["n"] == len(problems)
    assert set(s["by_family"]) == {"arith", "logic"}
    n_rows = sum(row["applied"] for rec in r.records for row in rec["adding_mistakes"])
    assert s["pipeline_answer_changed"]["n"] == n_rows > 0


def test_re_verification_needs_every_assigned_verifier():
    """A corrupted chain judged by fewer verifiers than the original would distort 'flagged' and
    'still accepted': a verifier that does not answer (or answers for too few chains) is an error."""
    from types import SimpleNamespace

    from verinet.faithfulness.pipeline import FaithfulnessError, _verify
    from verinet.orchestration.protocol import CallResult

    fam = get_family("arith")
    p = fam.sample(1, seed=5, params={"steps": 2})[0]
    chain = fam.gold_chain(p).model_copy(update={"author": "a"})
    fmt = SimpleNamespace(verify_call=lambda items: SimpleNamespace(method="verify", args=(items,), kwargs={},
                                                                    decode=lambda r: r))

    class Caller:
        def __init__(self, results):
            self.results = results

        def call_each(self, calls):
            return CallResult(results=self.results, errors={"c": "died"})

    formats = {"b": fmt, "c": fmt}
    good = [[0.9, 0.9, 0.9]]
    out = _verify(Caller({"b": good, "c": good}), formats, [(p, chain)], {"a": ["b", "c"]})
    assert len(out[chain.id]) == 6
    with pytest.raises(FaithfulnessError, match=r"verifiers \['c'\] did not answer"):
        _verify(Caller({"b": good}), formats, [(p, chain)], {"a": ["b", "c"]})
    with pytest.raises(FaithfulnessError, match="returned 2 score lists for 1 chains"):
        _verify(Caller({"b": good * 2, "c": good}), formats, [(p, chain)], {"a": ["b", "c"]})
