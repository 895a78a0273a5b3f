"""The job and the endpoint are one engine: the same problem, chains, members and reliability table
give the same posteriors through `verinet compare`'s path (a caller, cross_verify, verify_batch) and
through the endpoint's (VerifyEngine with in-process members)."""

import asyncio

import pytest

from verinet.backends import EnsembleConfig, MemberSpec, make_backend
from verinet.backends.formats import format_for
from verinet.experiments.arms import calibrate
from verinet.graph.pipeline import verify_batch
from verinet.orchestration import LocalMembers, cross_verify
from verinet.serve.api import VerifyRequest
from verinet.serve.config import ServeConfig
from verinet.serve.local import local_engine
from verinet.tasks import get_family

MEMBERS = ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"]


@pytest.fixture(scope="module")
def setup():
    specs = [MemberSpec(name=n, backend="hf", model=n, format="zoo", dtype="float32") for n in MEMBERS]
    backends = {s.name: make_backend(s) for s in specs}
    caller = LocalMembers(backends)
    formats = {s.name: format_for(s, backends[s.name]) for s in specs}
    fam = get_family("arith")
    dev = fam.sample(6, seed=91, params={"steps": 2})
    cal = calibrate(caller, formats, dev, aggregation="dawid_skene", seed=1)
    yield specs, caller, formats, cal
    for b in backends.values():
        b.close()


def test_learned_reliabilities_are_fitted_on_labels(setup):
    _, _, _, cal = setup
    t = cal.reliabilities
    assert set(t.verifiers) == set(MEMBERS) and t.n_items > 0
    assert all(0 < r.sensitivity < 1 and 0 < r.specificity < 1 for r in t.verifiers.values())
    assert 0.0 < cal.threshold < 1.0


@pytest.mark.parametrize("aggregation", ["dawid_skene", "mean"])
def test_job_and_endpoint_give_identical_posteriors(setup, aggregation):
    specs, caller, formats, cal = setup
    fam = get_family("arith")
    problems = fam.sample(2, seed=17, params={"steps": 3})
    cfg = ServeConfig(ensemble=EnsembleConfig(members=specs, quorum=3), reliabilities=cal.reliabilities.to_dict())
    engine = local_engine(cfg)
    for p in problems:
        for chain in [fam.gold_chain(p)] + [fam.inject(p, k) for k in fam.injectable_kinds(p)]:
            # the job's path
            chain = chain.model_copy(update={"author": "client"})
            verdicts, _ = cross_verify(caller, formats, [p], {"client": [chain]}, {"client": MEMBERS})
            job = verify_batch([(p.id, [chain], verdicts)], aggregation=aggregation, threshold=cal.threshold,
                               family=fam, include_graph=False, reliabilities=cal.reliabilities).reports[0]
            job_post = [x for q in sorted(job.posteriors, key=lambda q: q.step_index) for x in (q.p_valid, q.p_supported)]
            # the endpoint's path
            req = VerifyRequest(question=p.question, steps=[s.text for s in chain.steps], answer=chain.answer,
                                format="arith", topology="all_pairs", aggregation=aggregation,
                                threshold=cal.threshold, include_graph=False)
            res = asyncio.run(engine.verify(req))
            served = [x for s in res.steps for x in (s.p_valid, s.p_supported)]
            assert served == pytest.approx(job_post, abs=1e-9), (chain.error_kind, served, job_post)
            assert res.earliest_error == job.earliest_error[chain.id]
            assert res.reliability.source == ("table" if aggregation == "dawid_skene" else "none")
