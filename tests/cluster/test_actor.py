"""hf inside a Ray actor answers exactly as hf in this process; start-up failures are clear."""

import os
import time
from itertools import chain

import pytest
import ray

from verinet.backends import EnsembleConfig, EnsembleConfigError, MemberSpec, Resources, make_backend
from verinet.tasks import get_family
from verinet.zoo.formats import solve_prompt, verify_text
from verinet.zoo.tokenizer import INVALID, TAG, VALID

from .conftest import local_ray, zoo_member

TOL = 1e-4


@pytest.fixture(scope="module")
def cpu_cluster():
    with local_ray(num_cpus=2):
        yield


@pytest.fixture(scope="module")
def texts():
    fam = get_family("arith")
    problems = fam.sample(6, seed=3, params={"steps": 2, "distractors": 1})
    chains = [fam.gold_chain(p) for p in problems]
    chains += [fam.inject(p, "wrong_result", seed=1) for p in problems[:3]]
    by_id = {p.id: p for p in problems}
    verify = [verify_text(by_id[c.problem_id].question, [s.text for s in c.steps], c.answer) for c in chains]
    first_tag = [t[:t.index(TAG)] for t in verify]  # the prompt just before the first verdict slot
    return {"solve": [solve_prompt(p.question) for p in problems], "verify": verify, "first_tag": first_tag}


def test_hf_in_an_actor_matches_hf_here(cpu_cluster, zoo_model, texts):
    from verinet.cluster import Ensemble

    spec = zoo_member("xs", model=zoo_model, num_cpus=1)
    direct = make_backend(spec)
    with Ensemble(EnsembleConfig(members=[spec]), name="equiv", load_timeout_s=120) as ens:
        info = ens.info()["xs"]
        assert info["member"] == "xs" and info["backend"] == "hf" and info["pid"] != os.getpid()
        assert info["assigned"] == {"CPU": 1.0}

        gen = ens.generate(texts["solve"], max_tokens=48)
        want = direct.generate(texts["solve"], max_tokens=48)
        assert gen["xs"].texts == want.texts
        assert gen["xs"].usage == want.usage and gen.usage["xs"] == want.usage

        for candidates in ([VALID, INVALID], ["1", " 12"]):  # one-token and multi-token paths
            got = ens.score(texts["first_tag"] + texts["solve"], candidates)["xs"].logprobs
            ref = direct.score(texts["first_tag"] + texts["solve"], candidates).logprobs
            assert [len(r) for r in got] == [len(r) for r in ref]
            assert list(chain(*got)) == pytest.approx(list(chain(*ref)), abs=TOL)

        got = ens.score_tagged(texts["verify"], TAG, VALID, INVALID)
        ref = direct.score_tagged(texts["verify"], TAG, VALID, INVALID)
        assert [len(p) for p in got["xs"].p_valid] == [len(p) for p in ref.p_valid]
        assert list(chain(*got["xs"].p_valid)) == pytest.approx(list(chain(*ref.p_valid)), abs=TOL)
        assert got.missing == [] and got.attempts == {"xs": 1} and got.wall_s["xs"] > 0


def test_a_member_that_cannot_load_is_named_and_nothing_is_left(cpu_cluster, tmp_path):
    from verinet.cluster import Ensemble, EnsembleError

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    cfg = EnsembleConfig(members=[zoo_member("broken", model=str(empty))])
    match = r"members failed to start: broken: BackendError: member broken: cannot load .*not-a-model"
    with pytest.raises(EnsembleError, match=match):
        Ensemble(cfg, name="broken", load_timeout_s=120)
    assert not [a for a in ray.util.list_named_actors() if a.startswith("broken.")]


def test_config_errors_before_any_actor(cpu_cluster, tmp_path):
    from verinet.cluster import Ensemble

    gpu = MemberSpec(name="g", backend="hf", model="zoo-xs-s0", resources=Resources(num_gpus=1))
    t0 = time.monotonic()
    with pytest.raises(EnsembleConfigError, match=r"g \(num_gpus 1.*the Ray cluster has none"):
        Ensemble(EnsembleConfig(members=[gpu]))
    missing = zoo_member("m", model=str(tmp_path / "nope"))
    with pytest.raises(EnsembleConfigError, match=r"member m: model .*nope.* is not a directory"):
        Ensemble(EnsembleConfig(members=[missing]))
    assert time.monotonic() - t0 < 5
