"""Ensembles on Ray: one actor per member, concurrent fan-out, quorum and retries.

All of the project's Ray code lives here (and in ``verinet.serve``); algorithms stay Ray-free.
The placement plan (``plan``) is pure and importable without starting Ray; the Ray parts
(``Ensemble``, ``ModelActor``) are imported on first use.

    >>> import ray; ray.init()
    >>> ens = Ensemble.create("configs/ensemble-local.yaml")
    >>> ens.score_tagged(texts, "<v>", "<+>", "<->").results
"""

from __future__ import annotations

from typing import Any

from verinet.cluster.placement import MemberPlacement, PlacementPlan, plan

_LAZY = {
    "Ensemble": "verinet.cluster.ensemble", "CallResult": "verinet.orchestration.protocol",
    "EnsembleError": "verinet.cluster.ensemble", "QuorumError": "verinet.orchestration.protocol",
    "MemberCall": "verinet.orchestration.protocol", "ModelActor": "verinet.cluster.actor",
    "PlacementProbe": "verinet.cluster.actor", "actor_options": "verinet.cluster.actor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verinet.cluster' has no attribute {name!r}")


__all__ = [
    "CallResult", "Ensemble", "EnsembleError", "MemberCall", "MemberPlacement", "ModelActor",
    "PlacementPlan", "PlacementProbe", "QuorumError", "actor_options", "plan",
]
