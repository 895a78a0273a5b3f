"""The one protocol between verinet's algorithms and its members, wherever they run.

A *caller* holds named members and runs one call per member, concurrently where it can:
``call_each({member: (method, args[, kwargs])})`` returns a :class:`CallResult`. The methods
are the backend protocol's (``generate``, ``score``, ``score_tagged``, ``score_steps``, ``token_scores``, ``token_logprobs``, ...).
Three callers implement it: :class:`~verinet.orchestration.local.LocalMembers` (backends in
this process), ``verinet.cluster.Ensemble`` (one Ray actor per member, with retries) and the
views in :mod:`verinet.orchestration.views`. The endpoint's members (``verinet.serve.members``)
answer one verification call each and fail with :class:`MemberFailure`.

Quorum is one policy everywhere: a call (or a chain at the endpoint) that gets fewer answers
than ``min(quorum, members asked)`` raises :class:`QuorumError` (see :func:`check_quorum`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from verinet.backends.base import Usage


class MemberCall(NamedTuple):
    """One member's share of a ``call_each``: a backend method and its arguments."""

    method: str
    args: tuple = ()
    kwargs: Mapping[str, Any] | None = None


@dataclass
class CallResult:
    """What each member answered; members that failed are in ``missing`` with ``errors``."""

    results: dict[str, Any] = field(default_factory=dict)  # member -> the backend's result
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # member -> why it failed (every attempt)
    usage: dict[str, Usage] = field(default_factory=dict)  # member -> tokens processed (answered members)
    wall_s: dict[str, float] = field(default_factory=dict)  # member -> seconds answering (retries included)
    attempts: dict[str, int] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    quorum: int = 0
    wall_total_s: float = 0.0
    members: list[str] = field(default_factory=list)  # every member called, in config order

    @property
    def answered(self) -> list[str]:
        return [m for m in self.members if m in self.results] or list(self.results)

    @property
    def total_usage(self) -> Usage:
        total = Usage()
        for u in self.usage.values():
            total = total + u
        return total

    def __getitem__(self, member: str) -> Any:
        return self.results[member]

    def __contains__(self, member: object) -> bool:
        return member in self.results


class Caller(Protocol):
    members: list[str]

    def call_each(self, calls: Mapping[str, MemberCall | tuple]) -> CallResult: ...


class QuorumError(RuntimeError):
    """Fewer members answered than the quorum; ``result`` holds what did arrive (when there is one)."""

    def __init__(self, message: str, result: CallResult | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.result = result
        self.errors = dict(result.errors) if result is not None else {}


class MemberFailure(Exception):
    """A member call that gave no answer: ``reason`` is timeout, died or error."""

    def __init__(self, reason: str, message: str, replica: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.replica = reason, message, replica


def check_quorum(answered: Sequence[str], asked: Sequence[str], quorum: int, errors: Mapping[str, str], *,
                 who: str = "", result: CallResult | None = None) -> None:
    """Raise :class:`QuorumError` when fewer of ``asked`` answered than ``min(quorum, len(asked))``."""
    q = min(quorum, len(asked))
    if len(answered) < q:
        why = "; ".join(f"{n}: {errors.get(n, 'no answer')}" for n in asked if n not in answered)
        prefix = f"{who}: " if who else ""
        raise QuorumError(f"{prefix}{len(answered)} of {len(asked)} members answered, the quorum is {q} "
                          f"({why})", result)


def as_call(call: MemberCall | tuple) -> MemberCall:
    return call if isinstance(call, MemberCall) else MemberCall(*call)


__all__ = ["CallResult", "Caller", "MemberCall", "MemberFailure", "QuorumError", "as_call", "check_quorum"]
