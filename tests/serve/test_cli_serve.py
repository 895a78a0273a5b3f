"""`verinet serve --config` end to end (slow): a subprocess serves on loopback until SIGINT or SIGTERM,
then stops every process it started."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from .conftest import arith_requests, body, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


def _signal_masks(pid: int) -> str:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as e:
        return str(e)
    return " ".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


# SIGINT hung here in two CI runs of 2026-11-29 (serve.log ended at "press Ctrl-C to stop"); `verinet serve`
# now sets and unblocks its SIGINT handler itself, and a hang reports the process's signal masks.
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_verinet_serve_answers_then_stops_every_process(tmp_path, stop):
    port = free_port()
    cfg = yaml.safe_load((ROOT / "configs" / "serve-local.yaml").read_text())
    cfg.update(ensemble=str(ROOT / "configs" / "ensemble-local.yaml"), port=port, health_interval_s=1.0)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "VERINET_API_TOKEN": "cli-test-token-0123456789",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "verinet.cli", "serve", "--config", str(path)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer cli-test-token-0123456789"}
    try:
        deadline, last = time.monotonic() + 300, "no answer"
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:  # ours only: another process on the port answered 200 here once (see verinet/serve/ports.py)
                r = requests.get(url + "/readyz", timeout=5)
                last = f"last /readyz answer: {r.status_code} {r.text[:200]!r}"
                if r.status_code == 200 and isinstance(j := r.json(), dict) and j.get("status") == "ready":
                    break
            except (requests.RequestException, ValueError):
                pass
            assert time.monotonic() < deadline, last + "\n" + (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(1.0)
        req = body(arith_requests(1, seed=41, inject=False)[0])
        assert requests.post(url + "/v1/verify", json=req, timeout=60).status_code == 401  # env token is on
        r = requests.post(url + "/v1/verify", json=req, headers=auth, timeout=60)
        assert r.status_code == 200 and r.json()["missing"] == []
        end = time.monotonic() + 60  # printed when serve.run returns, maybe just after the proxy answers
        while "verinet serving at " + url not in (tmp_path / "serve.log").read_text():
            assert time.monotonic() < end, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        started = psutil.Process(proc.pid).children(recursive=True)  # raylet, GCS, agents, replicas, ...
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "raylet" in names and "dashboard" in names.lower(), names[:2000]
    finally:
        masks = _signal_masks(proc.pid)
        proc.send_signal(stop)
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"no exit 120 s after {stop.name}; its signal masks then: {masks}; log: "
                                 + (tmp_path / "serve.log").read_text()[-2000:]) from None
        log.close()
    assert rc == 0, (tmp_path / "serve.log").read_text()[-3000:]
    with pytest.raises(requests.RequestException):
        requests.get(url + "/healthz", timeout=5)
    end = time.monotonic() + 30
    while _alive(started) and time.monotonic() < end:
        time.sleep(0.5)
    assert not _alive(started), f"left running after {stop.name}: {_alive(started)}"
