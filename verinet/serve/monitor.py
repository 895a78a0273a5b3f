"""``verinet monitor``: a live terminal view of the endpoint, read from its ``/metrics``.

    >>> snap = scrape("http://127.0.0.1:8000")             # one parse of the exposition
    >>> summary = summarize(snap, previous)                  # rates and latencies since ``previous``
    >>> console.print(render(summary))

Throughput and latency are over the last interval when there is a previous scrape, else since
the server started. Latencies are Prometheus-style quantiles of the histograms (linear within a
bucket). Agreement is the rolling Fleiss' kappa and the mean per-step agreement ratio; per
member: its latency, its rolling disagreement with the consensus, failures and restarts.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table

VERIFY = "/v1/verify"


class MonitorError(RuntimeError):
    """The metrics could not be read; the message says why."""


@dataclass
class Snapshot:
    t: float
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=lambda: defaultdict(list))

    def get(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lb, v) for lb, v in self.samples.get(name, [])
                if all(lb.get(k) == x for k, x in labels.items())]

    def value(self, name: str, default: float = math.nan, **labels: str) -> float:
        vals = [v for _, v in self.get(name, **labels)]
        return sum(vals) if vals else default

    def label_values(self, name: str, label: str) -> list[str]:
        return sorted({lb[label] for lb, _ in self.samples.get(name, []) if label in lb})


def parse(text: str, t: float | None = None) -> Snapshot:
    """A text exposition as a :class:`Snapshot` (sample name -> [(labels, value)])."""
    snap = Snapshot(time.monotonic() if t is None else t)
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                snap.samples[s.name].append((dict(s.labels), float(s.value)))
    except ValueError as e:
        raise MonitorError(f"not a Prometheus text exposition: {e}") from None
    return snap


def metrics_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/metrics") else f"{url}/metrics"


def _os_reason(e: BaseException) -> str:
    """The operating system's words under requests' and urllib3's wrappers ("Connection refused")."""
    todo, seen = [e], set()
    while todo:
        x = todo.pop(0)
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, OSError) and x.strerror:
            return x.strerror
        todo += [a for a in (*getattr(x, "args", ()), getattr(x, "reason", None), x.__cause__, x.__context__)
                 if isinstance(a, BaseException)]
    return "connection failed"


def scrape(url: str, token: str | None = None, timeout_s: float = 10.0) -> Snapshot:
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = metrics_url(url)
    try:
        r = requests.get(target, headers=headers, timeout=timeout_s)
    except requests.Timeout:
        raise MonitorError(f"{target} did not answer within {timeout_s:g}s") from None
    except requests.ConnectionError as e:
        raise MonitorError(f"cannot connect to {target}: {_os_reason(e)}; is the endpoint running "
                           "(`verinet serve`) and the URL right?") from None
    except requests.RequestException as e:
        raise MonitorError(f"cannot read {target}: {type(e).__name__}") from None
    if r.status_code == 401:
        raise MonitorError(f"{target}: 401 unauthorized; pass --token or set VERINET_API_TOKEN")
    if r.status_code != 200:
        raise MonitorError(f"{target}: HTTP {r.status_code}: {r.text[:200]}")
    return parse(r.text)


def _delta(cur: Snapshot, prev: Snapshot | None, name: str, **labels: str) -> float:
    now = cur.value(name, 0.0, **labels)
    return now - prev.value(name, 0.0, **labels) if prev is not None else now


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile``: ``buckets`` are (upper bound, cumulative count), +Inf last."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _hist(cur: Snapshot, prev: Snapshot | None, name: str, **labels: str) -> list[tuple[float, float]]:
    out = []
    for le in {lb["le"] for lb, _ in cur.get(f"{name}_bucket", **labels)}:
        out.append((float(le), _delta(cur, prev, f"{name}_bucket", le=le, **labels)))
    return out


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def summarize(cur: Snapshot, prev: Snapshot | None = None) -> dict[str, Any]:
    """The figures the view shows, as plain data (``--json`` prints this)."""
    span = cur.t - prev.t if prev is not None else None
    by_status: dict[str, float] = defaultdict(float)
    for lb, _ in cur.get("verinet_requests_total"):
        if lb.get("route", "").startswith("/v1/verify"):
            by_status[lb["status"]] += _delta(cur, prev, "verinet_requests_total", **lb)
    n = sum(by_status.values())
    ok = sum(v for s, v in by_status.items() if s.startswith("2"))
    steps = _delta(cur, prev, "verinet_steps_verified_total")
    valid = _delta(cur, prev, "verinet_verdicts_total", outcome="valid")
    lat = _hist(cur, prev, "verinet_request_duration_seconds", route=VERIFY)
    agree_n = _delta(cur, prev, "verinet_step_agreement_ratio_count")
    agree_sum = _delta(cur, prev, "verinet_step_agreement_ratio_sum")
    members = {}
    names = sorted(set(cur.label_values("verinet_member_duration_seconds_bucket", "member"))
                   | set(cur.label_values("verinet_verifier_disagreement_ratio", "member")))
    for m in names:
        mh = _hist(cur, prev, "verinet_member_duration_seconds", member=m)
        members[m] = {
            "calls": _delta(cur, prev, "verinet_member_duration_seconds_count", member=m),
            "p50_s": quantile(0.5, mh), "p99_s": quantile(0.99, mh),
            "disagreement": _num(cur.value("verinet_verifier_disagreement_ratio", member=m)),
            "failures": sum(_delta(cur, prev, "verinet_member_failures_total", **lb)
                            for lb, _ in cur.get("verinet_member_failures_total", member=m)),
            "restarts": cur.value("verinet_member_restarts_total", 0.0, member=m),
        }
    return {
        "window_s": span,
        "requests": n, "ok": ok, "by_status": dict(sorted(by_status.items())),
        "requests_per_s": n / span if span else None, "steps_per_s": steps / span if span else None,
        "steps": steps, "valid_share": valid / steps if steps else None,
        "p50_s": quantile(0.5, lat), "p99_s": quantile(0.99, lat),
        "fleiss_kappa": _num(cur.value("verinet_fleiss_kappa")),
        "step_agreement": agree_sum / agree_n if agree_n else None,
        "queue_depth": _num(cur.value("verinet_queue_depth")),
        "members_ready": _num(cur.value("verinet_members_ready")),
        "quorum_misses": cur.value("verinet_quorum_misses_total", 0.0),
        "members": members,
    }


def _f(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.1f} ms"


def render(s: dict[str, Any], url: str = "") -> Group:
    where = "since start" if s["window_s"] is None else f"last {s['window_s']:.1f} s"
    top = Table(title=f"verinet {url}  ({where})", show_header=True, header_style="bold")
    cols = ("requests", "ok", "req/s", "steps/s", "p50", "p99", "queue", "members ready", "quorum misses")
    for col in cols:
        top.add_column(col, justify="right")
    top.add_row(f"{s['requests']:.0f}", f"{s['ok']:.0f}", _f(s["requests_per_s"], "{:.2f}"),
                _f(s["steps_per_s"], "{:.1f}"), _ms(s["p50_s"]), _ms(s["p99_s"]),
                _f(s["queue_depth"], "{:.0f}"), _f(s["members_ready"], "{:.0f}"), f"{s['quorum_misses']:.0f}")
    agree = Table(title="agreement", header_style="bold")
    for col in ("Fleiss kappa (rolling)", "step agreement", "valid share", "statuses"):
        agree.add_column(col, justify="right")
    agree.add_row(_f(s["fleiss_kappa"]), _f(s["step_agreement"]), _f(s["valid_share"]),
                  " ".join(f"{k}:{v:.0f}" for k, v in s["by_status"].items()) or "-")
    mem = Table(title="members", header_style="bold")
    for col in ("member", "calls", "p50", "p99", "disagreement", "failures", "restarts"):
        mem.add_column(col, justify="left" if col == "member" else "right")
    for name, m in s["members"].items():
        mem.add_row(name, f"{m['calls']:.0f}", _ms(m["p50_s"]), _ms(m["p99_s"]), _f(m["disagreement"]),
                    f"{m['failures']:.0f}", f"{m['restarts']:.0f}")
    return Group(top, agree, mem)


def run(url: str, *, token: str | None = None, interval_s: float = 2.0, iterations: int | None = None,
        once: bool = False, as_json: bool = False, console: Any = None) -> dict[str, Any]:
    """Scrape every ``interval_s`` (``iterations`` times, or until Ctrl-C); return the last summary."""
    import json

    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    prev = scrape(url, token)
    summary = summarize(prev)
    if once:
        console.print_json(json.dumps(summary)) if as_json else console.print(render(summary, url))
        return summary
    done = 0
    with Live(render(summary, url), console=console, refresh_per_second=4, transient=as_json) as live:
        try:
            while iterations is None or done < iterations:
                time.sleep(interval_s)
                cur = scrape(url, token)
                summary = summarize(cur, prev)
                prev = cur
                done += 1
                live.update(render(summary, url))
        except KeyboardInterrupt:
            pass
    if as_json:
        console.print_json(json.dumps(summary))
    return summary


__all__ = ["MonitorError", "Snapshot", "metrics_url", "parse", "quantile", "render", "run", "scrape",
           "summarize"]
