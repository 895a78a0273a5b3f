"""Views of one caller (in-process backends or a Ray ensemble), used by the comparison job.

* :class:`SubsetCaller` -- some of the members, e.g. the ensemble arm without the baseline;
* :class:`VirtualMembers` -- K members backed by fewer models: member j is model ``j mod n``,
  sampling with its own seed (and a temperature) once the distinct models run out. Calls on
  the same model run in rounds, one call per model per round, so a Ray actor never gets two
  at once; the rounds run in order, the models within a round concurrently.

No Ray here: both wrap anything with ``members`` and ``call_each``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from verinet.orchestration.protocol import CallResult, Caller, MemberCall, as_call


class SubsetCaller:
    """Only ``members`` of ``caller``; calls to any other member are refused."""

    def __init__(self, caller: Caller, members: Sequence[str]) -> None:
        unknown = [m for m in members if m not in caller.members]
        if unknown:
            raise KeyError(f"unknown members {unknown}; members: {caller.members}")
        self.caller = caller
        self.members = list(members)

    def call_each(self, calls: Mapping[str, MemberCall | tuple]) -> CallResult:
        extra = sorted(set(calls) - set(self.members))
        if extra:
            raise KeyError(f"members {extra} are not in this view ({self.members})")
        return self.caller.call_each(calls)


@dataclass(frozen=True)
class Virtual:
    model: str  # the underlying member
    seed: int
    temperature: float


class VirtualMembers:
    """K members over the models of ``caller``: see the module docstring."""

    def __init__(self, caller: Caller, models: Sequence[str], k: int, *, temperature: float,
                 base_temperature: float = 0.0, seed: int = 0) -> None:
        if k < 1 or not models:
            raise ValueError(f"need k >= 1 and at least one model, got k={k}, models={list(models)}")
        self.caller = caller
        self.virtual: dict[str, Virtual] = {}
        for j in range(k):
            model = models[j % len(models)]
            temp = base_temperature if j < len(models) else temperature
            self.virtual[f"{model}.k{j}"] = Virtual(model, seed + j, temp)
        self.members = list(self.virtual)

    def call_each(self, calls: Mapping[str, MemberCall | tuple]) -> CallResult:
        by_model: dict[str, list[tuple[str, tuple]]] = defaultdict(list)
        for name, call in calls.items():
            v = self.virtual[name]
            method, args, kw = as_call(call)
            kwargs = dict(kw or {})
            if method == "generate":
                kwargs["seed"] = v.seed
                kwargs["temperature"] = v.temperature
            by_model[v.model].append((name, (method, args, kwargs)))
        out = CallResult(members=list(calls))
        for r in range(max((len(x) for x in by_model.values()), default=0)):
            round_calls = {m: todo[r] for m, todo in by_model.items() if r < len(todo)}
            res = self.caller.call_each({m: c for m, (_, c) in round_calls.items()})
            for m, (vname, _) in round_calls.items():
                if m in res.results:
                    out.results[vname] = res.results[m]
                    if m in res.usage:
                        out.usage[vname] = res.usage[m]
                else:
                    out.missing.append(vname)
                    out.errors[vname] = res.errors.get(m, "no answer")
                out.wall_s[vname] = res.wall_s.get(m, 0.0)
        return out


__all__ = ["SubsetCaller", "Virtual", "VirtualMembers"]
