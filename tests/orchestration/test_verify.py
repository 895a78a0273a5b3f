"""Orchestration with real zoo models: members solve, peers verify, the graph decides (no Ray)."""

import math

import pytest
import torch

from verinet.backends import MemberSpec, make_backend
from verinet.backends.formats import ZooFormat
from verinet.orchestration import LocalMembers, run_verification
from verinet.processbench import earliest_error_f1
from verinet.tasks import get_family
from verinet.zoo.registry import list_checkpoints

ZOO = list_checkpoints()[0][0]


@pytest.fixture(scope="module")
def members():
    torch.set_num_threads(1)
    backend = make_backend(MemberSpec(name="a", backend="hf", model=ZOO))
    # three members sharing one checkpoint: the mechanics do not depend on the weights
    return LocalMembers({"a": backend, "b": backend, "c": backend})


@pytest.mark.parametrize("topology", ["all_pairs", "ring"])
def test_cross_verification_end_to_end(members, topology):
    fam = get_family("arith")
    problems = fam.sample(4, seed=3, params={"steps": 2})
    fmts = {m: ZooFormat() for m in members.members}
    run = run_verification(members, fmts, problems, topology=topology)
    assert set(run.chains) == {"a", "b", "c"} and all(len(v) == 4 for v in run.chains.values())
    # every chain gets verdicts only from its assigned verifiers, never from its author
    for v in run.verdicts:
        author = v.chain_id.rsplit("/", 1)[1]
        assert v.verifier != author and v.verifier in run.assignment[author]
    n_items = sum(len(c.steps) + (c.answer is not None) for cs in run.chains.values() for c in cs)
    per_item = 2 if topology == "all_pairs" else 1
    assert len(run.verdicts) == per_item * n_items
    assert len(run.batch.reports) == 4
    for rep in run.batch.reports:
        assert set(rep.earliest_error) == {f"{rep.problem_id}/{m}" for m in "abc"}
        assert rep.graph is not None and rep.posteriors
    assert run.usage["a"]["solve"].decode > 0 and run.usage["a"]["verify"].prefill > 0
    # predictions can be scored against the exact checker's labels
    labels, preds = [], []
    for i, p in enumerate(problems):
        for m in "abc":
            c = run.chains[m][i]
            labels.append(fam.check(p, c.text).first_error)
            preds.append(run.batch.reports[i].earliest_error[c.id])
    f1 = earliest_error_f1(preds, labels)
    assert f1["n_err"] + f1["n_corr"] == 12
    assert math.isnan(f1["f1"]) or 0.0 <= f1["f1"] <= 1.0  # nan when one of the two classes is empty


def test_self_mode_is_the_single_model_baseline(members):
    fam = get_family("logic")
    problems = fam.sample(3, seed=1, params={"hops": 1})
    one = LocalMembers({"a": members.backends["a"]})
    run = run_verification(one, {"a": ZooFormat()}, problems, topology="self")
    assert {v.verifier for v in run.verdicts} == {"a"}
    assert all(v.chain_id.endswith("/a") for v in run.verdicts)


def test_bad_batches_are_rejected(members):
    fmts = {m: ZooFormat() for m in members.members}
    with pytest.raises(ValueError, match="at least one problem"):
        run_verification(members, fmts, [])
    mixed = get_family("arith").sample(1, seed=0) + get_family("logic").sample(1, seed=0)
    with pytest.raises(ValueError, match="one family per batch"):
        run_verification(members, fmts, mixed)


def test_threshold_is_calibrated_on_a_labelled_dev_split(members):
    from verinet.experiments.arms import calibrate_threshold, labelled_run, labelled_set

    fam = get_family("arith")
    dev = fam.sample(6, seed=77, params={"steps": 2})
    fmts = {m: ZooFormat() for m in members.members}
    t = calibrate_threshold(members, fmts, dev, seed=1)
    assert 0.0 < t < 1.0
    sets = labelled_set(dev, seed=1)
    assert all(cs[0].first_error == -1 and all(c.first_error >= 0 for c in cs[1:]) for cs in sets)

    def f1_at(threshold):
        by_problem, batch, _, _ = labelled_run(members, fmts, dev, kinds=None, aggregation="mean",
                                               threshold=threshold, selection="weighted", seed=1)
        preds = [r.earliest_error[c.id] for r, (_, cs, _) in zip(batch.reports, by_problem) for c in cs]
        return earliest_error_f1(preds, [c.first_error for _, cs, _ in by_problem for c in cs])["f1"]

    assert f1_at(t) >= f1_at(0.5)


class _VerifierDown:
    """``members`` whose member ``down`` answers the solve call but fails every verify call, as the Ray
    ensemble reports a member that timed out: left out of the results and named in ``missing``."""

    def __init__(self, members, down):
        self.inner, self.down, self.members = members, down, members.members

    def call_each(self, calls):
        verifying = self.down in calls and calls[self.down][0] != "generate"
        res = self.inner.call_each({m: c for m, c in calls.items() if not (verifying and m == self.down)})
        if verifying:
            res.missing.append(self.down)
            res.errors[self.down] = "timeout"
        return res


def test_a_chain_whose_only_verifier_failed_is_unverified(members):
    """Ring topology gives each chain one verifier: when it fails, the chain's items would pool to the
    default posterior. The chain is reported unverified, predicts no earliest error, and is not accepted."""
    fam = get_family("arith")
    problems = fam.sample(3, seed=3, params={"steps": 2})
    run = run_verification(_VerifierDown(members, "b"), {m: ZooFormat() for m in "abc"}, problems,
                           topology="ring", k=1)
    assert run.missing["verify"] == ["b"]
    orphan = next(a for a, vs in run.assignment.items() if list(vs) == ["b"])
    for i, rep in enumerate(run.batch.reports):
        lost = run.chains[orphan][i].id
        assert rep.unverified == [lost] and lost not in rep.earliest_error and lost not in rep.accepted
        assert len(rep.earliest_error) == 2 and not any(v.chain_id == lost for v in rep.verdicts)
