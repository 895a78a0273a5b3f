"""The engine's members: what a member client is, and one that runs a backend in this process.

A member client has two async calls, ``verify(items)`` (P(valid) for every line of every item,
as a :class:`MemberAnswer`) and ``health()`` (a description of the member and its replica); a
call that gives no verdicts raises :class:`MemberFailure`. :class:`LocalMember` runs the backend
in this process; ``verinet.serve.app.ServeMember`` calls a Ray Serve deployment, whose replicas
score as LocalMember does, with a :class:`Scorer`: the member's backend and prompt format, one
batched call per request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from verinet.backends.config import MemberSpec
from verinet.backends.formats import VerifyItem
from verinet.orchestration.protocol import MemberFailure

log = logging.getLogger(__name__)


@dataclass
class MemberAnswer:
    p_valid: list[list[float]]  # per item: P(valid) per step, then the answer line
    replica: str | None = None
    version: str | None = None


class MemberClient(Protocol):
    name: str

    async def verify(self, items: list[VerifyItem]) -> MemberAnswer: ...

    async def health(self) -> dict[str, Any]: ...


def model_version(spec: MemberSpec) -> str:
    """A fingerprint of the member's weights: config and weight files (name, size, first and last MiB)."""
    try:
        loc = spec.model_location()
    except Exception:  # noqa: BLE001 - an unresolvable model has no fingerprint, only its name
        return spec.model
    p = Path(loc)
    if not p.is_dir():
        return loc  # a hub id or a served model name
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.name == "config.json" or f.suffix in (".safetensors", ".bin", ".pt"):
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(2**20))
                if size > 2**21:
                    fh.seek(-(2**20), os.SEEK_END)
                    h.update(fh.read())
    return f"sha256:{h.hexdigest()[:16]}"


class Scorer:
    """One member's backend and prompt format: P(valid) for every line of every item, in one call."""

    def __init__(self, spec: MemberSpec, *, warm_up: bool = True) -> None:
        from verinet.backends import make_backend
        from verinet.backends.formats import format_for

        self.spec = spec
        self.backend = make_backend(spec)
        self.format = format_for(spec, self.backend)
        self.version = model_version(spec)
        self._lock = threading.Lock()  # one forward pass at a time per model
        # one worker: calls queue here, not as threads blocked on the lock, so that a call whose request gave up
        # (its 504) is dropped before it runs instead of running unseen after the request left `max_queue`
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"score-{spec.name}")
        if warm_up:  # the first forward pass is slow (lazy kernels); pay it before serving, not in a request
            self.score([("1", ["1"], "1")])

    def score(self, items: list[VerifyItem]) -> list[list[float]]:
        call = self.format.verify_call(items)
        with self._lock:
            result = getattr(self.backend, call.method)(*call.args, **call.kwargs)
        rows = [[float(p) for p in row] for row in call.decode(result)]
        if any(not math.isfinite(p) for row in rows for p in row):  # the member failed; not an "invalid" vote
            raise ValueError(f"{self.spec.name}: the backend returned a non-finite P(valid)")
        return [[min(1.0, max(0.0, p)) for p in row] for row in rows]

    async def score_async(self, items: list[VerifyItem]) -> list[list[float]]:
        """:meth:`score` in this scorer's worker thread; cancelling the wait drops a call that has not started
        (one already running finishes: a forward pass cannot be interrupted)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.score, items)

    def describe(self) -> dict[str, Any]:
        return {"member": self.spec.name, "model": self.spec.model, "backend": self.spec.backend,
                "format": self.spec.format, "version": self.version, "info": self.backend.info()}


class LocalMember:
    """A member whose backend runs in this process (in a worker thread)."""

    def __init__(self, spec: MemberSpec) -> None:
        self.name = spec.name
        self.scorer = Scorer(spec)
        self.replica = f"local:{os.getpid()}"

    async def verify(self, items: list[VerifyItem]) -> MemberAnswer:
        try:
            p = await self.scorer.score_async(items)
        except Exception as e:  # noqa: BLE001 - the backend's error is this member's failure
            raise MemberFailure("error", f"{type(e).__name__}: {e}"[:400], self.replica) from e
        return MemberAnswer(p, self.replica, self.scorer.version)

    async def health(self) -> dict[str, Any]:
        return {**self.scorer.describe(), "replica": self.replica}


def reserved_tokens(specs: Sequence[MemberSpec]) -> tuple[str, ...]:
    """Control tokens of the members' prompt formats that client text must not contain: the zoo format's,
    every PRM's step tag (one in a step would add a score), and the special and added tokens of each
    transformers / vLLM member whose tokenizer is on this machine (a chat template's ``<|im_end|>`` in a
    step would let a client write the judge's prompt). A remote (openai) member's tokens are not known here."""
    out: list[str] = []
    if any(s.format == "zoo" for s in specs):
        from verinet.zoo.tokenizer import SPECIALS

        out += SPECIALS
    out += [s.step_tag for s in specs if s.step_tag]
    for s in specs:
        if s.format != "zoo":
            out += _tokenizer_controls(s)
    return tuple(dict.fromkeys(t for t in out if t))


def _tokenizer_controls(spec: MemberSpec) -> list[str]:
    where = spec.tokenizer_location() or (spec.model if spec.backend in ("hf", "vllm") else None)
    if where is None:
        return []
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(where, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a tokenizer not on this machine reserves nothing here
        log.warning("member %s: tokenizer not readable here (%s): its control tokens are not refused in "
                    "client text", spec.name, type(e).__name__)
        return []
    special = [t.content for t in getattr(tok, "added_tokens_decoder", {}).values() if t.special]
    names = [*tok.all_special_tokens, *special]  # added tokens that are plain text (e.g. '####') stay allowed
    return [t for t in names if len(t) >= 3 and t.strip() == t and not t.isalnum()]


__all__ = ["LocalMember", "MemberAnswer", "MemberClient", "MemberFailure", "Scorer", "model_version",
           "reserved_tokens"]
