"""Cost accounting: tokens, FLOPs (2 x non-embedding parameters x tokens), seconds and memory.

Pure functions over per-member usage; the driver measures, this module adds up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


def flops(non_embedding_parameters: float, tokens: float) -> float:
    """Forward-pass FLOPs: 2 x non-embedding parameters per token processed (prefill or decode)."""
    return 2.0 * float(non_embedding_parameters) * float(tokens)


@dataclass
class Cost:
    prefill: int = 0
    decode: int = 0
    flops: float = 0.0
    wall_s: float = 0.0  # the arm's elapsed time (its phases, one after another)
    actor_s: float = 0.0  # seconds members spent answering, summed over members
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prefill + self.decode

    def add(self, other: Cost) -> Cost:
        mem = dict(self.peak_memory_bytes)
        for k, v in other.peak_memory_bytes.items():
            mem[k] = max(mem.get(k, 0), v)
        return Cost(self.prefill + other.prefill, self.decode + other.decode, self.flops + other.flops,
                    self.wall_s + other.wall_s, self.actor_s + other.actor_s, mem)

    def as_dict(self) -> dict:
        return {"prefill_tokens": self.prefill, "decode_tokens": self.decode, "tokens": self.tokens,
                "flops": self.flops, "wall_s": round(self.wall_s, 4), "actor_s": round(self.actor_s, 4),
                "peak_memory_bytes": dict(self.peak_memory_bytes)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Cost:
        return cls(int(d["prefill_tokens"]), int(d["decode_tokens"]), float(d["flops"]), float(d["wall_s"]),
                   float(d["actor_s"]), {k: int(v) for k, v in d.get("peak_memory_bytes", {}).items()})


def usage_cost(usage: Mapping[str, Mapping[str, object]], parameters: Mapping[str, float], *,
               wall_s: float = 0.0, actor_s: Mapping[str, float] | None = None,
               model_of: Mapping[str, str] | None = None) -> Cost:
    """Cost of ``usage`` (member -> phase -> Usage, or member -> Usage).

    ``model_of`` maps a (virtual) member to the model whose parameters it runs.
    """
    c = Cost(wall_s=wall_s, actor_s=sum((actor_s or {}).values()))
    for member, phases in usage.items():
        items = phases.values() if isinstance(phases, Mapping) else [phases]
        p = parameters[(model_of or {}).get(member, member)]
        for u in items:
            c.prefill += int(u.prefill)
            c.decode += int(u.decode)
            c.flops += flops(p, u.prefill + u.decode)
    return c


def total(costs: Iterable[Cost]) -> Cost:
    out = Cost()
    for c in costs:
        out = out.add(c)
    return out


def matched_k(baseline_flops: float, member_flops: float, cap: int) -> int:
    """The ensemble size whose FLOPs come closest to the baseline's (per problem), in [1, cap]."""
    if member_flops <= 0:
        return 1
    return int(min(cap, max(1, round(baseline_flops / member_flops))))
