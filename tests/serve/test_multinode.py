"""The endpoint on a real three-node Ray cluster (loopback): a member's node dies under load.

Three zoo members, quorum 2, each pinned to its own node with ``resources.custom``: zoo-xs-s0 on
the head, zoo-xs-s1 on worker node_a, zoo-xs-s2 on worker node_b. Serve's proxy runs on the head
only (every node here shares 127.0.0.1, so proxies on every node would fight over one port).
Serve spreads the ingress replica over the nodes; the worker node without it is the one that dies.

Three clients send a bounded number of requests, all to 127.0.0.1. After the first few answers,
every process of the victim node is SIGKILLed while requests are in flight; the rest are sent
once it is dead. Every request must get a 200 with at least the quorum's verdicts on every step;
the dead node's member is missing from every answer after its death (it cannot restart: no live
node declares its resource), and from none before it.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.cluster.multinode import multinode_cluster, wait_for
from verinet.backends import EnsembleConfig, MemberSpec, Resources
from verinet.serve.config import ServeConfig

from .conftest import arith_requests, body, free_port, percentile

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(300)]

WORKERS = {"node_a": (1, {"node_a": 4}), "node_b": (1, {"node_b": 4})}
HEAD = (1, {"head": 4})
PLACE = {"zoo-xs-s0": "head", "zoo-xs-s1": "node_a", "zoo-xs-s2": "node_b"}
CLIENTS, BEFORE, AFTER = 3, 8, 6  # requests per client: sent freely (the kill lands among them), then after it
KILL_AT = 6  # answers before the kill


def _config() -> ServeConfig:
    members = [MemberSpec(name=n, backend="hf", model=n, format="zoo", dtype="float32",
                          resources=Resources(num_cpus=0.5, custom={node: 1})) for n, node in PLACE.items()]
    return ServeConfig(ensemble=EnsembleConfig(members=members, quorum=2, retries=0, call_timeout_s=60),
                       host="127.0.0.1", port=free_port(), health_interval_s=1.0, member_timeout_s=5.0,
                       timeout_s=30.0, max_queue=16)


def _replica_nodes() -> dict[str, str]:
    """Deployment name -> node id of its live replica (from the GCS actor table: no dashboard here)."""
    import ray

    out = {}
    for a in ray._private.state.actors().values():
        name = a.get("Name") or ""
        if a.get("State") == "ALIVE" and name.startswith("SERVE_REPLICA::"):
            deployment = name.split("::", 1)[1].split("#")[1]  # SERVE_REPLICA::app#deployment#id
            out[deployment] = a["Address"]["NodeID"]
    return out


@pytest.fixture
def endpoint():
    """(cluster, config, URL, seconds to ready): the app on the three nodes, its proxy on the head; all of it stopped after."""
    import ray
    from ray import serve
    from ray._private import ray_constants

    from verinet.serve.app import start

    assert not ray_constants.ENABLE_RAY_CLUSTER, "Ray was imported before the loopback environment was set"
    cfg = _config()
    with multinode_cluster(WORKERS, head=HEAD) as mn:
        ray.init(address=mn.address, log_to_driver=False)  # a driver on the head, as `verinet serve` would be
        try:
            t0 = time.monotonic()
            serve.start(proxy_location="HeadOnly", http_options={"host": cfg.host, "port": cfg.port})
            url = start(cfg, None, ray_address=mn.address)  # joins the Serve instance started above
            wait_for(lambda: _ready(url) == 3, 180, "all three members ready")
            yield mn, cfg, url, time.monotonic() - t0
        finally:
            serve.shutdown()


def test_a_member_node_dies_under_load_and_requests_keep_their_quorum(endpoint):
    mn, cfg, url, app_s = endpoint
    t0 = time.monotonic()
    ids = {n: mn.node_id(n) for n in ("head", *WORKERS)}
    where = wait_for(lambda: _replica_nodes() if {"ingress", *PLACE} <= set(_replica_nodes()) else None,
                     60, "the replicas in the actor table")
    assert {m: where[m] for m in PLACE} == {m: ids[n] for m, n in PLACE.items()}, where
    victim_node = next(n for n in WORKERS if ids[n] != where["ingress"])
    victim = next(m for m, n in PLACE.items() if n == victim_node)

    bodies = [body(r) | {"include_graph": False} for r in arith_requests(12, seed=41)]
    answers: list[tuple[float, float, int, dict]] = []  # (sent, answered, status, json)
    lock = threading.Lock()
    killed = threading.Event()
    kill_at: list[float] = []  # when the kill started, when the node was dead

    def kill() -> None:
        mn.kill_node(victim_node)
        kill_at.append(time.monotonic())
        killed.set()

    def send(i: int) -> None:
        t = time.monotonic()
        r = requests.post(url + "/v1/verify", json=bodies[i % len(bodies)], timeout=60)
        with lock:
            answers.append((t, time.monotonic(), r.status_code, r.json()))
            if len(answers) == KILL_AT:
                kill_at.append(time.monotonic())
                threading.Thread(target=kill).start()

    def client(c: int) -> None:
        for j in range(BEFORE):
            send(c * 100 + j)
        assert killed.wait(120), "the node was not killed"
        for j in range(AFTER):
            send(c * 100 + BEFORE + j)

    t_load = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for f in [pool.submit(client, c) for c in range(CLIENTS)]:
            f.result()
    t_load = time.monotonic() - t_load
    ready_after = _ready(url)

    assert len(answers) == CLIENTS * (BEFORE + AFTER)
    assert [s for *_, s, _ in answers if s != 200] == [], [d for *_, s, d in answers if s != 200][:3]
    for *_, d in answers:  # the quorum's verdicts on every step
        answered = [m["name"] for m in d["members"] if m["answered"]]
        assert len(answered) >= 2 and all(set(answered) <= set(s["scores"]) for s in d["steps"]), d["members"]
    start_kill, dead = kill_at
    before = [d["missing"] for _, done, _, d in answers if done <= start_kill]
    assert len(before) >= KILL_AT and all(m == [] for m in before), before
    after = [d["missing"] for sent, _, _, d in answers if sent >= dead]
    assert len(after) >= CLIENTS * AFTER and all(m == [victim] for m in after), after
    during = [done - sent for sent, done, _, _ in answers if sent < dead and done > start_kill]
    lat_after = [done - sent for sent, done, _, _ in answers if sent >= dead]
    assert ready_after == 2
    print(f"\ncluster up in {mn.up_s:.1f}s, the app ready {app_s:.1f}s later; {len(answers)} requests from {CLIENTS} clients in {t_load:.1f}s, "
          f"all 200; {victim_node} ({victim}) killed after {KILL_AT} answers, {len(during)} requests in flight "
          f"across the kill (longest {max(during, default=0):.2f}s); after it p50 "
          f"{percentile(lat_after, 0.5) * 1000:.0f} ms, max {max(lat_after) * 1000:.0f} ms; "
          f"the test's call {time.monotonic() - t0:.1f}s")


def _ready(url: str) -> int:
    try:
        return requests.get(url + "/readyz", timeout=10).json().get("members_ready", 0)
    except (requests.RequestException, ValueError):
        return 0
