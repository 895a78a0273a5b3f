"""A command that started a local Ray stops all of it on SIGTERM as on Ctrl-C (slow: a real job)."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow

TINY = {"name": "sigterm", "tasks": [{"family": "arith", "n": 200, "params": {"steps": 2}}], "threshold": 0.5,
        "faithfulness": {"n": 0}, "sweep": {"n": 0}, "ray": {"num_cpus": 2}}


def _alive(procs):
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("stop", [signal.SIGTERM], ids=["SIGTERM"])  # SIGINT: tests/serve/test_cli_serve.py
def test_compare_on_local_ray_leaves_no_process_behind(tmp_path, stop):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "job.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "verinet.cli", "compare", "--config", str(cfg), "--out",
                             str(tmp_path / "out")], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "out" / "results.jsonl").exists():  # Ray and the model actors are up
            assert proc.poll() is None, (tmp_path / "job.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "job.log").read_text()[-3000:]
            time.sleep(0.5)
        started = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "raylet" in names and "dashboard" in names.lower(), names[:2000]
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    out = (tmp_path / "job.log").read_text()
    assert proc.returncode == 130 and "run the same command again to resume" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    end = time.monotonic() + 30
    while _alive(started) and time.monotonic() < end:
        time.sleep(0.5)
    assert not _alive(started), f"left running after {stop.name}: {_alive(started)}"
