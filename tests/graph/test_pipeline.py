"""The whole pipeline on real task data: arith gold + injected chains, verdicts from the exact checker."""

import random

import numpy as np
import pytest

from verinet.graph.pipeline import gold_labels, verify_batch, verify_problem
from verinet.graph.propagate import earliest_error_f1
from verinet.schema import Verdict, VerificationReport
from verinet.tasks import get_family

fam = get_family("arith")


def problem_set(n=12, seed=0):
    out = []
    for p in fam.sample(n, seed=seed, params={"steps": 4, "branching": 0.6}):
        chains = [fam.gold_chain(p)] + [fam.inject(p, k, 0) for k in fam.injectable_kinds(p)]
        out.append((p, chains, gold_labels(p, chains, fam)))
    return out


def synth_verdicts(labels, verifiers, rng):
    """Each verifier: (sensitivity, specificity); P(valid) 0.95/0.05 with flips by those rates."""
    out = []
    for name, (se, sp) in verifiers.items():
        for (cid, i), ok in labels.items():
            says = rng.random() < se if ok else rng.random() >= sp
            out.append(Verdict(verifier=name, chain_id=cid, step_index=i, p_valid=0.95 if says else 0.05))
    return out


def test_perfect_verifier_recovers_earliest_error_and_support():
    for p, chains, labels in problem_set():
        vs = [Verdict(verifier="oracle", chain_id=c, step_index=i, p_valid=float(ok))
              for (c, i), ok in labels.items()]
        rep = verify_problem(p.id, chains, vs, aggregation="mean", family=fam)
        assert isinstance(rep, VerificationReport)
        for c in chains:
            check = fam.check(p, c.text)
            assert rep.earliest_error[c.id] == check.first_error == c.first_error, (c.id, c.text)
            post = {q.step_index: q for q in rep.posteriors if q.chain_id == c.id}
            for s in check.steps:  # 0/1 beliefs: propagation reproduces the checker's "supported"
                assert post[s.index].p_supported == float(s.supported)
        assert rep.final_answer == p.answer and f"{p.id}/gold" in rep.accepted
        assert all(fam.check(p, c.text).answer_correct for c in chains if c.id in rep.accepted)


@pytest.mark.parametrize("aggregation", ["mean", "vote", "logodds"])
def test_noisy_verifiers(aggregation):
    rng = random.Random(1)
    verifiers = {"a": (0.95, 0.9), "b": (0.9, 0.85), "c": (0.85, 0.8)}
    preds, labels = [], []
    for p, chains, lab in problem_set():
        rep = verify_problem(p.id, chains, synth_verdicts(lab, verifiers, rng), aggregation=aggregation,
                             family=fam, include_graph=False)
        assert rep.graph is None
        preds += [rep.earliest_error[c.id] for c in chains]
        labels += [c.first_error for c in chains]
    f1 = earliest_error_f1(preds, labels)
    assert f1["f1"] > 0.6, f1


def test_batch_dawid_skene_on_task_data():
    rng = random.Random(2)
    verifiers = {"good": (0.95, 0.9), "ok": (0.85, 0.8), "lax": (0.95, 0.4), "noisy": (0.6, 0.6)}
    sets = problem_set(30, seed=5)
    batch = [(p.id, chains, synth_verdicts(lab, verifiers, rng)) for p, chains, lab in sets]
    truth = {k: v for _, _, lab in sets for k, v in lab.items()}
    ds = verify_batch(batch, aggregation="dawid_skene", family=fam, include_graph=False)
    mean = verify_batch(batch, aggregation="mean", family=fam, include_graph=False)
    assert mean.reliabilities is None
    t = ds.reliabilities
    assert t is not None and t.n_items == len(truth)
    assert t.verifiers["lax"].specificity < 0.6 < t.verifiers["good"].specificity
    assert t.verifiers["noisy"].accuracy < t.verifiers["good"].accuracy

    def acc(res):
        post = {(q.chain_id, q.step_index): q.p_valid for r in res.reports for q in r.posteriors}
        return np.mean([(post[k] >= 0.5) == v for k, v in truth.items()])

    assert acc(ds) >= acc(mean)
    assert all(q.method == "dawid_skene" for r in ds.reports for q in r.posteriors)
    rep = ds.reports[0]
    assert rep.agreement["sensitivity/good"] == t.verifiers["good"].sensitivity
    assert ds.agreement.n_verifiers == 4 and ds.agreement.fleiss_kappa is not None
    # a few gold items warm-start it; one-coin runs too
    gold = dict(list(truth.items())[:20])
    warm = verify_batch(batch, aggregation="dawid_skene", gold=gold, include_graph=False)
    assert all(p == float(gold[(q.chain_id, q.step_index)]) for r in warm.reports for q in r.posteriors
               if (q.chain_id, q.step_index) in gold for p in [q.p_valid])
    oc = verify_batch(batch, aggregation="one_coin", include_graph=False)
    assert {v.sensitivity == v.specificity for v in oc.reliabilities.verifiers.values()} == {True}
    # reliabilities fitted on the batch apply to a new problem
    p, chains, lab = problem_set(1, seed=99)[0]
    single = verify_problem(p.id, chains, synth_verdicts(lab, verifiers, rng), aggregation="dawid_skene",
                            reliabilities=t, family=fam)
    assert single.posteriors[0].method == "dawid_skene"


def test_pipeline_errors_are_clear():
    p, chains, lab = problem_set(1)[0]
    with pytest.raises(ValueError, match="verify_batch"):
        verify_problem(p.id, chains, [], aggregation="dawid_skene")
    with pytest.raises(ValueError, match="unknown aggregation"):
        verify_problem(p.id, chains, [], aggregation="max")
    with pytest.raises(ValueError, match="unique"):
        verify_batch([(p.id, chains, []), (p.id, chains, [])], aggregation="mean")
    with pytest.raises(ValueError, match="unique"):
        verify_problem(p.id, chains + chains[:1], [])


def test_a_family_chains_empty_premises_mean_givens_only():
    # a family reader's empty premise list is read from the step (it uses only the question's givens), so a
    # wrong step 0 leaves step 1 supported; without a family (free text) the chain depends step by step
    p, chains, _ = problem_set(1)[0]
    gold = chains[0]
    c = gold.model_copy(update={"steps": [s.model_copy(update={"premises": []}) for s in gold.steps]})
    vs = [Verdict(verifier="v", chain_id=c.id, step_index=i, p_valid=0.0 if i == 0 else 1.0)
          for i in range(len(c.steps) + 1)]
    for family, expected in ((fam, 1.0), (None, 0.0)):
        rep = verify_problem(p.id, [c], vs, aggregation="mean", family=family)
        assert {q.step_index: q.p_supported for q in rep.posteriors}[1] == expected
        rep = verify_batch([(p.id, [c], vs)], aggregation="mean", family=family).reports[0]
        assert {q.step_index: q.p_supported for q in rep.posteriors}[1] == expected


@pytest.mark.parametrize("aggregation", ["mean", "dawid_skene"])
def test_a_chain_no_verdict_names_is_unverified_not_predicted(aggregation):
    """Every verifier of the second chain failed: its items would pool to the default posterior, which
    is no prediction. It is listed as unverified, has no earliest error, and is not accepted."""
    from tests.graph.helpers import chain, verdicts_for

    seen, lost = chain("p/a", 3, answer="7"), chain("p/b", 3, answer="7")
    vs = verdicts_for(seen, [0.9, 0.2, 0.9, 0.9], "v1") + verdicts_for(seen, [0.8, 0.1, 0.8, 0.8], "v2")
    batch = verify_batch([("p", [seen, lost], vs)], aggregation=aggregation, threshold=0.5)
    rep = batch.reports[0]
    assert rep.unverified == ["p/b"]
    assert rep.earliest_error == {"p/a": 1}
    assert "p/b" not in rep.accepted
    assert rep.final_answer == "7"
    majority = verify_batch([("p", [seen, lost], vs)], aggregation=aggregation, selection="majority").reports[0]
    assert majority.accepted == ["p/a"]  # its answer still votes, but acceptance needs verification
    if aggregation == "dawid_skene":  # a fixed table reads only the verifiers it has rows for
        from dataclasses import replace

        t = batch.reliabilities
        only_v1 = replace(t, verifiers={"v1": t.verifiers["v1"]})
        by_v2 = verdicts_for(lost, [0.9, 0.9, 0.9, 0.9], "v2")
        rep = verify_batch([("p", [seen, lost], vs[:4] + by_v2)], aggregation="dawid_skene",
                           reliabilities=only_v1).reports[0]
        assert rep.unverified == ["p/b"] and set(rep.earliest_error) == {"p/a"}
    with pytest.raises(ValueError, match="unverified: unknown chain ids"):
        VerificationReport(problem_id="p", chains=[seen], unverified=["p/x"])


def test_a_long_chain_of_passing_steps_is_accepted():
    """Acceptance reads the weakest link: every item at or above the threshold and nothing missing under
    it (tests/tasks/test_corruption.py: a missing premise loses). The chain score is a product, so at
    P(valid) 0.6 per item a 7-step chain scores 0.6^8 = 0.017: thresholding it (an explicit
    accept_threshold) rejects every long chain whose steps all pass."""
    from verinet.graph.build import build_graph
    from verinet.graph.propagate import support

    p = fam.sample(1, seed=3, params={"steps": 7, "distractors": 0})[0]
    gold = fam.gold_chain(p)
    vs = [Verdict(verifier="v", chain_id=gold.id, step_index=i, p_valid=0.6) for i in range(len(gold.steps) + 1)]
    rep = verify_problem(p.id, [gold], vs, family=fam, threshold=0.5)
    assert rep.earliest_error[gold.id] == -1 and rep.accepted == [gold.id]
    assert verify_problem(p.id, [gold], vs, family=fam, threshold=0.7).accepted == []  # an error: not accepted
    old_rule = verify_problem(p.id, [gold], vs, family=fam, threshold=0.5, accept_threshold=0.5)
    assert old_rule.accepted == [] and old_rule.final_answer == gold.answer
    g = build_graph(p.id, [gold])
    pv = {(gold.id, i): 0.6 for i in range(len(gold.steps) + 1)}
    assert set(support(g, pv, weakest=True).values()) == {0.6}
    assert min(support(g, pv).values()) == pytest.approx(0.6 ** (len(gold.steps) + 1))
