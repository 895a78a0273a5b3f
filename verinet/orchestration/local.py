"""Backends in this process behind the caller protocol (one call at a time), and opening an
ensemble config's members: in-process, or as Ray actors (``verinet.cluster.Ensemble``)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from verinet.backends import EnsembleConfig, make_backend
from verinet.backends.base import Backend, Usage
from verinet.backends.formats import PromptFormat, format_for
from verinet.orchestration.protocol import CallResult, Caller, MemberCall, as_call


class LocalMembers:
    """Backends in this process behind the caller protocol (one call at a time)."""

    def __init__(self, backends: Mapping[str, Backend]) -> None:
        if not backends:
            raise ValueError("LocalMembers needs at least one backend")
        self.backends = dict(backends)
        self.members = list(self.backends)

    def call_each(self, calls: Mapping[str, MemberCall | tuple]) -> CallResult:
        unknown = sorted(set(calls) - set(self.members))
        if unknown:
            raise KeyError(f"unknown members {unknown}; members: {self.members}")
        out = CallResult(members=[m for m in self.members if m in calls], quorum=len(calls))
        t_all = time.perf_counter()
        for name in out.members:
            method, args, kwargs = as_call(calls[name])
            t0 = time.perf_counter()
            result = getattr(self.backends[name], method)(*args, **(kwargs or {}))
            out.results[name] = result
            out.methods[name] = method
            out.attempts[name] = 1
            if isinstance(getattr(result, "usage", None), Usage):
                out.usage[name] = result.usage
            out.wall_s[name] = time.perf_counter() - t0
        out.wall_total_s = time.perf_counter() - t_all
        return out


@contextmanager
def open_members(config: EnsembleConfig, *, local: bool, ray_address: str | None = None
                 ) -> Iterator[tuple[Caller, dict[str, PromptFormat]]]:
    """(caller, formats) for the config's members; Ray actors unless ``local``."""
    if local:
        backends = {m.name: make_backend(m) for m in config.members}
        try:
            yield LocalMembers(backends), {m.name: format_for(m, backends[m.name]) for m in config.members}
        finally:
            for b in backends.values():
                b.close()
        return
    from verinet.cluster import Ensemble
    from verinet.cluster.local import init_ray

    init_ray(ray_address)
    ensemble = Ensemble(config)
    try:
        yield ensemble, {m.name: format_for(m) for m in config.members}
    finally:
        ensemble.shutdown()


__all__ = ["LocalMembers", "open_members"]
