"""Cost accounting: tokens, FLOPs, seconds and memory, with one definition for every phase.

* **FLOPs** = 2 x non-embedding parameters x tokens processed (prefill and decode alike). The
  parameters are read from each member's checkpoint config (:func:`checkpoint_parameters`), the
  same way for every engine (hf, vllm, openai); a model whose size cannot be known is an error,
  never a silent 0.
* **Member seconds**: the seconds each member spent answering a call (summed over members).
* **Accelerator-seconds** = member seconds x the member's GPU share (``num_gpus``, or the
  tensor-parallel size for a TP group). Members without a GPU count CPU-seconds instead
  (member seconds x ``num_cpus``), kept apart so the two are never added.
* Every cost is kept per phase (solve, verify, labelled, ...); totals are sums of phases, so a
  headline figure and a cost table computed from the same records reconcile exactly.

Pure functions over per-member usage; the driver measures, this module adds up.
"""

from __future__ import annotations

from collections.abc import Callable

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from verinet.backends.config import MemberSpec
from verinet.experiments.config import ConfigError

PHASE_FIELDS = ("prefill", "decode", "flops", "member_s", "accelerator_s", "cpu_s")


class CostError(ConfigError):
    """A cost that cannot be computed honestly (e.g. a model of unknown size)."""


def flops(non_embedding_parameters: float, tokens: float) -> float:
    """Forward-pass FLOPs: 2 x non-embedding parameters per token processed (prefill or decode)."""
    return 2.0 * float(non_embedding_parameters) * float(tokens)


@lru_cache(maxsize=64)
def _count_from_config(location: str) -> float:
    """Non-embedding parameters of a checkpoint, from its config alone (no weights loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(location, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    total = sum(p.numel() for p in model.parameters())  # tied embeddings are counted once
    return float(total - model.get_input_embeddings().weight.numel())


def checkpoint_parameters(spec: MemberSpec, overrides: Mapping[str, float] | None = None) -> float:
    """Non-embedding parameters of ``spec``'s model, for any engine.

    ``overrides`` (``cost.parameters`` of the config) wins; otherwise the count is read from the
    checkpoint's config: a local directory, a zoo name, or a Hugging Face id in the local cache.
    For an ``openai`` member whose model is only a served name, give it in ``cost.parameters``.
    """
    if overrides and spec.name in overrides:
        return float(overrides[spec.name])
    try:
        location = spec.model_location()
    except Exception as e:  # noqa: BLE001 - any resolution failure means "unknown size"
        location, why = spec.model, str(e)
    else:
        why = ""
    if Path(location).is_dir() and not (Path(location) / "config.json").is_file():
        why = f"{location} has no config.json"
    else:
        try:
            return _count_from_config(str(location))
        except Exception as e:  # noqa: BLE001
            why = why or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    raise CostError(f"cost.parameters: the size of member {spec.name!r} ({spec.backend}: {spec.model}) cannot be "
                    f"read from a checkpoint config ({why}); add `cost: {{parameters: {{{spec.name}: N}}}}` with "
                    "its non-embedding parameters, so that FLOPs are never silently 0")


def checkpoint_training(spec: MemberSpec) -> dict[str, Any] | None:
    """How ``spec``'s model was trained, from its zoo card: {"regime", "tasks", "batch_size", "tokens",
    "steps"}; None when the model has no card (a real pretrained model, a hub id), so the report says
    only what it knows. An ``openai`` member serving a zoo model by name is read through that name."""
    try:
        location = (spec.tokenizer_location() if spec.backend == "openai" else spec.model_location()) or ""
    except Exception:  # noqa: BLE001 - an unresolvable model: make_backend reports it, not the cost
        return None
    card = Path(location) / "card.json"
    if not location or not card.is_file():
        return None
    try:
        t = json.loads(card.read_text(encoding="utf-8"))["training"]
        return {"regime": str(t["regime"]), "tasks": t["tasks"], "batch_size": int(t["hyperparameters"]["batch_size"]),
                "tokens": int(t["tokens"]), "steps": int(t["steps"])}
    except (ValueError, KeyError, TypeError) as e:
        raise CostError(f"{card} is not a readable zoo model card ({type(e).__name__}: {e}); regenerate it with "
                        f"`verinet zoo eval {spec.model} --update-card`") from None


def shares(spec: MemberSpec) -> tuple[float, float]:
    """(GPU share, CPU share) of one member: GPUs of its TP group or its fraction of one GPU; else its CPUs."""
    gpus = float(spec.resources.gpus_total)
    return gpus, (0.0 if gpus > 0 else float(spec.resources.num_cpus))


@dataclass
class Cost:
    """Tokens, FLOPs and seconds of one arm (or chunk, or phase), kept per phase."""

    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    wall_s: float = 0.0  # the arm's elapsed time (its phases, one after another)
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)

    def _sum(self, key: str, phases: Iterable[str] | None = None) -> float:
        keep = set(self.phases) if phases is None else set(phases)
        return sum(v.get(key, 0.0) for ph, v in self.phases.items() if ph in keep)

    @property
    def prefill(self) -> int:
        return int(self._sum("prefill"))

    @property
    def decode(self) -> int:
        return int(self._sum("decode"))

    @property
    def tokens(self) -> int:
        return self.prefill + self.decode

    @property
    def flops(self) -> float:
        return self._sum("flops")

    def flops_of(self, phases: Iterable[str]) -> float:
        return self._sum("flops", phases)

    @property
    def member_s(self) -> float:
        return self._sum("member_s")

    @property
    def accelerator_s(self) -> float:
        return self._sum("accelerator_s")

    @property
    def cpu_s(self) -> float:
        return self._sum("cpu_s")

    def add(self, other: Cost) -> Cost:
        phases = {ph: dict(v) for ph, v in self.phases.items()}
        for ph, v in other.phases.items():
            row = phases.setdefault(ph, {k: 0.0 for k in PHASE_FIELDS})
            for k in PHASE_FIELDS:
                row[k] = row.get(k, 0.0) + v.get(k, 0.0)
        mem = dict(self.peak_memory_bytes)
        for k, m in other.peak_memory_bytes.items():
            mem[k] = max(mem.get(k, 0), m)
        return Cost(phases, self.wall_s + other.wall_s, mem)

    def as_dict(self) -> dict[str, Any]:
        return {"prefill_tokens": self.prefill, "decode_tokens": self.decode, "tokens": self.tokens,
                "flops": self.flops, "wall_s": round(self.wall_s, 4), "member_s": round(self.member_s, 4),
                "accelerator_s": round(self.accelerator_s, 4), "cpu_s": round(self.cpu_s, 4),
                "phases": {ph: dict(v) for ph, v in self.phases.items()},
                "peak_memory_bytes": dict(self.peak_memory_bytes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cost:
        return cls({ph: {k: float(v.get(k, 0.0)) for k in PHASE_FIELDS} for ph, v in d.get("phases", {}).items()},
                   float(d.get("wall_s", 0.0)), {k: int(v) for k, v in d.get("peak_memory_bytes", {}).items()})


def usage_cost(usage: Mapping[str, Mapping[str, Any]], parameters: Mapping[str, float], *,
               wall_s: float = 0.0, member_s: Mapping[str, Mapping[str, float]] | None = None,
               member_shares: Mapping[str, tuple[float, float]] | None = None,
               model_of: Mapping[str, str] | None = None) -> Cost:
    """Cost of ``usage`` (member -> phase -> Usage).

    ``member_s``: member -> phase -> seconds answering; ``member_shares``: model -> (GPU share,
    CPU share) (see :func:`shares`); ``model_of`` maps a (virtual) member to the model it runs.
    A member missing from ``parameters`` is an error: FLOPs are never silently 0.
    """
    c = Cost(wall_s=wall_s)
    model_of = model_of or {}
    seconds = member_s or {}
    for member in set(usage) | set(seconds):
        model = model_of.get(member, member)
        if model not in parameters:
            raise CostError(f"no parameter count for member {model!r}; known: {sorted(parameters)}")
        p = parameters[model]
        gpu, cpu = (member_shares or {}).get(model, (0.0, 1.0))
        for ph in set(usage.get(member, {})) | set(seconds.get(member, {})):
            row = c.phases.setdefault(ph, {k: 0.0 for k in PHASE_FIELDS})
            u = usage.get(member, {}).get(ph)
            if u is not None:
                row["prefill"] += int(u.prefill)
                row["decode"] += int(u.decode)
                row["flops"] += flops(p, u.prefill + u.decode)
            s = float(seconds.get(member, {}).get(ph, 0.0))
            row["member_s"] += s
            row["accelerator_s"] += s * gpu
            row["cpu_s"] += s * cpu
    return c


def total(costs: Iterable[Cost]) -> Cost:
    out = Cost()
    for c in costs:
        out = out.add(c)
    return out


def matched_k(baseline_flops: float, ensemble_flops: Callable[[int], float], cap: int,
              limit: int = 4096) -> tuple[int, int]:
    """(K in [1, cap], K without the cap): the ensemble size whose FLOPs per problem, ``ensemble_flops(K)``
    for all K members together (growing with K, as fast as K squared when every member checks every other
    chain), come closest to the baseline's."""
    if ensemble_flops(1) <= 0:
        raise CostError("a member's FLOPs per problem is 0: no compute-matched K can be chosen")
    best, k = 1, 1
    while k < limit and ensemble_flops(k) < baseline_flops:
        k += 1
        if abs(ensemble_flops(k) - baseline_flops) < abs(ensemble_flops(best) - baseline_flops):
            best = k
    return min(cap, best), best
