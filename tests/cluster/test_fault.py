"""Fault tolerance with real actors: a member killed in the middle of a batch call.

Three zoo members (the same small checkpoint under three names), quorum 2. The tests run in
file order on one ensemble: the last one kills members for good.
"""

import threading
import time

import pytest
import ray

from verinet.backends import EnsembleConfig
from verinet.tasks import get_family
from verinet.zoo.formats import solve_prompt

from .conftest import local_ray, zoo_member

MEMBERS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def ens(zoo_model):
    from verinet.cluster import Ensemble

    cfg = EnsembleConfig(members=[zoo_member(n, model=zoo_model) for n in MEMBERS],
                         quorum=2, retries=0, call_timeout_s=120)
    with local_ray(num_cpus=2):
        e = Ensemble(cfg, name="fault", max_restarts=3, load_timeout_s=120, restart_timeout_s=60)
        yield e
        e.shutdown()


@pytest.fixture(scope="module")
def prompts():
    fam = get_family("arith")
    return [solve_prompt(p.question) for p in fam.sample(96, seed=5, params={"steps": 3, "distractors": 1})]


# a batch long enough (about 1-3 s) for the kill to land while the member is working on it
def _long(prompts):
    return prompts * 8


def _busy(actor, wait_s: float = 0.3) -> bool:
    """The actor runs one call at a time: a pid() that does not come back in time means busy."""
    ready, _ = ray.wait([actor.pid.remote()], timeout=wait_s)
    return not ready


def _kill_mid_call(ens, member: str, run):
    """Start ``run()`` in a thread, kill ``member`` once it is busy with that call; return run's result."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(r=run()), daemon=True)
    actor = ens.actor(member)
    t.start()
    deadline = time.monotonic() + 30
    while not _busy(actor):
        assert t.is_alive(), "the call ended before the kill: make the batch longer"
        assert time.monotonic() < deadline, "the call never reached the member"
    ray.kill(actor, no_restart=False)  # max_restarts brings it back
    t.join(timeout=180)
    assert not t.is_alive()
    return out["r"]


def _wait_healthy(ens, member: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while not ens.health(timeout_s=5)[member]:
        assert time.monotonic() < deadline, f"{member} did not come back"
        time.sleep(0.2)


def test_kill_mid_call_carries_on_with_the_quorum_and_the_member_comes_back(ens, prompts):
    pid_before = ray.get(ens.actor("b").pid.remote())
    r = _kill_mid_call(ens, "b", lambda: ens.generate(_long(prompts), max_tokens=64))
    assert r.missing == ["b"] and sorted(r.results) == ["a", "c"]
    assert "restart" in r.errors["b"] or "unavailable" in r.errors["b"]
    assert r.attempts["b"] == 1 and r.quorum == 2
    assert set(r.usage) == {"a", "c"} and r.results["a"].texts == r.results["c"].texts

    _wait_healthy(ens, "b")
    again = ens.generate(prompts[:4], max_tokens=32)
    assert again.missing == [] and again["b"].texts == again["a"].texts
    info = ens.info()["b"]
    assert info["restarted"] is True and info["pid"] != pid_before


def test_a_retry_waits_for_the_restarted_actor(ens, prompts):
    work = {"a": ("generate", (prompts[:8],), {"max_tokens": 64}),
            "b": ("generate", (prompts[8:16],), {"max_tokens": 64}),
            "c": ("generate", (_long(prompts),), {"max_tokens": 64})}
    r = _kill_mid_call(ens, "c", lambda: ens.call_each(work, retries=1))
    assert r.missing == [] and r.attempts == {"a": 1, "b": 1, "c": 2}
    assert len(r["c"].completions) == len(_long(prompts)) and r.wall_s["c"] > r.wall_s["a"]


def test_call_each_sends_each_member_its_own_work(ens, prompts):
    r = ens.call_each({"a": ("generate", (prompts[:2],), {"max_tokens": 16}),
                       "b": ("generate", (prompts[2:5],), {"max_tokens": 16}),
                       "c": ("pid", ())})
    assert len(r["a"].completions) == 2 and len(r["b"].completions) == 3 and isinstance(r["c"], int)
    assert r.methods == {"a": "generate", "b": "generate", "c": "pid"} and set(r.usage) == {"a", "b"}


def test_a_call_past_call_timeout_restarts_the_member_and_leaves_it_out(ens, prompts):
    pid_before = ray.get(ens.actor("c").pid.remote())
    work = {"a": ("generate", (prompts[:4],), {"max_tokens": 8}),
            "b": ("generate", (prompts[4:8],), {"max_tokens": 8}),
            "c": ("generate", (prompts * 30,), {"max_tokens": 64})}
    r = ens.call_each(work, timeout_s=1.5)
    assert r.missing == ["c"] and "no answer within call_timeout_s=1.5s" in r.errors["c"]
    _wait_healthy(ens, "c")  # restarted rather than left busy with the stuck call
    assert ray.get(ens.actor("c").pid.remote()) != pid_before


def test_a_member_whose_restarts_went_on_timeouts_is_replaced(ens, zoo_model, prompts):
    """With max_restarts=0 the kill after one slow call leaves Ray nothing to restart with: the next
    call starts a new actor in its place instead of losing the member for the rest of the job."""
    from verinet.cluster import Ensemble, QuorumError

    cfg = EnsembleConfig(members=[zoo_member("d", model=zoo_model)], quorum=1, retries=0, call_timeout_s=120)
    e = Ensemble(cfg, name="budget", max_restarts=0, load_timeout_s=120, restart_timeout_s=60)
    try:
        first = e.actor("d")
        with pytest.raises(QuorumError, match=r"no answer within call_timeout_s=1\.5s"):
            e.generate(prompts * 30, max_tokens=64, timeout_s=1.5)
        r = e.generate(prompts[:2], max_tokens=8)
        assert r.missing == [] and len(r["d"].completions) == 2
        assert e.replaced == {"d": 1} and e.actor("d") is not first

        # a replacement that cannot start is reported once; later calls fail at once, as for any dead member
        e._specs["d"] = e._specs["d"].model_copy(update={"model": "/nonexistent/checkpoint"})
        with pytest.raises(QuorumError, match=r"no answer within call_timeout_s=1\.5s"):
            e.generate(prompts * 30, max_tokens=64, timeout_s=1.5)
        with pytest.raises(QuorumError, match="a new actor did not start") as failed:
            e.generate(prompts[:2], max_tokens=8)
        assert "restarts were spent on timeouts" in failed.value.errors["d"]
        with pytest.raises(QuorumError):
            e.generate(prompts[:2], max_tokens=8, retries=1)
        assert e.replaced == {"d": 1} and e._generation["d"] == 2  # no second try at starting one
    finally:
        e.shutdown()
    assert e._pending == set() and e._actors == {}


def test_below_quorum_is_an_error_naming_the_failed_members(ens, prompts):
    from verinet.cluster import QuorumError

    for m in ("a", "b"):
        ray.kill(ens.actor(m), no_restart=True)
    with pytest.raises(QuorumError, match=r"1 of 3 members answered, the quorum is 2 \(a: .*; b: ") as exc:
        ens.generate(prompts[:2], max_tokens=8, retries=1)
    assert exc.value.result.missing == ["a", "b"] and "c" in exc.value.result.results
    assert "will not restart" in exc.value.errors["a"]
    assert ens.replaced == {"a": 0, "b": 0, "c": 0}  # killed from outside, not by a timeout: not replaced
