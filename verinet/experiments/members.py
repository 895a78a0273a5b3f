"""Building callers and prompt formats for an ensemble config: in-process or as Ray actors."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from verinet.backends import EnsembleConfig, MemberSpec, make_backend
from verinet.backends.formats import ChatFormat, PromptFormat, ZooFormat, chat_template_renderer
from verinet.graph.orchestrate import Caller, LocalMembers


def format_for(spec: MemberSpec, backend=None) -> PromptFormat:
    """The member's prompt format; chat templates are rendered here, with the model's tokenizer."""
    if spec.format == "zoo":
        return ZooFormat()
    tok = getattr(backend, "tok", None)
    if tok is None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(spec.model_location(), trust_remote_code=False)
    return ChatFormat(chat_template_renderer(tok))


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
