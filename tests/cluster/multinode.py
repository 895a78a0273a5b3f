"""A multi-node Ray cluster on loopback for the ``multinode`` tests.

A head node and worker nodes, each its own raylet (with its own workers) and its own declared
resources (``ray.cluster_utils.Cluster``), every node on 127.0.0.1. ``kill_node`` kills one
node's processes with SIGKILL, as if its machine had died.

Why not ``ray start`` subprocesses: a worker ``ray start`` refuses to join while
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (which keeps a local Ray on loopback), and without it resolves
``--address=127.0.0.1:...`` to the machine's external address. ``Cluster`` starts each node with
``node_ip_address=127.0.0.1`` instead.

``Cluster`` writes the head's address where a bare ``ray.init()`` on this machine looks for a
running cluster (``$RAY_TMPDIR/ray/ray_current_cluster``, by default under /tmp): RAY_TMPDIR points
into this cluster's own temp dir while it runs, so no other Ray user on the machine joins it by
accident. Only processes this cluster started are stopped (never ``ray stop``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

# before Ray is imported (the cluster conftest sets the same)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

NODE_ARGS = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}


@dataclass
class MultiNode:
    cluster: Any  # ray.cluster_utils.Cluster
    temp: str
    nodes: dict[str, Any] = field(default_factory=dict)  # name -> ray._private.node.Node
    up_s: float = 0.0  # seconds it took to start every node

    @property
    def address(self) -> str:
        return self.cluster.address

    def add(self, name: str, num_cpus: float, resources: dict[str, float]) -> Any:
        """A worker node declaring ``num_cpus`` CPUs and the custom ``resources``."""
        node = self.cluster.add_node(**NODE_ARGS, num_cpus=num_cpus, resources=resources)
        self.nodes[name] = node
        return node

    def node_id(self, name: str) -> str:
        return self.nodes[name].node_id

    def pids(self, name: str) -> set[int]:
        """Every process of the node: its raylet, agents and workers (the raylet's descendants)."""
        out: set[int] = set()
        for infos in self.nodes[name].all_processes.values():
            for info in infos:
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(info.process.pid)
                    out |= {p.pid, *(c.pid for c in p.children(recursive=True))}
        return out

    def kill_node(self, name: str) -> set[int]:
        """SIGKILL every process of the node at once, as a machine that dies; return their pids."""
        pids = self.pids(name)
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                p.kill()
                procs.append(p)
        psutil.wait_procs(procs, timeout=30)
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)  # reaps what is left
        return pids


@contextlib.contextmanager
def multinode_cluster(workers: dict[str, tuple[int, dict[str, float]]], *, head: tuple[int, dict[str, float]] = (0, {})
                      ) -> Iterator[MultiNode]:
    """A head node (by default no CPUs: only drivers and Serve's controller run there) and ``workers``:
    name -> (CPUs, custom resources). Ray wants whole numbers of CPUs per node."""
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="vmn")  # short: Ray's socket paths must fit in 107 bytes
    os.makedirs(os.path.join(temp, "ray"))
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_ADDRESS")}
    os.environ["RAY_TMPDIR"] = temp
    os.environ.pop("RAY_ADDRESS", None)
    cluster = None
    t0 = time.monotonic()
    try:
        cluster = Cluster(initialize_head=True, head_node_args={**NODE_ARGS, "num_cpus": head[0],
                                                                 "resources": head[1], "temp_dir": temp,
                                                                 "include_dashboard": False})
        mn = MultiNode(cluster, temp, {"head": cluster.head_node})
        for name, (cpus, res) in workers.items():
            mn.add(name, cpus, res)
        cluster.wait_for_nodes()
        mn.up_s = time.monotonic() - t0
        yield mn
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.shutdown()
        _stop_leftovers(temp)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(temp, ignore_errors=True)


def _stop_leftovers(marker: str) -> None:
    """Kill any process whose command line names this cluster's temp dir (workers outliving their raylet)."""
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["cmdline"]) if p.pid != me and marker in " ".join(p.info["cmdline"] or [])]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=15)


def wait_for(pred, timeout_s: float, what: str, every_s: float = 0.2):
    end = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout_s:g}s")
        time.sleep(every_s)
