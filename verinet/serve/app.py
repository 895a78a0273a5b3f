"""The Ray Serve application: one deployment per ensemble member, and a FastAPI ingress.

    >>> url = start(load_serve_config("configs/serve-local.yaml"), token=None)   # `verinet serve`
    >>> serve.run(build_app(cfg, token), name=cfg.app_name)                      # the same, by hand

``app_builder`` is the import path for ``serve run`` and a KubeRay RayService::

    import_path: verinet.serve.app:app_builder
    args: {config: configs/serve-local.yaml}

* ``Member`` -- one deployment per member, named after it, with the config's autoscaling; its
  constructor loads the model; ``verify`` is a ``serve.batch`` method, so concurrent requests
  share one forward pass (up to ``max_batch_size``);
* ``Ingress`` -- the FastAPI app of :mod:`verinet.serve.http` over a
  :class:`~verinet.serve.engine.VerifyEngine` whose members are the deployments' handles. It keeps
  the SHA-256 of the token, never the token. Its metrics are its own process's: run one ingress
  replica (the default) so that ``/metrics`` sees every request.

With ``colocate: true`` there are no member deployments: the one ingress replica loads every
member in its own process (:class:`~verinet.serve.members.LocalMember`) and asks for their CPUs
and GPUs, so a request makes one hop (proxy to ingress) instead of one per member.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import ray
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.handle import DeploymentHandle

from verinet.backends.config import EnsembleConfig, MemberSpec
from verinet.backends.formats import VerifyItem
from verinet.serve.config import ServeConfig, colocated_resources, load_serve_config, resolve_token, token_digest
from verinet.serve.engine import VerifyEngine
from verinet.serve.members import MemberAnswer, MemberFailure, Scorer

INGRESS = "ingress"
TP_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def _short(e: BaseException) -> str:
    from verinet.cluster.ensemble import short_error

    return short_error(e)


@serve.deployment
class Member:
    """One ensemble member: its backend and prompt format, scoring batched requests."""

    def __init__(self, spec: dict[str, Any], max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.spec = MemberSpec.model_validate(spec)
        self.scorer = Scorer(self.spec)
        ctx = ray.get_runtime_context()
        self.replica, self.actor_id = ctx.get_actor_name() or f"pid:{os.getpid()}", ctx.get_actor_id()
        self.verify.set_max_batch_size(max_batch_size)
        self.verify.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batches = self.batched_requests = 0  # this replica's, since it started

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def verify(self, requests: list[list[VerifyItem]]) -> list[dict[str, Any]]:
        self.batches += 1
        self.batched_requests += len(requests)
        flat = [tuple(it) for r in requests for it in r]
        rows = await self.scorer.score_async(flat)
        out, k = [], 0
        for r in requests:
            out.append({"p_valid": rows[k:k + len(r)], "replica": self.replica, "actor_id": self.actor_id,
                        "version": self.scorer.version})
            k += len(r)
        return out

    async def health(self) -> dict[str, Any]:
        return {**self.scorer.describe(), "replica": self.replica, "actor_id": self.actor_id,
                "pid": os.getpid(), "batches": self.batches, "batched_requests": self.batched_requests}


class ServeMember:
    """A member deployment's handle as the engine's member client.

    It remembers the replicas that answered (by actor name), so that the engine can ask which of
    them are gone (:meth:`gone_replicas`) when a replica dies without any call seeing it die.
    """

    def __init__(self, name: str, handle: DeploymentHandle) -> None:
        self.name, self.handle = name, handle
        self._seen: dict[str, float] = {}  # replica actor name -> when it last answered
        self._names: dict[str, str] = {}  # actor id -> replica actor name

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            d = await getattr(self.handle, method).remote(*args)
        except ActorUnavailableError as e:  # briefly unreachable, not dead: first, as it subclasses RayActorError
            raise MemberFailure("error", _short(e)) from None
        except (ActorDiedError, RayActorError) as e:  # the replica died (Serve replaces it)
            actor = getattr(e, "actor_id", None)
            replica = self._names.get(str(actor), str(actor)) if actor else None
            raise MemberFailure("died", _short(e), replica=replica) from None
        except RayTaskError as e:
            raise MemberFailure("error", _short(e)) from None
        self._seen[d["replica"]] = time.monotonic()
        self._names[d["actor_id"]] = d["replica"]
        return d

    async def verify(self, items: list[VerifyItem]) -> MemberAnswer:
        d = await self._call("verify", items)
        return MemberAnswer(d["p_valid"], d["replica"], d.get("version"))

    async def health(self) -> dict[str, Any]:
        return await self._call("health")

    async def gone_replicas(self) -> tuple[dict[str, float], int]:
        """Replicas that answered before and are no longer alive (name -> when they last answered),
        and how many of those that answered are still alive."""

        def alive(name: str) -> bool:
            try:
                ray.get_actor(name, namespace="serve")
                return True
            except ValueError:
                return False

        gone = {}
        for name, seen in list(self._seen.items()):
            if not await asyncio.to_thread(alive, name):
                gone[name] = seen
                self._seen.pop(name, None)
        return gone, len(self._seen)


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(self, config: dict[str, Any], token_sha256: str | None,
                 members: dict[str, DeploymentHandle] | None) -> None:
        self.config = ServeConfig.model_validate(config)
        if members is None:  # colocate: the members run in this replica
            from verinet.serve.local import local_engine

            self.engine = local_engine(self.config)
        else:
            ens = self.config.ensemble_config(check_models=False)
            clients = {n: ServeMember(n, h) for n, h in members.items()}
            self.engine = VerifyEngine(self.config, clients, ens.members, quorum=ens.quorum)
        self.token_sha256 = token_sha256

    def __serve_build_asgi_app__(self) -> Any:
        from verinet.serve.http import create_app

        return create_app(self.engine, self.token_sha256)


def member_options(spec: MemberSpec, cfg: ServeConfig) -> dict[str, Any]:
    """The Serve deployment options of one member: resources, autoscaling, concurrency."""
    from verinet.cluster.placement import member_request

    mp = member_request(spec)
    opts: dict[str, Any] = {
        "name": spec.name,
        "autoscaling_config": cfg.autoscaling.serve_dict(),
        "max_ongoing_requests": max(8, 2 * cfg.max_batch_size),
        "ray_actor_options": {"num_cpus": mp.num_cpus, "num_gpus": mp.num_gpus},
        "health_check_period_s": max(1.0, min(10.0, cfg.health_interval_s)),
    }
    if mp.custom:  # pinned to the nodes that declare them (bundle 0's for a tensor-parallel member)
        opts["ray_actor_options"]["resources"] = dict(mp.custom)
    if mp.uses_group:  # tensor parallel: the replica runs in bundle 0 of a STRICT_PACK group
        opts["placement_group_bundles"] = [dict(b) for b in mp.bundles]
        opts["placement_group_strategy"] = mp.strategy
        opts["ray_actor_options"]["num_gpus"] = 0
        if spec.backend == "vllm":
            opts["ray_actor_options"]["runtime_env"] = {"env_vars": dict(TP_ENV)}
    return opts


def colocated_options(members: list[MemberSpec]) -> dict[str, Any]:
    """The ingress replica's resources when it hosts every member (CPU members only): the sum of theirs."""
    cpus, gpus = colocated_resources(members)
    return {"num_cpus": cpus, "num_gpus": gpus}


def build_app(cfg: ServeConfig, token: str | None) -> serve.Application:
    """The application: the ingress bound to one deployment per member (``cfg.ensemble`` resolved inline)."""
    ens = cfg.ensemble_config(check_models=False)
    if not isinstance(cfg.ensemble, EnsembleConfig):
        cfg = cfg.with_ensemble(ens)
    config = cfg.model_dump(mode="json", exclude={"auth": {"token"}})
    if cfg.colocate:
        return Ingress.options(name=INGRESS, num_replicas=1, max_ongoing_requests=cfg.max_queue + 64,
                               ray_actor_options=colocated_options(ens.members)).bind(config, token_digest(token), None)
    members = {m.name: Member.options(**member_options(m, cfg)).bind(m.model_dump(), cfg.max_batch_size,
                                                                    cfg.batch_wait_timeout_s)
               for m in ens.members}
    ingress = Ingress.options(name=INGRESS, num_replicas=1, max_ongoing_requests=cfg.max_queue + 64,
                              ray_actor_options={"num_cpus": 0})
    return ingress.bind(config, token_digest(token), members)


def app_builder(args: dict[str, Any]) -> serve.Application:
    """For ``serve run verinet.serve.app:app_builder config=...`` and RayService ``import_path``."""
    if "config" not in args:
        raise ValueError("app_builder needs the argument config: a serve YAML, e.g. configs/serve-local.yaml")
    cfg = load_serve_config(args["config"])
    return build_app(cfg, resolve_token(cfg))


def start(cfg: ServeConfig, token: str | None, *, ray_address: str | None = None) -> str:
    """Start (or join) Ray, Serve's proxy on ``cfg.host:cfg.port``, and the app; return its URL when ready."""
    from verinet.cluster.local import init_ray

    init_ray(ray_address or cfg.ray_address, num_cpus=cfg.num_cpus)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(cfg, token), name=cfg.app_name, route_prefix="/", blocking=False)
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    return f"http://{host}:{cfg.port}"


def member_handle(cfg: ServeConfig, member: str) -> DeploymentHandle:
    """The handle of a running member deployment (tools and tests: ``.health.remote()``)."""
    return serve.get_deployment_handle(member, app_name=cfg.app_name)


def kill_member_replica(cfg: ServeConfig, member: str, timeout_s: float = 60.0) -> str:
    """Kill one replica of ``member`` (the one answering a health call); Serve replaces it.

    Returns the replica's actor name.
    """
    name = member_handle(cfg, member).health.remote().result(timeout_s=timeout_s)["replica"]
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return name


__all__ = ["INGRESS", "Ingress", "Member", "ServeMember", "app_builder", "build_app", "colocated_options",
           "kill_member_replica",
           "member_handle", "member_options", "start"]
