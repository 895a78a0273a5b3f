"""Prometheus metrics of verification: agreement (for the endpoint and the comparison job) and service.

No Ray, no FastAPI: the comparison job reuses :class:`AgreementMetrics` with its own registry
and writes a textfile for node_exporter's textfile collector::

    >>> from prometheus_client import CollectorRegistry, write_to_textfile
    >>> registry = CollectorRegistry()
    >>> agreement = AgreementMetrics(registry, members=["a", "b", "c"])
    >>> for report in batch.reports:                       # verinet.schema.VerificationReport
    ...     agreement.observe(report, threshold=0.5)       # its verdicts are report.verdicts
    >>> write_to_textfile("runs/x/verinet.prom", registry)

Names (base units; counters end in ``_total``):

* ``verinet_steps_verified_total`` -- items verified (steps and answer lines);
* ``verinet_verdicts_total{outcome}`` -- one per item: its posterior P(valid) against the
  threshold, ``valid`` or ``invalid``;
* ``verinet_step_agreement_ratio`` -- histogram, per item rated by >= 2 verifiers: the share of
  its verifiers whose binary verdict (P(valid) >= 0.5) equals the majority's (0.5 .. 1.0);
* ``verinet_fleiss_kappa`` -- Fleiss' kappa over the most recent ``window`` items (computed at
  scrape time, as :func:`verinet.graph.agreement.fleiss` does: on the items with the most common
  number of raters); NaN while undefined;
* ``verinet_verifier_disagreement_ratio{member}`` -- over each member's most recent ``window``
  verdicts, the share that differ from the majority of the *other* verifiers on the item (ties
  among the others are skipped); NaN while there is none.

:class:`ServiceMetrics` adds the endpoint's own: ``verinet_requests_total{route,status}``,
``verinet_request_duration_seconds{route}``, ``verinet_member_duration_seconds{member}``,
``verinet_member_failures_total{member,reason}``, ``verinet_member_restarts_total{member}``,
``verinet_quorum_misses_total``, ``verinet_queue_depth`` and ``verinet_members_ready``.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from verinet.graph.agreement import binarize, fleiss
from verinet.schema import Verdict, VerificationReport

AGREEMENT_BUCKETS = (0.5, 0.6, 2 / 3, 0.7, 0.75, 0.8, 0.9, 1.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
FAILURE_REASONS = ("timeout", "died", "error", "skipped")

Item = dict[str, int]  # verifier -> binary verdict (1 = valid)


def item_votes(verdicts: Iterable[Verdict],
               cutoffs: Mapping[str, float] | None = None) -> dict[tuple[str, int], Item]:
    """(chain id, step index) -> {verifier: 0/1}; a verifier's repeated verdicts are averaged first, then
    cut at its ``cutoffs`` entry (a reliability table's fitted cutoff, as the agreement statistics) or 0.5."""
    sums: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for v in verdicts:
        sums[(v.chain_id, v.step_index)][v.verifier].append(v.p_valid)
    return binarize({k: {name: sum(ps) / len(ps) for name, ps in per.items()} for k, per in sums.items()},
                    cutoffs=cutoffs)


def majority_share(item: Item) -> float:
    """Share of the item's verifiers agreeing with the majority verdict (0.5 on an even split)."""
    ones = sum(item.values())
    return max(ones, len(item) - ones) / len(item)


def disagreements(item: Item) -> dict[str, bool]:
    """verifier -> its verdict differs from the majority of the others (verifiers facing a tie left out)."""
    out = {}
    total = sum(item.values())
    k_others = len(item) - 1
    for v, x in item.items():
        ones = total - x
        if k_others == 0 or 2 * ones == k_others:
            continue
        out[v] = x != int(2 * ones > k_others)
    return out


class AgreementMetrics:
    """Agreement among verifiers as Prometheus metrics, in ``registry``; thread-safe."""

    def __init__(self, registry: CollectorRegistry, *, window: int = 500, threshold: float = 0.5,
                 members: Sequence[str] = ()) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.window, self.threshold = window, threshold
        self._lock = threading.Lock()
        self._items: deque[Item] = deque(maxlen=window)
        self._disagree: dict[str, deque[bool]] = {}
        self.steps = Counter("verinet_steps_verified", "Items verified (steps and answer lines).",
                             registry=registry)
        self.verdicts = Counter("verinet_verdicts", "Aggregated verdicts per item: posterior P(valid) "
                                "against the threshold.", ["outcome"], registry=registry)
        for outcome in ("valid", "invalid"):
            self.verdicts.labels(outcome=outcome)
        self.step_agreement = Histogram(
            "verinet_step_agreement_ratio", "Per item rated by 2 or more verifiers: share of verifiers "
            "agreeing with the majority verdict.", buckets=AGREEMENT_BUCKETS, registry=registry)
        self.kappa = Gauge("verinet_fleiss_kappa", "Fleiss' kappa over the most recent verified items "
                           "(NaN while undefined).", registry=registry)
        self.kappa.set_function(self.rolling_kappa)
        self.disagreement = Gauge("verinet_verifier_disagreement_ratio", "Share of a verifier's recent "
                                  "verdicts that differ from the majority of the other verifiers.",
                                  ["member"], registry=registry)
        for m in members:
            self._member(m)

    def _member(self, name: str) -> deque[bool]:
        if name not in self._disagree:
            q: deque[bool] = deque(maxlen=self.window)
            self._disagree[name] = q
            self.disagreement.labels(member=name).set_function(lambda q=q: self._ratio(q))
        return self._disagree[name]

    def _ratio(self, q: deque[bool]) -> float:
        with self._lock:
            return sum(q) / len(q) if q else math.nan

    def rolling_kappa(self) -> float:
        """Fleiss' kappa over the window (NaN while undefined)."""
        with self._lock:
            votes = {i: dict(per) for i, per in enumerate(self._items)}
        kappa, _, _ = fleiss(votes) if votes else (None, 0, 0)
        return math.nan if kappa is None else kappa

    def disagreement_ratio(self, member: str) -> float:
        q = self._disagree.get(member)
        return math.nan if q is None else self._ratio(q)

    def observe(self, report: VerificationReport, verdicts: Sequence[Verdict] | None = None, *,
                threshold: float | None = None, cutoffs: Mapping[str, float] | None = None) -> None:
        """Count one report: its posteriors (outcomes) and its verifiers' verdicts (agreement).

        ``verdicts`` defaults to ``report.verdicts``; ``threshold`` to the one given at construction.
        """
        thr = self.threshold if threshold is None else threshold
        posteriors = report.posteriors
        self.steps.inc(len(posteriors))
        valid = sum(p.p_valid >= thr for p in posteriors)
        if valid:
            self.verdicts.labels(outcome="valid").inc(valid)
        if len(posteriors) - valid:
            self.verdicts.labels(outcome="invalid").inc(len(posteriors) - valid)
        votes = item_votes(report.verdicts if verdicts is None else verdicts, cutoffs)
        items = [it for it in votes.values() if len(it) >= 2]
        for it in items:
            self.step_agreement.observe(majority_share(it))
        with self._lock:
            for it in items:
                self._items.append(it)
        for it in items:
            for v, d in disagreements(it).items():
                q = self._member(v)
                with self._lock:
                    q.append(d)


class ServiceMetrics:
    """Everything the endpoint exports, in one registry (its own unless one is given)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, members: Sequence[str] = (),
                 window: int = 500, threshold: float = 0.5) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.agreement = AgreementMetrics(r, window=window, threshold=threshold, members=members)
        self.requests = Counter("verinet_requests", "HTTP requests by route and status code.",
                                ["route", "status"], registry=r)
        self.request_duration = Histogram("verinet_request_duration_seconds", "End-to-end request latency "
                                          "in the ingress.", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.member_duration = Histogram("verinet_member_duration_seconds", "Latency of one member's "
                                         "verification call, as the ingress sees it (answered calls).",
                                         ["member"], buckets=LATENCY_BUCKETS, registry=r)
        self.member_failures = Counter("verinet_member_failures", "Member calls that gave no verdicts, by "
                                       "reason: timeout, died, error, skipped (known down), deadline (the "
                                       "request's own timeout_s ran out first).",
                                       ["member", "reason"], registry=r)
        self.member_restarts = Counter("verinet_member_restarts", "Member replicas seen to die (the Serve "
                                       "controller replaces them).", ["member"], registry=r)
        self.quorum_misses = Counter("verinet_quorum_misses", "Requests answered by fewer members than the "
                                     "quorum (503).", registry=r)
        self.queue_depth = Gauge("verinet_queue_depth", "Verification requests in flight in the ingress.",
                                 registry=r)
        self.members_ready = Gauge("verinet_members_ready", "Members ready: answered the latest health check "
                                   "and not found dead by a call since.", registry=r)
        self.reliability_source = Gauge("verinet_reliability_source", "Where the Dawid-Skene reliabilities of "
                                        "the latest such request came from (1 for that source): table (learned "
                                        "on labelled data), rolling (recent traffic), logodds (not enough "
                                        "traffic yet: log-odds ran instead).", ["source"], registry=r)
        self.reliability_window = Gauge("verinet_reliability_window_items", "Recent verified items in the "
                                        "rolling reliability window.", registry=r)
        for source in ("table", "rolling", "logodds"):
            self.reliability_source.labels(source=source).set(0)
        for m in members:
            self.member_duration.labels(member=m)
            self.member_restarts.labels(member=m)

    def used_reliabilities(self, source: str) -> None:
        """Mark ``source`` (table, rolling or logodds) as the one behind the latest Dawid-Skene request."""
        for s in ("table", "rolling", "logodds"):
            self.reliability_source.labels(source=s).set(float(s == source))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["AGREEMENT_BUCKETS", "AgreementMetrics", "FAILURE_REASONS", "LATENCY_BUCKETS", "ServiceMetrics",
           "disagreements", "item_votes", "majority_share"]


def reports_from_records(records: Iterable[dict]) -> list[VerificationReport]:
    """The comparison job's per-problem records (``results.jsonl``) as reports carrying the
    ensemble's verdicts and posteriors: what :meth:`AgreementMetrics.observe` reads."""
    from verinet.schema import StepPosterior

    out = []
    for r in records:
        ens = r["ensemble"]
        verdicts = [Verdict(verifier=v, chain_id=c, step_index=i, p_valid=p)
                    for c, per in ens["verdicts"].items() for v, ps in per.items() for i, p in enumerate(ps)]
        posteriors = [StepPosterior(chain_id=c, step_index=i, p_valid=pv, p_supported=ps,
                                    n_verdicts=len(ens["verdicts"].get(c, {})))
                      for c, rows in ens.get("posteriors", {}).items() for i, (pv, ps) in enumerate(rows)]
        out.append(VerificationReport(problem_id=r["problem_id"], chains=[], verdicts=verdicts,
                                      posteriors=posteriors))
    return out


def write_job_metrics(records: Iterable[dict], path: str, *, members: Sequence[str] = (),
                      threshold: float = 0.5) -> str:
    """The comparison job's agreement metrics as a Prometheus textfile (node_exporter's textfile
    collector, or a push to a Pushgateway); the window covers the whole job."""
    from prometheus_client import write_to_textfile

    reports = reports_from_records(records)
    registry = CollectorRegistry()
    window = max(1, sum(len({(v.chain_id, v.step_index) for v in r.verdicts}) for r in reports))
    metrics = AgreementMetrics(registry, window=window, threshold=threshold, members=members)
    for rep in reports:
        metrics.observe(rep)
    write_to_textfile(path, registry)
    return path
