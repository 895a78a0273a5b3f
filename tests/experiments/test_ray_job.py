"""`ray job submit` against a real `ray start --head` bound to 127.0.0.1: the job runs the comparison
as a Ray driver on that cluster (its models as actors there) and writes its report.

Only the processes this test started are stopped (never `ray stop`, which would stop every Ray
on the machine).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import yaml

from verinet.serve.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    """Distinct ports outside the kernel's bind(0) range, so no Ray process started first can take one."""
    ports: list[int] = []
    while len(ports) < n:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def _stop(marker: str) -> None:
    """Stop every process whose command line names ``marker`` (our temp dir), and their children."""
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    roots = [p for p in psutil.process_iter(["cmdline"])
             if p.pid not in me and marker in " ".join(p.info["cmdline"] or [])]
    procs = {c.pid: c for r in roots for c in [r, *r.children(recursive=True)] if c.pid not in me}
    for p in procs.values():
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


@pytest.fixture
def ray_head():
    temp = tempfile.mkdtemp(prefix="vrj")  # short: Ray's socket paths must fit in 107 bytes
    gcs, dash, client, agent, metrics, env_agent = _free_ports(6)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={env_agent}", "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        yield f"http://127.0.0.1:{dash}", env
    finally:
        _stop(temp)


def test_ray_job_submit_runs_the_comparison(ray_head, tmp_path):
    address, env = ray_head
    cfg = {"name": "job", "tasks": [{"family": "arith", "n": 4, "params": {"steps": 2}}], "threshold": 0.5,
           "faithfulness": {"n": 2, "n_boot": 200, "tests": ["early_answering", "filler"]},
           "sweep": {"sizes": {"xs": ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"], "l": ["zoo-l"]}, "ks": [1, 2], "n": 2}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    r = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
                        "verinet", "compare", "--config", str(path), "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in r.stdout + r.stderr
    assert (out / "report.md").exists() and (out / "report.html").exists()
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    # the models ran as actors of that cluster, each in its own process
    summary = json.loads((out / "summary.json").read_text())
    actors = summary["actors"]
    assert len(actors) == 4 and all(v["peak_rss_bytes"] > 0 for v in actors.values())
    assert len({v["pid"] for v in actors.values()}) == 4
