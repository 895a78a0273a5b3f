"""Building callers and prompt formats for an ensemble config: in-process or as Ray actors."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from verinet.backends import EnsembleConfig, make_backend
from verinet.backends.formats import PromptFormat, format_for
from verinet.graph.orchestrate import Caller, LocalMembers


@contextmanager
def open_members(config: EnsembleConfig, *, local: bool, ray_address: str | None = None
                 ) -> Iterator[tuple[Caller, dict[str, PromptFormat]]]:
    """(caller, formats) for the config's members; Ray actors unless ``local``."""
    if local:
        backends = {m.name: make_backend(m) for m in config.members}
        yield LocalMembers(backends), {m.name: format_for(m, backends[m.name]) for m in config.members}
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
