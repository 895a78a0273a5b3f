"""The comparison job on a real three-node Ray cluster (loopback) losing a worker node mid-run.

A head (no CPUs: only the job's driver attaches there) and two worker nodes, each declaring its
own custom resource. The members are pinned with ``resources.custom``: zoo-xs-s0, zoo-xs-s1 and the
baseline zoo-l on node_a, zoo-xs-s2 on node_b. Once the first chunk's records are written, every
process of node_b is SIGKILLed. With ``retries: 0`` a call to the member that died fails at once
(Ray answers "actor unavailable" while it waits for a node with node_b to restart it on), so the
job finishes on node_a with the ensemble's two remaining members, and says so per chunk. Every
problem has exactly one record in results.jsonl: none lost, none written twice.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.cluster.multinode import multinode_cluster, wait_for

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(420)]

WORKERS = {"node_a": (2, {"node_a": 4}), "node_b": (1, {"node_b": 4})}
PLACE = {"zoo-xs-s0": "node_a", "zoo-xs-s1": "node_a", "zoo-xs-s2": "node_b", "zoo-l": "node_a"}
N, CHUNK = 6, 2


def _member(name: str) -> dict:
    return {"name": name, "backend": "hf", "model": name, "format": "zoo", "dtype": "float32",
            "resources": {"num_cpus": 0.5, "num_gpus": 0, "custom": {PLACE[name]: 1}}}


def _config(address: str) -> dict:
    return {
        "name": "multinode", "seed": 0,
        "tasks": [{"family": "arith", "n": N, "params": {"steps": 2}}],
        "inject": ["wrong_result", "dropped_step"],
        "threshold": 0.5, "chunk_size": CHUNK,
        "ensemble": {"members": [_member(f"zoo-xs-s{i}") for i in range(3)], "retries": 0, "call_timeout_s": 60},
        "baseline": {"member": _member("zoo-l")},
        "faithfulness": {"n": 0}, "sweep": {"n": 0},
        "ray": {"address": address},
    }


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _run(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([str(BIN / "verinet"), "compare", *args], env=env, cwd=ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def _held(node_id: str) -> dict[str, float]:
    """What is held on one node right now: total minus available, per resource."""
    import ray

    total = ray._private.state.state.total_resources_per_node()[node_id]
    free = ray._private.state.state.available_resources_per_node().get(node_id, {})
    return {k: round(v - free.get(k, 0.0), 3) for k, v in total.items() if v - free.get(k, 0.0) > 1e-6}


@pytest.fixture
def cluster():
    """The head and both worker nodes; every process of them is stopped when the test ends."""
    from ray._private import ray_constants

    assert not ray_constants.ENABLE_RAY_CLUSTER, "Ray was imported before the loopback environment was set"
    with multinode_cluster(WORKERS) as mn:
        yield mn


def test_compare_job_finishes_on_the_remaining_node_when_a_worker_node_dies(cluster, tmp_path):
    import ray

    from verinet.experiments.compare import slice_problems
    from verinet.experiments.config import CompareConfig

    mn = cluster
    t0 = time.monotonic()
    ids = {n: mn.node_id(n) for n in WORKERS}
    cfg = _config(mn.address)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    results = out / "results.jsonl"
    job = _run(["--config", str(tmp_path / "job.yaml"), "--out", str(out)], tmp_path / "job.log")
    try:
        # the test watches the cluster as a second driver (it attaches to the head, as the job does)
        ray.init(address=mn.address, log_to_driver=False)
        wait_for(lambda: job.poll() is not None or len(_records(results)) >= CHUNK, 240,
                 "the first chunk's records")
        assert job.poll() is None, "the job ended before the kill:\n" + (tmp_path / "job.log").read_text()[-3000:]
        # the members run where their custom resources put them, both worker nodes busy
        held = {n: _held(ids[n]) for n in WORKERS}
        assert held["node_a"].get("node_a") == 3 and held["node_a"].get("CPU") == 1.5, held
        assert held["node_b"].get("node_b") == 1 and held["node_b"].get("CPU") == 0.5, held
        before = len(_records(results))
        t_kill = time.monotonic()
        killed = mn.kill_node("node_b")
        rc = job.wait(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    t_job = time.monotonic() - t_kill
    log = (tmp_path / "job.log").read_text()
    assert rc == 0, log[-4000:]
    assert before < N and killed

    rows = _records(results)
    expected = [p.id for p in slice_problems(CompareConfig.model_validate(cfg), 0,
                                             CompareConfig.model_validate(cfg).tasks[0])[0]]
    got = [r["problem_id"] for r in rows]
    assert len(got) == len(set(got)) == N and sorted(got) == sorted(expected)  # none lost, none twice
    chunks = [r["chunk"] for r in rows if "size" in r["chunk"]]
    assert [c["id"] for c in chunks] == [f"0:{i}" for i in range(0, N, CHUNK)]
    missing = [sorted({m for ms in c["missing"]["ensemble"].values() for m in ms}) for c in chunks]
    assert missing[0] == [] and missing[-1] == ["zoo-xs-s2"], missing  # all three answered, then two
    assert not any(ms for c in chunks for ms in c["missing"]["baseline"].values())  # zoo-l was on node_a
    last = rows[-1]["ensemble"]
    assert {c["author"] for c in last["chains"]} == {"zoo-xs-s0", "zoo-xs-s1"}
    actors = json.loads((out / "summary.json").read_text())["actors"]
    assert {m: a["node_id"] for m, a in actors.items()} == {m: ids["node_a"] for m in
                                                            ("zoo-xs-s0", "zoo-xs-s1", "zoo-l")}
    assert (out / "report.html").exists()
    print(f"\ncluster up in {mn.up_s:.1f}s; node_b killed after {before} of {N} records, {t_kill - t0:.1f}s into the "
          f"job; the job finished {t_job:.1f}s later; the test's call {time.monotonic() - t0:.1f}s")
