"""The same verification pipeline runs in-process and on Ray actors, with the same result."""

import pytest

from verinet.backends import EnsembleConfig, make_backend
from verinet.backends.formats import ZooFormat
from verinet.orchestration import LocalMembers, run_verification
from verinet.tasks import get_family

from .conftest import local_ray, zoo_member

MEMBERS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def config(zoo_model):
    return EnsembleConfig(members=[zoo_member(n, model=zoo_model) for n in MEMBERS], quorum=2)


def test_ray_and_in_process_runs_agree(config):
    from verinet.cluster import Ensemble

    problems = get_family("arith").sample(3, seed=8, params={"steps": 2})
    fmts = {m: ZooFormat() for m in MEMBERS}
    local = LocalMembers({m.name: make_backend(m) for m in config.members})
    expected = run_verification(local, fmts, problems, topology="ring", include_graph=False)
    with local_ray(num_cpus=2):
        with Ensemble(config, name="pipeline") as ens:
            got = run_verification(ens, fmts, problems, topology="ring", include_graph=False)
    assert {m: [c.text for c in cs] for m, cs in got.chains.items()} == \
        {m: [c.text for c in cs] for m, cs in expected.chains.items()}
    def key(v):
        return v.verifier, v.chain_id, v.step_index

    got_v, exp_v = sorted(got.verdicts, key=key), sorted(expected.verdicts, key=key)
    assert [key(v) for v in got_v] == [key(v) for v in exp_v]
    for a, b in zip(got_v, exp_v):
        assert a.p_valid == pytest.approx(b.p_valid, abs=1e-5)
    assert [r.final_answer for r in got.batch.reports] == [r.final_answer for r in expected.batch.reports]
    assert got.missing == {"solve": [], "verify": []}
