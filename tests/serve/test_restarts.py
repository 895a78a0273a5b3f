"""How the engine counts member restarts when no call saw the replica die (no Ray: a member
client that reports which of its replicas are gone, as ServeMember does)."""

import asyncio
import time

from verinet.serve.engine import VerifyEngine

from .conftest import serve_config


class Replicas:
    """A member client whose replicas the test removes: ``gone_replicas`` reports each once."""

    def __init__(self) -> None:
        self.gone: dict[str, float] = {}

    async def gone_replicas(self) -> tuple[dict[str, float], int]:
        gone, self.gone = self.gone, {}
        return gone, 0


def engine(**updates) -> tuple[VerifyEngine, dict[str, Replicas]]:
    cfg = serve_config(**updates)
    clients = {m.name: Replicas() for m in cfg.ensemble.members}
    return VerifyEngine(cfg, clients, cfg.ensemble.members, quorum=2), clients


def restarts(e: VerifyEngine, name: str) -> float:
    return e.metrics.member_restarts.labels(member=name)._value.get()


def test_a_replica_found_gone_before_its_calls_time_out_is_counted_once_they_do():
    # The race CI hit: the health loop finds the killed replica gone (no failure yet: the calls in
    # flight fail only at member_timeout_s), then the calls time out.
    e, clients = engine(member_timeout_s=3.0, health_interval_s=1.0)
    clients["zoo-xs-s1"].gone["r1"] = time.monotonic()  # answered, then died
    asyncio.run(e._count_gone("zoo-xs-s1"))
    assert restarts(e, "zoo-xs-s1") == 0  # gone with no failure: maybe scaled down; wait and see
    e._failed("zoo-xs-s1", "timeout")
    asyncio.run(e._count_gone("zoo-xs-s1", every_s=60.0))  # the lookup is throttled; the pending one is not
    asyncio.run(e._count_gone("zoo-xs-s1"))
    assert restarts(e, "zoo-xs-s1") == 1
    assert restarts(e, "zoo-xs-s0") == 0


def test_a_replica_gone_with_no_failure_in_the_window_was_scaled_down():
    e, clients = engine(member_timeout_s=0.01, health_interval_s=0.01)
    clients["zoo-xs-s1"].gone["r1"] = time.monotonic()
    asyncio.run(e._count_gone("zoo-xs-s1"))
    time.sleep(0.05)  # past member_timeout_s + 2 health intervals
    asyncio.run(e._count_gone("zoo-xs-s1"))
    e._failed("zoo-xs-s1", "timeout")  # a later failure has nothing to do with it
    asyncio.run(e._count_gone("zoo-xs-s1"))
    assert restarts(e, "zoo-xs-s1") == 0


def test_a_replica_that_failed_before_it_was_found_gone_is_counted_at_once():
    e, clients = engine()
    seen = time.monotonic()
    e._failed("zoo-xs-s2", "error")
    clients["zoo-xs-s2"].gone["r9"] = seen
    asyncio.run(e._count_gone("zoo-xs-s2"))
    assert restarts(e, "zoo-xs-s2") == 1
    assert not e.ready["zoo-xs-s2"]  # no replica left alive: down until a health check answers


def test_a_member_found_dead_by_a_call_is_not_ready_at_once_in_the_gauge():
    e, _ = engine()
    names = list(e.ready)
    for n in names:
        e.ready[n] = True
    e.metrics.members_ready.set(len(names))
    e.member_died(names[0], "replica-1")
    assert e.metrics.members_ready._value.get() == len(names) - 1


def test_a_replica_briefly_unavailable_is_a_failed_call_and_a_dead_one_a_restart():
    """Ray's ActorUnavailableError subclasses RayActorError: caught as 'died' it would count a restart and
    mark the member not ready for what is a transient outage."""
    import pytest
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    from verinet.serve.app import ServeMember
    from verinet.serve.members import MemberFailure

    class Handle:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def __getattr__(self, method):
            async def fail(*_args):
                raise self.error
            return type("Method", (), {"remote": staticmethod(fail)})

    unavailable = ServeMember("m", Handle(ActorUnavailableError("connection lost", None)))
    with pytest.raises(MemberFailure) as e:
        asyncio.run(unavailable.verify([("q", ["a"], None)]))
    assert e.value.reason == "error"
    died = ServeMember("m", Handle(ActorDiedError()))
    with pytest.raises(MemberFailure) as e:
        asyncio.run(died.verify([("q", ["a"], None)]))
    assert e.value.reason == "died"
