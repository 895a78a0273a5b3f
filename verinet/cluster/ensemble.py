"""An ensemble of members on Ray: concurrent fan-out calls that survive a member's failure.

    >>> ens = Ensemble.create("configs/ensemble-local.yaml")       # after ray.init(...)
    >>> r = ens.score_tagged(texts, "<v>", "<+>", "<->")           # every member, concurrently
    >>> r.results["zoo-xs-s0"].p_valid, r.missing, r.wall_s, r.usage
    >>> ens.call_each({"a": ("score_tagged", (texts_a, "<v>", "<+>", "<->")),
    ...                "b": ("generate", (prompts_b,), {"max_tokens": 64})})
    >>> ens.shutdown()

Fault tolerance: a member call that fails on the Ray side (actor crashed, killed or
restarting; no answer within ``call_timeout_s``) is retried up to ``config.retries`` times,
each retry after the restarted actor answers a health check (bounded by
``restart_timeout_s``, by default ``load_timeout_s``). A member that still fails is left out and named in
``CallResult.missing`` with the reason in ``errors``; if fewer than ``quorum`` members
answered, the call raises :class:`QuorumError`. An error raised by the backend itself (a bad
argument, say) is not retried: it would fail again.

A member killed for not answering in time is restarted by Ray, which spends one of its
``max_restarts``. So that slow calls alone never leave a member dead for the rest of a long job,
the next call to such a member waits for it (bounded by ``restart_timeout_s``) and, if Ray has given
up on it, starts a new actor in its place with a fresh budget. A member that dies by itself (a
crash, an out-of-memory kill) is not replaced: its restarts are what protect the cluster from a
crash loop.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayError, RayTaskError
from ray.util.placement_group import remove_placement_group

from verinet.backends.base import Usage
from verinet.backends.config import EnsembleConfig, load_ensemble_config
from verinet.cluster.actor import (
    DEFAULT_MAX_RESTARTS,
    ModelActor,
    PlacementProbe,
    actor_name,
    actor_options,
    create_group,
)
from verinet.cluster.placement import EPS, PlacementPlan, plan
from verinet.orchestration.protocol import CallResult, MemberCall, as_call, check_quorum

METHODS = frozenset({"generate", "score", "score_tagged", "score_steps", "token_scores", "token_logprobs", "info", "health", "pid"})
PROBE_METHODS = frozenset({"info", "health", "pid", "group_workers"})
POLL_S = 0.2
DEAD_GRACE_S = 2.0  # an ActorDiedError for this long means the actor will not come back


class EnsembleError(RuntimeError):
    """An ensemble that cannot start or answer; the message says which member and why."""


@dataclass
class _Outcome:
    value: Any
    error: str | None
    attempts: int
    wall_s: float


class Ensemble:
    """One Ray actor per member of an :class:`EnsembleConfig`; Ray must already be running."""

    def __init__(self, config: EnsembleConfig, *, name: str | None = None,
                 max_restarts: int = DEFAULT_MAX_RESTARTS, load_timeout_s: float = 900.0,
                 restart_timeout_s: float | None = None, schedule_timeout_s: float = 60.0,
                 restart_on_timeout: bool = True, dry_run: bool = False) -> None:
        """Plan, reserve and start every member; on any failure nothing is left running.

        ``dry_run`` schedules a stand-in per member with the real options (placement groups
        included) but loads no model: only ``info``, ``health``, ``pid`` and ``group_workers``
        can be called. ``restart_on_timeout`` restarts a member that did not answer within
        ``call_timeout_s`` (a sync actor would otherwise stay busy with the stuck call).
        """
        if not ray.is_initialized():
            raise EnsembleError("Ray is not running: call ray.init() (or connect to a cluster) before "
                                "building an Ensemble")
        self.config = config
        self.name = name or f"ensemble-{uuid.uuid4().hex[:6]}"
        self.dry_run = dry_run
        self.max_restarts = max_restarts
        # a restarted actor loads its model again: as long as the first load may take, unless told otherwise
        self.restart_timeout_s = load_timeout_s if restart_timeout_s is None else restart_timeout_s
        self.restart_on_timeout = restart_on_timeout
        self._specs = {m.name: m for m in config.members}
        if not dry_run:
            for m in config.members:
                m.model_location()  # a wrong path is a config error before any actor starts
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        self.plan: PlacementPlan = plan(config, nodes)
        self._actors: dict[str, Any] = {}
        self._groups: dict[str, Any] = {}
        self._killed: set[str] = set()  # members this ensemble killed on a timeout, not yet seen back
        self._state_lock = threading.Lock()  # _actors, _pending, _groups and _closed against shutdown()
        self._member_locks = {m: threading.Lock() for m in self._specs}  # one replacement per member at a time
        self._pending: set[Any] = set()  # replacement actors still loading
        self._generation: dict[str, int] = dict.fromkeys(self._specs, 0)  # actor names are unique per start
        self.replaced: dict[str, int] = dict.fromkeys(self._specs, 0)  # new actors that took a spent member's place
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(self._specs)),
                                        thread_name_prefix=f"{self.name}-call")
        try:
            self._wait_free(schedule_timeout_s)
            self._start(schedule_timeout_s, load_timeout_s)
        except BaseException:
            self.shutdown()
            raise

    @classmethod
    def create(cls, config: EnsembleConfig | str | Path, **kwargs: Any) -> Ensemble:
        """From a config or a YAML path (``configs/ensemble-local.yaml``); kwargs as for the constructor."""
        if not isinstance(config, EnsembleConfig):
            config = load_ensemble_config(config, check_models=not kwargs.get("dry_run", False))
        return cls(config, **kwargs)

    # ---- start and stop ---------------------------------------------------------
    def _wait_free(self, timeout_s: float) -> None:
        """The plan fits the cluster; wait (bounded) until what it needs is also free."""
        end = time.monotonic() + timeout_s
        while True:
            free = ray.available_resources()
            short = [f"{k}: need {_num(need)}, free {_num(free.get(k, 0.0))}"
                     for k, need in (("CPU", self.plan.cpus), ("GPU", self.plan.gpus))
                     if need > free.get(k, 0.0) + EPS]
            if not short:
                return
            if time.monotonic() >= end:
                raise EnsembleError(
                    f"ensemble {self.name}: the cluster has the resources but they are held by others after "
                    f"{timeout_s:g}s ({'; '.join(short)}): shut down the ensembles or actors holding them")
            time.sleep(POLL_S)

    def _start(self, schedule_timeout_s: float, load_timeout_s: float) -> None:
        for mp in self.plan.members:
            group = create_group(mp, name=actor_name(self.name, mp.name) + ".tp")
            if group is not None:
                self._groups[mp.name] = group
        if self._groups:
            refs = {g.ready(): n for n, g in self._groups.items()}
            ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=schedule_timeout_s)
            if pending:
                late = ", ".join(refs[r] for r in pending)
                raise EnsembleError(
                    f"placement groups of {late} not ready after {schedule_timeout_s:g}s: their GPUs are "
                    "held by other jobs, or spread over nodes (STRICT_PACK needs one node)")
        for mp in self.plan.members:
            self._actors[mp.name] = self._new_actor(mp.name)
        refs = {a.health.remote(): n for n, a in self._actors.items()}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=load_timeout_s)
        failed = {refs[r]: f"not ready after {load_timeout_s:g}s (still loading, or waiting for resources)"
                  for r in pending}
        for r in ready:
            try:
                ray.get(r)
            except Exception as e:  # noqa: BLE001 - any failure to start is reported per member
                failed[refs[r]] = short_error(e)
        if failed:
            raise EnsembleError(f"ensemble {self.name}: members failed to start: "
                                + "; ".join(f"{n}: {why}" for n, why in failed.items()))

    def _new_actor(self, member: str) -> Any:
        mp = next(m for m in self.plan.members if m.name == member)
        spec = self._specs[member]
        n = self._generation[member]
        name = actor_name(self.name, member) + (f".{n}" if n else "")  # Ray may hold a dead actor's name a while
        opts = actor_options(mp, name=name, max_restarts=self.max_restarts, group=self._groups.get(member),
                             backend=spec.backend)
        return (PlacementProbe if self.dry_run else ModelActor).options(**opts).remote(spec)

    def _replace(self, member: str, dead: Any) -> str | None:
        """Start a new actor for ``member`` in place of ``dead`` (whose restarts our timeout kills spent);
        None once it answers a health check, else why not. Concurrent calls replace it once; a failed
        replacement is not tried again by every later call (the member then stays down like any dead one)."""
        with self._member_locks[member]:
            with self._state_lock:
                if self._closed:
                    return "the ensemble is shut down"
                if self._actors.get(member) is not dead:  # another call replaced it already
                    return None
                self._generation[member] += 1
                actor = self._new_actor(member)
                self._pending.add(actor)
            why = None
            try:
                ray.get(actor.health.remote(), timeout=self.restart_timeout_s)
            except Exception as e:  # noqa: BLE001 - any failure to start means no replacement
                why = (f"not ready within restart_timeout_s={self.restart_timeout_s:g}s"
                       if isinstance(e, GetTimeoutError) else short_error(e))
            with self._state_lock:
                self._pending.discard(actor)
                self._killed.discard(member)
                if why is None and not self._closed:
                    self._actors[member] = actor
                    self.replaced[member] += 1
                    return None
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            if why is None:
                return "the ensemble is shut down"
            return f"its restarts were spent on timeouts and a new actor did not start ({why})"

    def shutdown(self) -> None:
        """Kill every actor and remove the placement groups this ensemble created; idempotent."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            actors = [*self._actors.values(), *self._pending]
            groups = list(self._groups.values())
            self._actors.clear()
            self._groups.clear()
            self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for a in actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(a, no_restart=True)
        for g in groups:
            with contextlib.suppress(Exception):
                remove_placement_group(g)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ---- introspection ------------------------------------------------------------
    @property
    def members(self) -> list[str]:
        return list(self._specs)

    def actor(self, member: str) -> Any:
        """The member's Ray actor handle (for tests and tools: ``ray.kill(ens.actor("a"))``)."""
        self._check_open()
        if member not in self._actors:
            raise KeyError(f"unknown member {member!r}; members: {self.members}")
        return self._actors[member]

    def health(self, timeout_s: float = 10.0) -> dict[str, bool]:
        """member -> answers a health check within ``timeout_s`` (a restarting member: False)."""
        self._check_open()
        refs = {a.health.remote(): n for n, a in self._actors.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        out = dict.fromkeys(self._actors, False)
        for r in ready:
            try:
                out[refs[r]] = bool(ray.get(r))
            except RayError:
                pass
        return out

    def info(self) -> dict[str, dict[str, Any]]:
        """member -> its backend's info plus where Ray put it (pid, GPU ids, placement group).

        Members that do not answer (dead, restarting) are absent.
        """
        return self.call("info", quorum=1).results

    # ---- calls --------------------------------------------------------------------
    def call(self, method: str, *args: Any, members: list[str] | None = None, quorum: int | None = None,
             retries: int | None = None, timeout_s: float | None = None, **kwargs: Any) -> CallResult:
        """The same protocol call on every member (or ``members``), concurrently.

        ``args``/``kwargs`` go to the member's method (``generate``, ``score``, ``score_tagged``,
        ``info``, ``health``, ``pid``); ``members``, ``quorum``, ``retries`` and ``timeout_s``
        are the ensemble's own and are not passed on (see :meth:`call_each`).
        """
        names = self.members if members is None else list(members)
        return self.call_each({n: MemberCall(method, args, kwargs) for n in names},
                              quorum=quorum, retries=retries, timeout_s=timeout_s)

    def call_each(self, calls: Mapping[str, MemberCall | tuple], *, quorum: int | None = None,
                  retries: int | None = None, timeout_s: float | None = None) -> CallResult:
        """A different call per member: ``{member: (method, args[, kwargs])}``, run concurrently.

        ``quorum`` defaults to ``config.quorum``, capped at the number of members called;
        ``retries`` and ``timeout_s`` default to ``config.retries`` and ``config.call_timeout_s``.
        """
        self._check_open()
        allowed = PROBE_METHODS if self.dry_run else METHODS
        norm: dict[str, MemberCall] = {}
        for name in self.members:  # config order
            if name in calls:
                c = calls[name]
                c = as_call(c)
                if c.method not in allowed:
                    raise ValueError(f"unknown method {c.method!r}; choose one of {sorted(allowed)}")
                norm[name] = c
        unknown = sorted(set(calls) - set(norm))
        if unknown:
            raise KeyError(f"unknown members {unknown}; members: {self.members}")
        if not norm:
            raise ValueError("call_each needs at least one member call")
        q = min(self.config.quorum, len(norm)) if quorum is None else quorum
        if not 1 <= q <= len(norm):
            raise ValueError(f"quorum {q} must be between 1 and the {len(norm)} members called")
        n_retries = self.config.retries if retries is None else retries
        timeout = self.config.call_timeout_s if timeout_s is None else timeout_s
        t0 = time.monotonic()
        futures = {n: self._pool.submit(self._run_member, n, c, n_retries, timeout) for n, c in norm.items()}
        outcomes = {n: f.result() for n, f in futures.items()}
        result = CallResult(
            results={n: o.value for n, o in outcomes.items() if o.error is None},
            missing=[n for n, o in outcomes.items() if o.error is not None],
            errors={n: o.error for n, o in outcomes.items() if o.error is not None},
            wall_s={n: o.wall_s for n, o in outcomes.items()},
            usage={n: o.value.usage for n, o in outcomes.items()
                   if o.error is None and isinstance(getattr(o.value, "usage", None), Usage)},
            attempts={n: o.attempts for n, o in outcomes.items()},
            methods={n: c.method for n, c in norm.items()},
            quorum=q, wall_total_s=time.monotonic() - t0, members=list(norm))
        check_quorum(list(result.results), list(norm), q, result.errors, who=f"ensemble {self.name}", result=result)
        return result

    def generate(self, prompts: list[str], **kwargs: Any) -> CallResult:
        return self.call("generate", prompts, **kwargs)

    def score(self, prompts: list[str], candidates: list[str], **kwargs: Any) -> CallResult:
        return self.call("score", prompts, candidates, **kwargs)

    def score_tagged(self, texts: list[str], tag: str, valid: str, invalid: str,
                     **kwargs: Any) -> CallResult:
        return self.call("score_tagged", texts, tag, valid, invalid, **kwargs)

    # ---- one member's call, with retries ------------------------------------------
    def _run_member(self, name: str, call: MemberCall, retries: int, timeout: float) -> _Outcome:
        actor = self._actors[name]
        t0 = time.monotonic()
        errors: list[str] = []
        attempts = 0
        for attempt in range(retries + 1):
            actor = self._actors.get(name, actor)  # another call may have replaced it meanwhile
            if attempt or name in self._killed:
                why, dead = self._await_alive(actor)
                if dead and name in self._killed:  # Ray gave up after restarts that our timeouts spent
                    why = self._replace(name, actor)
                    actor = self._actors.get(name, actor)
                elif why is None:
                    self._killed.discard(name)
                if why:
                    errors.append(why)
                    break
            attempts += 1
            ref = getattr(actor, call.method).remote(*call.args, **(call.kwargs or {}))
            try:
                return _Outcome(ray.get(ref, timeout=timeout), None, attempts, time.monotonic() - t0)
            except GetTimeoutError:
                errors.append(f"no answer within call_timeout_s={timeout:g}s")
                if self.restart_on_timeout and not self._closed:
                    with contextlib.suppress(Exception):  # a busy sync actor would never take the retry
                        ray.kill(actor, no_restart=False)
                        self._killed.add(name)
            except RayTaskError as e:  # the backend raised: deterministic, not retried
                errors.append(short_error(e))
                break
            except RayError as e:  # actor died, was killed or is restarting: retry after it is back
                errors.append(short_error(e))
        return _Outcome(None, "; ".join(errors), attempts, time.monotonic() - t0)

    def _await_alive(self, actor: Any) -> tuple[str | None, bool]:
        """(None, False) once the (restarted) actor answers a health check; else (why not, whether Ray
        gave up on it for good)."""
        end = time.monotonic() + self.restart_timeout_s
        dead_since: float | None = None
        while not self._closed:
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                ray.get(actor.health.remote(), timeout=left)
                return None, False
            except GetTimeoutError:
                break
            except ActorDiedError as e:
                now = time.monotonic()
                dead_since = dead_since or now
                if now - dead_since >= DEAD_GRACE_S:
                    return f"the actor is dead and will not restart ({short_error(e)})", True
            except RayTaskError as e:
                return f"health check failed: {short_error(e)}", False
            except RayError:  # restarting
                dead_since = None
            time.sleep(POLL_S)
        return f"not back within restart_timeout_s={self.restart_timeout_s:g}s", False

    def _check_open(self) -> None:
        if self._closed:
            raise EnsembleError(f"ensemble {self.name} is shut down")


_ERR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Exit)\w*): (.+)$")


def short_error(e: BaseException) -> str:
    """One line of a Ray error: the underlying exception, not Ray's whole traceback."""
    cause = getattr(e, "cause", None)
    if isinstance(e, RayTaskError) and cause is not None and not isinstance(cause, RayError):
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"[:400]
    text = str(e)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    hits = [m for m in (_ERR_LINE.match(ln) for ln in lines) if m]
    if hits:
        m = hits[-1]
        return f"{m.group(1)}: {m.group(2)}"[:400]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:400]


def _num(x: float) -> str:
    return f"{x:g}"
