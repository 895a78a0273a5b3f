"""The verification engine behind the endpoint: members verify a client's chain, the graph decides.

No Ray and no HTTP here. The engine talks to *member clients* (:mod:`verinet.serve.members`):
``LocalMember`` runs a backend in this process (tests, the benchmark's direct path);
``verinet.serve.app`` wraps Ray Serve deployment handles. So the same code
answers a request in a test, in a benchmark and behind Ray Serve.

A request's chain is authored by the client, so every member may verify it: the topology
picks which (``all_pairs``: all, ``ring``: one, ``k_random``: k). The members are called
concurrently, each with ``member_timeout_s``; a member that fails (died, timed out, raised)
is left out and named in ``missing``. Fewer answers than the quorum (the ensemble's, capped
at the number assigned) is a :class:`~verinet.orchestration.QuorumError`. Members the health loop (or a failed call)
found down are skipped while the others can still make the quorum.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verinet.backends.config import MemberSpec
from verinet.backends.formats import VerifyItem
from verinet.graph.agreement import fleiss
from verinet.graph.build import collect_ratings
from verinet.graph.agreement import cutoffs_of
from verinet.graph.pipeline import verify_batch
from verinet.graph.topology import assign_verifiers, max_k
from verinet.schema import Verdict
from verinet.serve.api import (
    Agreement, BatchRequest, MemberReport, ModelInfo, PairAgreement, ReliabilityInfo, StepResult, VerifyRequest,
    VerifyResponse,
)
from verinet.serve.chains import ClientChain, RequestError, checker_report, client_chain
from verinet.serve.config import ServeConfig, ServeConfigError
from verinet.orchestration.protocol import MemberFailure, QuorumError, check_quorum
from verinet.orchestration.verify import verdicts_from_scores
from verinet.serve.members import MemberAnswer, MemberClient, reserved_tokens
from verinet.serve.metrics import ServiceMetrics, item_votes
from verinet.serve.reliability import Choice, Reliabilities

AUTHOR = "client"
HEALTH_STRIKES = 2  # failed health checks in a row before a member that did not die counts as down
PROBE_EVERY_S = 0.5  # after failed calls, look up a member's replicas at most this often
DECIDE_MARGIN_S = 1.0  # of a request's time limit, kept for deciding once the members answered (at most 20%)
log = logging.getLogger(__name__)


# ---- the engine ------------------------------------------------------------------------------
class Overloaded(Exception):
    """More requests in flight than ``max_queue``."""


@dataclass
class _Job:
    req: VerifyRequest
    chain: ClientChain
    topology: str
    seed: int
    aggregation: str
    threshold: float
    verifiers: list[str]
    quorum: int


@dataclass
class _Call:
    answer: MemberAnswer | None = None
    error: str | None = None
    seconds: float | None = None
    offsets: dict[int, int] = field(default_factory=dict)  # job index -> position in the member's items
    deadline: bool = False  # no answer because the request's own time limit cut the wait short


class VerifyEngine:
    """Verifies client chains with the members; keeps their health, the admission count and the metrics.

    ``members``: name -> member client, one per spec; ``quorum``: members that must answer a chain
    (capped at the number assigned to it); ``metrics``: where to count (a fresh registry by default).
    """

    def __init__(self, config: ServeConfig, members: Mapping[str, MemberClient], specs: Sequence[MemberSpec],
                 quorum: int, metrics: ServiceMetrics | None = None) -> None:
        self.config = config
        self.members = dict(members)
        self.specs = {s.name: s for s in specs}
        self.names = [s.name for s in specs]
        if set(self.members) != set(self.names):
            raise ValueError(f"member clients {sorted(self.members)} do not match the specs {self.names}")
        self.quorum = quorum
        self.metrics = metrics or ServiceMetrics(members=self.names, window=config.agreement_window,
                                                 threshold=config.defaults.threshold)
        self.reserved = reserved_tokens(specs)
        self.in_flight = 0
        self.ready: dict[str, bool] = dict.fromkeys(self.names, True)  # until the first health check says
        self.described: dict[str, dict[str, Any]] = {}
        self._dead_replicas: set[str] = set()
        self._strikes: dict[str, int] = dict.fromkeys(self.names, 0)
        self._last_failure: dict[str, float] = {}  # member -> when a call or health check last failed
        self._probed: dict[str, float] = {}  # member -> when its replicas were last looked up
        # member -> {replica: (when it last answered, when it was found gone)}: gone replicas that no
        # failure explains yet (a call in flight when it died fails only at member_timeout_s)
        self._unexplained: dict[str, dict[str, tuple[float, float]]] = {}
        self.health_errors: dict[str, str] = {}  # member -> why its latest health check failed
        table = config.reliability_table()
        absent = sorted(set(self.names) - set(table.verifiers)) if table is not None else []
        if absent:
            raise ServeConfigError(f"reliabilities: the table has no row for members {absent} (it has "
                                   f"{sorted(table.verifiers)}); learn one with these members (`verinet compare`) "
                                   "or drop `reliabilities` to fit over recent traffic")
        self.reliabilities = Reliabilities(table, window=config.reliability_window,
                                           min_items=config.reliability_min_items,
                                           cutoff=config.defaults.threshold)
        fleiss({0: {"a": 1, "b": 0}, 1: {"a": 1, "b": 1}})  # imports statsmodels now, not in a request

    # ---- admission ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Count a request in flight; raise :class:`Overloaded` when ``max_queue`` are already."""
        if self.in_flight >= self.config.max_queue:
            raise Overloaded(f"{self.in_flight} requests in flight (max_queue {self.config.max_queue})")
        self.in_flight += 1
        self.metrics.queue_depth.set(self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            self.metrics.queue_depth.set(self.in_flight)

    # ---- verification ------------------------------------------------------------------------
    def request_limit(self, timeout_s: float | None) -> float:
        """Seconds a request may take: its own ``timeout_s``, capped by the server's."""
        return self.config.timeout_s if timeout_s is None else min(timeout_s, self.config.timeout_s)

    def member_wait(self, timeout_s: float | None) -> float:
        """How long a member is waited for within a request: ``member_timeout_s``, or less when the request's
        limit leaves less (a margin stays for deciding), so members that answered in time make a quorum
        instead of the whole request timing out on one that hangs."""
        limit = self.request_limit(timeout_s)
        return min(self.config.member_timeout_s, limit - min(DECIDE_MARGIN_S, 0.2 * limit))

    async def verify(self, req: VerifyRequest) -> VerifyResponse:
        return (await self.verify_many([req], wait_s=self.member_wait(req.timeout_s)))[0]

    async def verify_batch(self, batch: BatchRequest) -> list[VerifyResponse]:
        if len(batch.items) > self.config.limits.max_batch:
            limit = self.config.limits.max_batch
            raise RequestError(422, "too_many_items", f"items: {len(batch.items)} chains, at most {limit}",
                               field="items", limit=limit)
        ids = [r.id for r in batch.items if r.id is not None]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise RequestError(422, "duplicate_id", f"items: ids must be unique, repeated: {dup[:5]}",
                               field="items")
        return await self.verify_many(batch.items, batch=True, wait_s=self.member_wait(batch.limit_s()))

    async def verify_many(self, reqs: Sequence[VerifyRequest], batch: bool = False,
                          wait_s: float | None = None) -> list[VerifyResponse]:
        """``wait_s``: how long each member is waited for (default ``member_timeout_s``)."""
        t0 = time.perf_counter()
        wait_s = self.config.member_timeout_s if wait_s is None else wait_s
        jobs = [self._job(r, f"items.{i}." if batch else "") for i, r in enumerate(reqs)]
        calls: dict[str, list[tuple[int, VerifyItem]]] = {}
        for j, job in enumerate(jobs):
            for v in job.verifiers:
                calls.setdefault(v, []).append((j, (job.chain.question, job.chain.steps, job.chain.answer)))
        skip = self._skippable(jobs)
        t_parse = time.perf_counter()
        names = list(calls)
        outcomes = await asyncio.gather(*(self._call(n, calls[n], jobs, n in skip, wait_s) for n in names))
        results = dict(zip(names, outcomes))
        t_members = time.perf_counter()
        for j, job in enumerate(jobs):
            answered = [v for v in job.verifiers if results[v].answer is not None]
            try:
                check_quorum(answered, job.verifiers, job.quorum,
                             {v: results[v].error or "no answer" for v in job.verifiers})
            except QuorumError:
                if any(results[v].deadline for v in job.verifiers):  # the client's time ran out: 504, not 503
                    raise asyncio.TimeoutError from None
                self.metrics.quorum_misses.inc()
                raise
        responses = await asyncio.to_thread(self._decide, jobs, results)
        t_end = time.perf_counter()
        for r in responses:
            r.timings_s.update(parse_s=t_parse - t0, members_s=t_members - t_parse,
                               decide_s=t_end - t_members, total_s=t_end - t0)
        return responses

    @property
    def max_k(self) -> int:
        """The largest ``k`` a request may ask for: the client is not a member, so every member is eligible."""
        return max(1, max_k([AUTHOR], self.names))

    def _job(self, req: VerifyRequest, where: str) -> _Job:
        d = self.config.defaults
        topology = req.topology or d.topology
        aggregation = req.aggregation or d.aggregation
        threshold = d.threshold if req.threshold is None else req.threshold
        chain = client_chain(req, self.config.limits, reserved=self.reserved, where=where)
        if req.k is not None and req.k > self.max_k:  # checked for every topology, as the schema states
            raise RequestError(422, "bad_k", f"{where}k: {req.k} verifiers asked, at most {self.max_k} "
                               f"({len(self.names)} members)", field=f"{where}k", limit=self.max_k)
        seed = secrets.randbelow(2**53) if req.seed is None else req.seed
        try:
            verifiers = assign_verifiers([AUTHOR], self.names, topology, k=min(req.k or d.k, self.max_k),
                                         seed=seed)[AUTHOR]
        except ValueError as e:
            raise RequestError(422, "bad_topology", f"{where}topology: {e}",
                               field=f"{where}topology") from None
        return _Job(req, chain, topology, seed, aggregation, threshold, verifiers, min(self.quorum, len(verifiers)))

    def _skippable(self, jobs: list[_Job]) -> set[str]:
        """Members known down that every job they are assigned to can do without."""
        down = {n for n, ok in self.ready.items() if not ok}
        skip = set()
        for n in down:
            if all(len([v for v in job.verifiers if v not in down]) >= job.quorum
                   for job in jobs if n in job.verifiers):
                skip.add(n)
        return skip

    async def _call(self, name: str, work: list[tuple[int, VerifyItem]], jobs: list[_Job],
                    skip: bool, wait_s: float) -> _Call:
        out = _Call(offsets={j: i for i, (j, _) in enumerate(work)})
        if skip:
            self.metrics.member_failures.labels(member=name, reason="skipped").inc()
            out.error = f"skipped: down ({self.health_errors.get(name, 'its replica died')})"
            return out
        items = [item for _, item in work]
        t0 = time.perf_counter()
        try:
            ans = await asyncio.wait_for(self.members[name].verify(items), wait_s)
        except asyncio.TimeoutError:
            if wait_s < self.config.member_timeout_s:  # cut short by the request's limit: not the member's fault
                out.error, out.deadline = f"no answer within {wait_s:g}s (what the request's time limit left)", True
                self.metrics.member_failures.labels(member=name, reason="deadline").inc()
                return out
            out.error = f"no answer within member_timeout_s={self.config.member_timeout_s:g}s"
            self._failed(name, "timeout")
            await self._count_gone(name, every_s=PROBE_EVERY_S)  # a replica that died unseen?
            return out
        except MemberFailure as e:
            out.error = e.message
            self._failed(name, e.reason)
            if e.reason == "died":
                self.member_died(name, e.replica)
            else:
                await self._count_gone(name, every_s=PROBE_EVERY_S)
            return out
        except Exception as e:  # noqa: BLE001 - any other member error is that member's failure, not the request's
            log.warning("member %s failed: %s: %s", name, type(e).__name__, e)
            out.error = f"failed ({type(e).__name__}: {e})"
            self._failed(name, "error")
            await self._count_gone(name, every_s=PROBE_EVERY_S)
            return out
        finally:
            out.seconds = time.perf_counter() - t0
        want = [jobs[j].chain.n_items for j, _ in work]
        got = [len(row) for row in ans.p_valid]
        if got != want:  # never trust a misaligned answer: scores would land on the wrong steps
            out.error = f"returned {got} verdicts for items of {want} lines"
            self._failed(name, "error")
            return out
        self.metrics.member_duration.labels(member=name).observe(out.seconds)
        out.answer = ans
        return out

    def _decide(self, jobs: list[_Job], results: dict[str, _Call]) -> list[VerifyResponse]:
        return [self._decide_one(j, job, results) for j, job in enumerate(jobs)]

    def _decide_one(self, j: int, job: _Job, results: dict[str, _Call]) -> VerifyResponse:
        c = job.chain
        verdicts = []
        for v in job.verifiers:
            r = results[v]
            if r.answer is None:
                continue
            verdicts += verdicts_from_scores(v, c.chain.id, r.answer.p_valid[r.offsets[j]])
        family = c.family.name if c.family is not None else None
        choice = self.reliabilities.choose(job.aggregation)
        if choice.table is not None and not any(v.verifier in choice.table.verifiers for v in verdicts):
            # a rolling fit over a window that none of these verifiers answered in knows nothing of them
            choice = Choice("logodds", None, "logodds", choice.n_items)
        if choice.source != "none":
            self.metrics.used_reliabilities(choice.source)
        batch = verify_batch([(c.problem_id, [c.chain], verdicts)], aggregation=choice.aggregation,
                             threshold=job.threshold, family=family, include_graph=job.req.include_graph,
                             reliabilities=choice.table, missing_answer_is_error=False,
                             linear_fallback=c.family is None)  # a family reader's premises are the step's own
        self.reliabilities.observe(collect_ratings([c.chain], verdicts).means())
        self.metrics.reliability_window.set(len(self.reliabilities.window))
        rep = batch.reports[0]
        cutoffs = cutoffs_of(choice.table)
        self.metrics.agreement.observe(rep, threshold=job.threshold, cutoffs=cutoffs)
        post = {p.step_index: p for p in rep.posteriors}
        scores: dict[int, dict[str, float]] = {}
        for v in verdicts:
            scores.setdefault(v.step_index, {})[v.verifier] = v.p_valid
        steps = []
        for i in range(c.n_items):
            p = post[i]
            missing: list[str] = []
            if i < len(c.steps):
                premises, missing = c.chain.steps[i].premises, c.chain.steps[i].missing_premises
            else:  # the answer line depends on the last step, as in the graph
                premises = [len(c.steps) - 1] if c.steps else []
            steps.append(StepResult(index=i, kind="step" if i < len(c.steps) else "answer",
                                    text=c.item_text(i), p_valid=p.p_valid, p_supported=p.p_supported,
                                    verdict="valid" if p.p_valid >= job.threshold else "invalid",
                                    premises=premises, missing_premises=list(missing), scores=scores.get(i, {})))
        accepted = c.chain.id in rep.accepted
        members = []
        for v in job.verifiers:
            r = results[v]
            members.append(MemberReport(
                name=v, model=public_model_name(self.specs[v].model), answered=r.answer is not None, seconds=r.seconds,
                error=r.error,
                version=(r.answer.version if r.answer and r.answer.version else self._version(v)),
                replica=r.answer.replica if r.answer else None))
        return VerifyResponse(
            id=c.problem_id, steps=steps, earliest_error=rep.earliest_error[c.chain.id], answer=c.answer,
            supported_answer=c.answer if accepted else None, accepted=accepted,
            agreement=_agreement(rep.agreement, verdicts, cutoffs), topology=job.topology, seed=job.seed,
            aggregation=job.aggregation,
            reliability=ReliabilityInfo(source=choice.source, aggregation=choice.aggregation, n_items=choice.n_items),
            threshold=job.threshold, verifiers=list(job.verifiers),
            missing=[v for v in job.verifiers if results[v].answer is None], members=members,
            checker=checker_report(c), graph=rep.graph,
            timings_s={f"graph_{k}_s": v for k, v in rep.timings_s.items()})

    def _version(self, name: str) -> str:
        return str(self.described.get(name, {}).get("version", "unknown"))

    # ---- members' health -----------------------------------------------------------------------
    def _mark_down(self, name: str) -> None:
        """Not ready, in the gauge too: now, not at the next health check."""
        self.ready[name] = False
        self.metrics.members_ready.set(sum(self.ready.values()))

    def member_died(self, name: str, replica: str | None) -> None:
        """A call or health check found the member's replica dead: it is down, and restarts."""
        self._mark_down(name)
        self._restarted(name, replica)

    def _restarted(self, name: str, replica: str | None) -> None:
        key = f"{name}:{replica}" if replica else f"{name}:{time.monotonic()}"
        if key not in self._dead_replicas:  # once per replica, however many calls saw it die
            self._dead_replicas.add(key)
            self.metrics.member_restarts.labels(member=name).inc()

    def _failed(self, name: str, reason: str) -> None:
        self._last_failure[name] = time.monotonic()
        self.metrics.member_failures.labels(member=name, reason=reason).inc()

    async def _count_gone(self, name: str, *, every_s: float = 0.0) -> None:
        """Replicas that answered, failed since, and are gone: dead ones no call saw die.

        A replica found gone is lost if its member failed after it last answered, then or within
        ``member_timeout_s`` plus two health intervals of finding it gone (the calls in flight when
        it died fail only when they time out; a health check can find it gone first). A replica
        gone with no such failure was scaled down, not lost, and is not counted. A member with no
        replica left alive is down until a health check answers (its calls would only wait for the
        replacement).
        """
        now = time.monotonic()
        last_failure = self._last_failure.get(name, -math.inf)
        pending = self._unexplained.setdefault(name, {})
        window = self.config.member_timeout_s + 2 * self.config.health_interval_s
        for replica, (seen, found) in list(pending.items()):
            if last_failure >= seen:
                self._restarted(name, replica)
            if last_failure >= seen or now - found > window:
                del pending[replica]
        gone_replicas = getattr(self.members[name], "gone_replicas", None)
        if gone_replicas is None or now - self._probed.get(name, -math.inf) < every_s:
            return
        self._probed[name] = now
        gone, alive = await gone_replicas()
        lost = [r for r, seen in gone.items() if last_failure >= seen]
        for replica in lost:
            self._restarted(name, replica)
        pending.update({r: (seen, now) for r, seen in gone.items() if last_failure < seen})
        if lost and not alive:
            self._mark_down(name)
            self.health_errors[name] = "its replica died"

    async def check_health(self, timeout_s: float | None = None) -> dict[str, bool]:
        """Ask every member; one that died is down at once, one that fails otherwise after
        ``HEALTH_STRIKES`` checks in a row (a busy machine can miss one); any answer brings it back."""
        timeout = timeout_s or min(10.0, self.config.member_timeout_s)

        async def one(name: str) -> None:
            try:
                d = await asyncio.wait_for(self.members[name].health(), timeout)
            except Exception as e:  # noqa: BLE001 - a timeout or anything else: not answering
                if isinstance(e, MemberFailure):
                    self.health_errors[name] = e.message
                elif isinstance(e, asyncio.TimeoutError):
                    self.health_errors[name] = f"no health answer within {timeout:g}s"
                else:
                    self.health_errors[name] = f"{type(e).__name__}: {e}"[:300]
                self._last_failure[name] = time.monotonic()
                self._strikes[name] += 1
                if isinstance(e, MemberFailure) and e.reason == "died":
                    self.member_died(name, e.replica)
                elif self._strikes[name] >= HEALTH_STRIKES:
                    self.ready[name] = False
            else:
                self.described[name] = d
                self.health_errors.pop(name, None)
                self._strikes[name] = 0
                self.ready[name] = True
            await self._count_gone(name)

        await asyncio.gather(*(one(n) for n in self.names))
        self.metrics.members_ready.set(sum(self.ready.values()))
        return dict(self.ready)

    async def health_loop(self) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(self.config.health_interval_s)

    @property
    def is_ready(self) -> bool:
        return sum(self.ready.values()) >= self.quorum

    def models(self) -> list[ModelInfo]:
        out = []
        for n in self.names:
            s, d = self.specs[n], self.described.get(n, {})
            out.append(ModelInfo(name=n, backend=s.backend, model=public_model_name(s.model), format=s.format,
                                 version=str(d.get("version", "unknown")), ready=self.ready[n],
                                 info=_no_paths(_jsonable(d.get("info", {})))))
        return out


def public_model_name(model: str) -> str:
    """A checkpoint directory becomes its name (clients see no server paths); hub ids stay as they are."""
    p = Path(model)
    return p.name if p.is_absolute() or model.startswith((".", "~")) or p.exists() else model


def _no_paths(x: Any) -> Any:
    """``x`` with every string that is a filesystem path replaced by its last component."""
    if isinstance(x, dict):
        return {k: _no_paths(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_no_paths(v) for v in x]
    return public_model_name(x) if isinstance(x, str) and ("/" in x or "\\" in x) else x


def _agreement(flat: dict[str, float | None], verdicts: list[Verdict],
               cutoffs: dict[str, float] | None = None) -> Agreement:
    votes = item_votes(verdicts, cutoffs)
    names = list(dict.fromkeys(v.verifier for v in verdicts))
    pairs = []
    for a, b in itertools.combinations(names, 2):
        shared = [it for it in votes.values() if a in it and b in it]
        same = sum(it[a] == it[b] for it in shared)
        pairs.append(PairAgreement(a=a, b=b, agreement=same / len(shared) if shared else None,
                                   n_items=len(shared)))

    def num(key: str) -> float | None:
        x = flat.get(key)
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

    return Agreement(n_verifiers=int(flat.get("n_verifiers") or 0), n_items=int(flat.get("n_items") or 0),
                     pairwise=num("pairwise"), fleiss_kappa=num("fleiss_kappa"),
                     krippendorff_alpha=num("krippendorff_alpha"), pairs=pairs,
                     consensus={v: num(f"consensus/{v}") for v in names})


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


__all__ = ["AUTHOR", "Overloaded", "VerifyEngine"]
