"""Agreement and service metrics without Ray or HTTP: values, rolling window, exposition, monitor maths."""

import math
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, write_to_textfile

from verinet.graph.agreement import fleiss
from verinet.schema import Chain, Step, StepPosterior, Verdict, VerificationReport
from verinet.serve.metrics import AgreementMetrics, ServiceMetrics, disagreements, majority_share
from verinet.serve.monitor import parse, quantile, render, summarize

from .conftest import REQUIRED_METRICS, promtool_check


def report(cid: str, votes: dict[str, list[float]], posteriors: list[float]) -> VerificationReport:
    n = len(posteriors)
    chain = Chain(id=cid, problem_id=cid, text="\n".join("s" for _ in range(n)),
                  steps=[Step(index=i, text="s") for i in range(n)])
    verdicts = [Verdict(verifier=v, chain_id=cid, step_index=i, p_valid=p) for v, ps in votes.items()
                for i, p in enumerate(ps)]
    post = [StepPosterior(chain_id=cid, step_index=i, p_valid=p, p_supported=p, n_verdicts=len(votes))
            for i, p in enumerate(posteriors)]
    return VerificationReport(problem_id=cid, chains=[chain], verdicts=verdicts, posteriors=post)


def sample(registry, name, **labels):
    return registry.get_sample_value(name, labels or None)


def test_item_helpers():
    assert majority_share({"a": 1, "b": 1, "c": 0}) == pytest.approx(2 / 3)
    assert majority_share({"a": 1, "b": 0}) == 0.5
    assert disagreements({"a": 1, "b": 1, "c": 0}) == {"c": True}  # a and b face a tie among the others
    assert disagreements({"a": 1, "b": 1, "c": 1}) == {"a": False, "b": False, "c": False}
    assert disagreements({"a": 1}) == {}


def test_agreement_metrics_values():
    reg = CollectorRegistry()
    m = AgreementMetrics(reg, members=["a", "b", "c", "d"], window=100)
    assert math.isnan(sample(reg, "verinet_fleiss_kappa"))
    assert math.isnan(sample(reg, "verinet_verifier_disagreement_ratio", member="d"))
    # item 0: c dissents; item 1: a dissents; item 2: all agree; the answer line rated by one verifier only
    r = report("c1", {"a": [0.9, 0.2, 0.8], "b": [0.8, 0.7, 0.9], "c": [0.1, 0.9, 0.7]}, [0.6, 0.6, 0.8])
    r.verdicts.append(Verdict(verifier="a", chain_id="c1", step_index=2, p_valid=0.7))  # repeats are averaged
    m.observe(r, threshold=0.7)
    assert sample(reg, "verinet_steps_verified_total") == 3
    assert sample(reg, "verinet_verdicts_total", outcome="valid") == 1
    assert sample(reg, "verinet_verdicts_total", outcome="invalid") == 2
    assert sample(reg, "verinet_step_agreement_ratio_count") == 3
    assert sample(reg, "verinet_step_agreement_ratio_sum") == pytest.approx(2 / 3 + 2 / 3 + 1)
    assert sample(reg, "verinet_step_agreement_ratio_bucket", le="0.6666666666666666") == 2
    assert sample(reg, "verinet_verifier_disagreement_ratio", member="a") == pytest.approx(1 / 2)
    assert sample(reg, "verinet_verifier_disagreement_ratio", member="b") == 0.0
    assert sample(reg, "verinet_verifier_disagreement_ratio", member="c") == pytest.approx(1 / 2)
    want, _, _ = fleiss({0: {"a": 1, "b": 1, "c": 0}, 1: {"a": 0, "b": 1, "c": 1},
                         2: {"a": 1, "b": 1, "c": 1}})
    assert sample(reg, "verinet_fleiss_kappa") == pytest.approx(want)


def test_rolling_window_forgets_old_items():
    reg = CollectorRegistry()
    m = AgreementMetrics(reg, window=10)
    m.observe(report("old", {"a": [0.9] * 10, "b": [0.1] * 10}, [0.5] * 10))  # b always disagrees
    assert sample(reg, "verinet_verifier_disagreement_ratio", member="b") == 1.0
    m.observe(report("new", {"a": [0.9] * 10, "b": [0.9] * 10}, [0.9] * 10))
    assert sample(reg, "verinet_verifier_disagreement_ratio", member="b") == 0.0
    assert math.isnan(sample(reg, "verinet_fleiss_kappa"))  # all agree, one category: undefined
    assert sample(reg, "verinet_steps_verified_total") == 20  # counters do not roll


def test_agreement_metrics_import_neither_ray_nor_fastapi():
    code = ("import sys; import verinet.serve.metrics; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'fastapi', 'starlette')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.promtool
def test_textfile_for_the_comparison_job_passes_promtool(tmp_path):
    reg = CollectorRegistry()
    m = AgreementMetrics(reg, members=["a", "b", "c"])
    m.observe(report("c1", {"a": [0.9, 0.2], "b": [0.8, 0.7], "c": [0.1, 0.9]}, [0.6, 0.6]))
    path = tmp_path / "verinet.prom"
    write_to_textfile(str(path), reg)
    text = path.read_text()
    for name in ("verinet_steps_verified_total", "verinet_fleiss_kappa",
                 "verinet_verifier_disagreement_ratio"):
        assert name in text
    promtool_check(text)


@pytest.mark.promtool
def test_service_metrics_exposition_names_and_lint():
    s = ServiceMetrics(members=["a", "b"])
    s.requests.labels(route="/v1/verify", status="200").inc()
    s.request_duration.labels(route="/v1/verify").observe(0.02)
    s.member_duration.labels(member="a").observe(0.01)
    s.quorum_misses.inc()
    s.agreement.observe(report("c1", {"a": [0.9, 0.2], "b": [0.8, 0.7]}, [0.6, 0.6]))
    text = s.exposition().decode()
    for name in REQUIRED_METRICS:
        assert f"\n{name}" in text or f"# TYPE {name}" in text, name
    promtool_check(text)


def test_quantile_interpolates_like_prometheus():
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (math.inf, 40.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.15)
    assert quantile(0.25, buckets) == pytest.approx(0.1)  # rank 10: the top of the first bucket
    assert quantile(0.3, buckets) == pytest.approx(0.1 + 0.1 * 2 / 20)
    assert quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * (39.6 - 30) / 10)
    assert quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None


def test_monitor_summary_from_two_scrapes():
    s = ServiceMetrics(members=["a", "b"])
    first = parse(s.exposition().decode(), t=0.0)
    for _ in range(10):
        s.requests.labels(route="/v1/verify", status="200").inc()
        s.request_duration.labels(route="/v1/verify").observe(0.03)
        s.member_duration.labels(member="a").observe(0.01)
    s.requests.labels(route="/v1/verify", status="422").inc()
    s.member_failures.labels(member="b", reason="timeout").inc()
    s.agreement.observe(report("c1", {"a": [0.9, 0.2], "b": [0.8, 0.7]}, [0.6, 0.6]))
    second = parse(s.exposition().decode(), t=2.0)
    out = summarize(second, first)
    assert out["requests"] == 11 and out["ok"] == 10 and out["requests_per_s"] == pytest.approx(5.5)
    assert out["by_status"] == {"200": 10.0, "422": 1.0}
    assert 0.025 <= out["p50_s"] <= 0.05 and out["steps"] == 2 and out["steps_per_s"] == 1.0
    assert out["members"]["a"]["calls"] == 10 and out["members"]["b"]["failures"] == 1
    assert out["step_agreement"] == pytest.approx(0.75)
    render(out, "http://x")  # renders without error


def test_item_votes_cut_each_verifier_where_its_table_says():
    from verinet.schema import Verdict
    from verinet.serve.metrics import item_votes

    vs = [Verdict(verifier="lik", chain_id="c", step_index=0, p_valid=0.1),
          Verdict(verifier="tok", chain_id="c", step_index=0, p_valid=0.9)]
    assert item_votes(vs) == {("c", 0): {"lik": 0, "tok": 1}}  # no table: 0.5 for all
    assert item_votes(vs, {"lik": 0.01}) == {("c", 0): {"lik": 1, "tok": 1}}
