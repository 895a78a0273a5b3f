"""The same faithfulness code runs over Ray actors (verinet.cluster.Ensemble) with the same records."""

import pytest

from verinet.backends import EnsembleConfig, make_backend
from verinet.backends.formats import ZooFormat
from verinet.faithfulness import evaluate_models, evaluate_pipeline
from verinet.orchestration import LocalMembers
from verinet.tasks import get_family

MEMBERS = ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"]


@pytest.mark.slow
def test_ray_and_in_process_runs_agree():
    from tests.cluster.conftest import local_ray, zoo_member  # imports Ray: only when this test runs
    from verinet.cluster import Ensemble

    config = EnsembleConfig(members=[zoo_member(m, model=m) for m in MEMBERS], quorum=3)
    problems = get_family("arith").sample(3, seed=5, params={"steps": 2, "distractors": 0})
    fmts = {m: ZooFormat() for m in MEMBERS}
    local = LocalMembers({m.name: make_backend(m) for m in config.members})
    kw = {"n_boot": 200, "selection": "majority"}
    expected = evaluate_models(local, fmts, problems, n_boot=200)
    expected_pl = evaluate_pipeline(local, fmts, problems, **kw)
    with local_ray(num_cpus=2):
        with Ensemble(config, name="faithfulness") as ens:
            got = evaluate_models(ens, fmts, problems, n_boot=200)
            got_pl = evaluate_pipeline(ens, fmts, problems, **kw)
    for m in MEMBERS:
        assert got[m].records == expected[m].records
    strip = ("p_valid",)  # verifier scores agree to float tolerance, everything else exactly
    for a, b in zip(got_pl.records, expected_pl.records):
        rows_a = [{k: v for k, v in r.items() if k not in strip} for r in a["adding_mistakes"]]
        rows_b = [{k: v for k, v in r.items() if k not in strip} for r in b["adding_mistakes"]]
        assert rows_a == rows_b and a["final_answer"] == b["final_answer"]
        for ra, rb in zip(a["adding_mistakes"], b["adding_mistakes"]):
            if ra.get("p_valid") is not None:
                assert ra["p_valid"] == pytest.approx(rb["p_valid"], abs=1e-5)
