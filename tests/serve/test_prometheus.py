"""Monitoring with the real thing: Debian's Prometheus scrapes a live endpoint and evaluates verinet's rules.

Marked ``promtool``: CI's promtool step installs Debian's ``prometheus`` package, server and promtool. Everything runs
on 127.0.0.1: the endpoint (three zoo members in this process) and a Prometheus started from the
project's own scrape config and alert rules (deploy/prometheus/), with the cluster's service discovery
replaced by the endpoint's address and 1-second intervals. After a bounded load the test reads the
Prometheus HTTP API: the kappa gauge and the per-member disagreement equal what the endpoint exports,
the request counter and rate match the requests sent, and every alert rule is loaded, healthy, evaluated,
and in the state its expression gives for these values.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from verinet.serve.engine import VerifyEngine
from verinet.serve.local import serve_local
from verinet.serve.members import LocalMember
from verinet.serve.monitor import parse

from .conftest import arith_requests, body, free_port, serve_config

pytestmark = pytest.mark.promtool

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
N_REQUESTS = 24


def prometheus_config(target: str, rules: Path) -> dict:
    """The project's scrape config, pointed at ``target`` instead of the cluster's DNS, scraped every second."""
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(rules)]
    cfg.pop("alerting", None)  # no Alertmanager here; the rules are read back from the API
    [job] = [j for j in cfg["scrape_configs"] if j["job_name"] == "verinet-endpoint"]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    cfg["scrape_configs"] = [job]  # Ray's job needs a Ray cluster's pods
    return cfg


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict]:
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def scalar(self, expr: str) -> float:
        res = self.query(expr)
        assert len(res) == 1, (expr, res)
        return float(res[0]["value"][1])

    def wait(self, what: str, check, timeout_s: float = 60.0):
        end = time.monotonic() + timeout_s
        while True:
            try:
                got = check()
                if got:
                    return got
            except (AssertionError, requests.RequestException, KeyError, IndexError, ValueError):
                if time.monotonic() > end:
                    raise
            if time.monotonic() > end:
                raise AssertionError(f"Prometheus: {what} not seen within {timeout_s:.0f}s")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def endpoint():
    cfg = serve_config(agreement_window=50)
    members = {m.name: LocalMember(m) for m in cfg.ensemble.members}
    engine = VerifyEngine(cfg, members, cfg.ensemble.members, quorum=cfg.ensemble.quorum)
    with serve_local(cfg, None, engine=engine, port=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def prometheus(endpoint, tmp_path_factory):
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("the Prometheus server is not installed: `apt-get install -y --no-install-recommends "
                    "prometheus` (Debian's package; .ci/run installs it)")
    d = tmp_path_factory.mktemp("prometheus")
    shutil.copy(PROM / "alerts.yml", d / "alerts.yml")
    target = endpoint.url.removeprefix("http://")
    (d / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(target, d / "alerts.yml")))
    check = subprocess.run([shutil.which("promtool") or "promtool", "check", "config", str(d / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = (d / "prometheus.log").open("w")
    proc = subprocess.Popen([exe, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        prom.wait("readiness", lambda: requests.get(prom.url + "/-/ready", timeout=2).status_code == 200)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


COUNT = 'sum(verinet_requests_total{route="/v1/verify",status="200"})'


@pytest.fixture(scope="module")
def loaded(endpoint, prometheus):
    """One request that Prometheus sees first (a counter's first sample carries no increase), then
    N_REQUESTS verify calls at about 4 per second (gold and injected arith chains); returns what the
    endpoint itself exports afterwards and the seconds the load took."""
    reqs = [body(r) | {"include_graph": False} for r in arith_requests(7, seed=50)][:N_REQUESTS + 1]
    assert len(reqs) == N_REQUESTS + 1
    assert requests.post(endpoint.url + "/v1/verify", json=reqs[0], timeout=60).status_code == 200
    prometheus.wait("the first request", lambda: prometheus.scalar(COUNT) == 1)
    t0 = time.monotonic()
    for i, r in enumerate(reqs[1:]):
        time.sleep(max(0.0, t0 + i * 0.25 - time.monotonic()))
        assert requests.post(endpoint.url + "/v1/verify", json=r, timeout=60).status_code == 200
    spent = time.monotonic() - t0
    snap = parse(requests.get(endpoint.url + "/metrics", timeout=10).text)
    return snap, spent


def test_prometheus_scrapes_the_endpoint(prometheus, endpoint):
    up = prometheus.wait("the endpoint target up", lambda: prometheus.scalar('up{job="verinet-endpoint"}') == 1)
    assert up
    targets = requests.get(prometheus.url + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    [t] = targets
    assert t["health"] == "up" and t["scrapeUrl"] == endpoint.url + "/metrics"


def test_kappa_and_per_member_disagreement_come_back_as_exported(prometheus, loaded):
    snap, _ = loaded
    kappa = snap.value("verinet_fleiss_kappa")
    members = snap.label_values("verinet_verifier_disagreement_ratio", "member")
    assert len(members) == 3
    expected = {m: snap.value("verinet_verifier_disagreement_ratio", member=m) for m in members}

    def same_kappa():
        got = prometheus.scalar("verinet_fleiss_kappa")
        return (math.isnan(got) and math.isnan(kappa)) or got == pytest.approx(kappa, abs=1e-9)

    prometheus.wait(f"verinet_fleiss_kappa == {kappa}", same_kappa)
    assert not math.isnan(kappa) and -1.0 <= kappa <= 1.0  # defined after this many mixed verdicts

    def same_disagreement():
        got = {r["metric"]["member"]: float(r["value"][1])
               for r in prometheus.query("verinet_verifier_disagreement_ratio")}
        return got == pytest.approx(expected, abs=1e-9)

    prometheus.wait("per-member disagreement", same_disagreement)


def test_request_count_and_rate(prometheus, loaded):
    _, spent = loaded
    prometheus.wait(f"{N_REQUESTS + 1} requests counted", lambda: prometheus.scalar(COUNT) == N_REQUESTS + 1)
    # Over a window that holds the whole load, increase() is the requests sent (Prometheus extrapolates
    # to the window's edges a little) and rate() is that over the window's seconds.
    window = 120
    sel = f'verinet_requests_total{{route="/v1/verify",status="200"}}[{window}s]'
    increase = prometheus.scalar(f"sum(increase({sel}))")
    assert N_REQUESTS * 0.9 <= increase <= N_REQUESTS * 1.35, (increase, spent)
    rate = prometheus.scalar(f"sum(rate({sel}))")
    assert rate == pytest.approx(increase / window, rel=0.05), (rate, increase)
    # Spread over the seconds the load took, that increase is the pace it was sent at (about 4 per second).
    sent_rate = N_REQUESTS / spent
    assert 0 < rate * window / spent <= sent_rate * 1.35, (rate, sent_rate)


def test_alert_rules_load_evaluate_and_match_the_values(prometheus, loaded):
    snap, _ = loaded
    declared = [r["alert"] for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]]

    def evaluated():
        groups = requests.get(prometheus.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        assert set(rules) == set(declared), (sorted(rules), declared)
        assert all(r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for r in rules.values())
        return rules

    rules = prometheus.wait("every alert rule evaluated", evaluated)
    assert all(r["type"] == "alerting" for r in rules.values())
    # VerinetAgreementLow: min(kappa) < 0.4, for 10m -> pending now when kappa is low, else inactive.
    kappa = snap.value("verinet_fleiss_kappa")
    low = rules["VerinetAgreementLow"]
    assert low["state"] == ("pending" if kappa < 0.4 else "inactive"), (kappa, low)
    # Every member answered its health checks: nobody is down, so these stay quiet.
    for name in ("VerinetNoMembersReady", "VerinetQuorumMisses", "VerinetMemberRestarting"):
        assert rules[name]["state"] == "inactive", rules[name]
    # The disagreement alert follows the exported per-member values.
    worst = max(snap.value("verinet_verifier_disagreement_ratio", member=m)
                for m in snap.label_values("verinet_verifier_disagreement_ratio", "member"))
    assert rules["VerinetVerifierDisagreementHigh"]["state"] == ("pending" if worst > 0.5 else "inactive")
