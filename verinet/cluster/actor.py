"""One member as a Ray actor: ``ModelActor`` hosts a backend and mirrors its protocol.

Actor options (see :func:`actor_options`):

* ``num_cpus`` / ``num_gpus`` from the member's Resources (fractional GPUs share a device;
  Ray sets ``CUDA_VISIBLE_DEVICES`` to the one the share is on), and its custom resources
  (``resources.custom``: only nodes that declare them take the actor);
* ``max_restarts`` (default 3): a crashed or killed actor is recreated, which reloads its model;
* ``max_task_retries=0``: Ray does not re-run a call on the restarted actor by itself — the
  :class:`~verinet.cluster.ensemble.Ensemble` owns retries (``config.retries``), so a failure is
  seen, counted and bounded by ``call_timeout_s`` instead of silently doubling a call's time;
* ``max_concurrency=1`` (Ray's default for a sync actor): one call at a time per model;
* tensor parallel (``tensor_parallel_size`` > 1): the actor holds no GPU itself and runs in
  bundle 0 of the member's ``STRICT_PACK`` placement group with
  ``placement_group_capture_child_tasks=True``; vLLM, finding itself inside a placement group,
  picks its Ray executor and starts one worker per GPU bundle. ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
  keeps vLLM's engine core in the actor process, where the group is visible.

Actor names are ``<ensemble>.<member>`` so they can be told apart in ``ray list actors``.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from verinet.backends.base import GenerateResult, ScoreResult, TaggedResult, TokenLogprobs, peak_memory
from verinet.backends.config import MemberSpec
from verinet.cluster.placement import MemberPlacement

DEFAULT_MAX_RESTARTS = 3
TP_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def actor_name(ensemble: str, member: str) -> str:
    return f"{ensemble}.{member}"


def create_group(mp: MemberPlacement, name: str) -> PlacementGroup | None:
    """The placement group of a tensor-parallel member (None for a member without one)."""
    if not mp.uses_group:
        return None
    return placement_group([dict(b) for b in mp.bundles], strategy=mp.strategy or "STRICT_PACK", name=name)


def actor_options(mp: MemberPlacement, *, name: str | None = None, max_restarts: int = DEFAULT_MAX_RESTARTS,
                  group: PlacementGroup | None = None, backend: str | None = None) -> dict[str, Any]:
    """The ``.options(...)`` of one member's actor; the same for the real actor and a dry-run probe."""
    opts: dict[str, Any] = {"num_cpus": mp.num_cpus, "num_gpus": mp.num_gpus,
                            "max_restarts": max_restarts, "max_task_retries": 0, "max_concurrency": 1}
    if name:
        opts["name"] = name
    if mp.custom:  # Ray custom resources: the nodes that declare them (inside bundle 0 for a TP group)
        opts["resources"] = dict(mp.custom)
    if mp.uses_group:
        if group is None:
            raise ValueError(f"member {mp.name}: tensor parallelism needs its placement group (create_group)")
        opts["num_gpus"] = 0
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)
        if backend == "vllm":
            opts["runtime_env"] = {"env_vars": dict(TP_ENV)}
    return opts


def _where() -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    pg = ray.util.get_current_placement_group()
    return {"pid": os.getpid(), "node_id": ctx.get_node_id(), "assigned": ctx.get_assigned_resources(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "placement_group": pg.id.hex() if pg else None,
            "restarted": ctx.was_current_actor_reconstructed if ctx.get_actor_id() else False}


class _ModelActor:
    """A backend built from a member spec, behind the same calls as the backend itself."""

    def __init__(self, spec: MemberSpec) -> None:
        from verinet.backends import BackendError, make_backend

        self.spec = spec
        try:
            self.backend = make_backend(spec)
        except Exception as e:  # one line that names the member; Ray shows it to the driver
            detail = " ".join(f"{type(e).__name__}: {e}".split())[:400]
            raise BackendError(f"member {spec.name}: cannot load {spec.model!r} with backend "
                               f"{spec.backend}: {detail}") from e

    def generate(self, prompts: list[str], **kwargs: Any) -> GenerateResult:
        return self.backend.generate(prompts, **kwargs)

    def score(self, prompts: list[str], candidates: list[str]) -> ScoreResult:
        return self.backend.score(prompts, candidates)

    def score_tagged(self, texts: list[str], tag: str, valid: str, invalid: str) -> TaggedResult:
        return self.backend.score_tagged(texts, tag, valid, invalid)

    def token_logprobs(self, texts: list[str]) -> TokenLogprobs:
        return self.backend.token_logprobs(texts)

    def score_steps(self, texts: list[str]) -> TaggedResult:
        return self.backend.score_steps(texts)

    def token_scores(self, texts: list[str]) -> TokenLogprobs:
        return self.backend.token_scores(texts)

    def info(self) -> dict[str, Any]:
        return {**self.backend.info(), "member": self.spec.name, **_where(), **peak_memory()}

    def health(self, deep: bool = False) -> bool:
        """True once the model is loaded; ``deep`` also runs a one-token generation (a process reward
        model scores one tagged step instead)."""
        if deep and self.spec.prm_step_tag is not None:
            self.backend.score_steps([f"1{self.spec.prm_step_tag}"])
        elif deep and self.spec.verifier == "prm":
            self.backend.token_scores(["1"])
        elif deep:
            self.backend.generate(["1"], max_tokens=1)
        return True

    def pid(self) -> int:
        return os.getpid()

    def __repr__(self) -> str:  # Ray shows this in logs and errors
        return f"ModelActor({self.spec.name})"


class _PlacementProbe:
    """A dry-run stand-in: scheduled with a member's real options, loads no model.

    It reports what Ray gave it; for a tensor-parallel member it also starts one task per GPU
    bundle of its group, as vLLM's Ray executor does for its workers.
    """

    def __init__(self, spec: MemberSpec) -> None:
        self.spec = spec

    def info(self) -> dict[str, Any]:
        return {"backend": "probe", "member": self.spec.name, **_where()}

    def health(self, deep: bool = False) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    def group_workers(self) -> list[dict[str, Any]]:
        """One GPU task per GPU bundle of this actor's placement group, as a TP engine would start."""
        pg = ray.util.get_current_placement_group()
        if pg is None:
            return []
        refs = []
        for i, b in enumerate(pg.bundle_specs):
            if b.get("GPU", 0) > 0:
                where = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=i)
                opts = {"num_cpus": 0, "num_gpus": b["GPU"], "scheduling_strategy": where}
                refs.append(_bundle_worker.options(**opts).remote())
        return ray.get(refs)


@ray.remote
def _bundle_worker() -> dict[str, Any]:
    return _where()


ModelActor = ray.remote(_ModelActor)
PlacementProbe = ray.remote(_PlacementProbe)
