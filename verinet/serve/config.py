"""The serve config (configs/serve-*.yaml): the ensemble, the bind address, auth, limits, scaling.

    >>> cfg = load_serve_config("configs/serve-local.yaml")
    >>> token = resolve_token(cfg)          # raises ServeConfigError when auth cannot be met

Auth (``auth.mode``):

* ``auto`` (default): a bearer token is required when one is configured (``auth.token``, or the
  environment variable named by ``auth.token_env``); with no token the server only starts on a
  loopback address (127.0.0.0/8, ::1, localhost);
* ``token``: a token is always required, and must be configured;
* ``none``: no auth at all, on any address (the explicit opt-out; ``verinet serve --insecure``).

``/healthz``, ``/readyz``, ``/docs`` and ``/openapi.json`` never need the token; ``/metrics``
needs it unless ``auth.public_metrics`` is true.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from verinet.backends.config import EnsembleConfig, EnsembleConfigError, load_ensemble_config
from verinet.graph.aggregate import ReliabilityTable
from verinet.schema import load_yaml_config, resolve_config_path

Topology = Literal["all_pairs", "ring", "k_random"]
Aggregation = Literal["mean", "vote", "logodds", "dawid_skene", "one_coin"]


class ServeConfigError(ValueError):
    """A serve config that cannot be used; the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(_Strict):
    mode: Literal["auto", "token", "none"] = Field(
        default="auto",
        description="auto: a token when one is configured, required off loopback; token: always; none: off")
    token_env: str = Field(default="VERINET_API_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                           description="environment variable holding the bearer token")
    token: SecretStr | None = Field(default=None, description="the token itself (prefer token_env)")
    public_metrics: bool = Field(default=False, description="serve /metrics without the token")


class Limits(_Strict):
    """Per-request limits; a request over one gets 413 (body bytes) or 422 (steps, characters, batch)."""

    max_steps: int = Field(default=64, ge=1, le=10_000, description="steps per chain")
    max_chars: int = Field(default=8000, ge=16, le=10_000_000,
                           description="characters per chain: question + steps + answer")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=256 * 2**20, description="request body bytes")
    max_batch: int = Field(default=16, ge=1, le=1024, description="chains per /v1/verify/batch request")


class Autoscaling(_Strict):
    """Ray Serve autoscaling of each member deployment (see Ray Serve's AutoscalingConfig)."""

    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    target_ongoing_requests: float = Field(default=4.0, gt=0, description="ongoing requests per replica")
    upscale_delay_s: float = Field(default=10.0, ge=0)
    downscale_delay_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _range(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is more than max_replicas "
                             f"{self.max_replicas}")
        return self

    def serve_dict(self) -> dict[str, Any]:
        return self.model_dump()


class Defaults(_Strict):
    """What a request gets when it does not say."""

    topology: Topology = "all_pairs"
    k: int = Field(default=2, ge=1, description="verifiers per chain for topology k_random")
    aggregation: Aggregation = "mean"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="P(valid) below this is an error")


class ServeConfig(_Strict):
    ensemble: str | EnsembleConfig = Field(
        description="an ensemble YAML (relative to the working directory, else to this file), or the "
                    "members inline")
    host: str = Field(default="127.0.0.1", description="address the HTTP proxy binds")
    port: int = Field(default=8000, ge=1, le=65535)
    app_name: str = Field(default="verinet", pattern=r"^[A-Za-z0-9][\w.-]*$")
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: Limits = Field(default_factory=Limits)
    defaults: Defaults = Field(default_factory=Defaults)
    timeout_s: float = Field(default=60.0, gt=0, le=3600, description="longest a request may take (then 504)")
    member_timeout_s: float = Field(default=30.0, gt=0, le=3600,
                                    description="longest wait for one member; then it counts as missing")
    max_queue: int = Field(default=32, ge=1, le=100_000,
                           description="verification requests in flight before new ones get 503")
    retry_after_s: int = Field(default=1, ge=1, le=3600, description="Retry-After of a 503")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    colocate: bool = Field(
        default=False,
        description="true: every member runs inside one ingress replica (no per-member deployments, no hops "
                    "between Ray actors: the fastest path on a few CPUs); CPU members only. There is one replica, "
                    "so autoscaling, max_batch_size and batch_wait_timeout_s do not apply, and the members fail "
                    "together: a member that errors is still outvoted by the quorum, a killed replica is restarted "
                    "by Serve. false: one autoscaled deployment per member")
    max_batch_size: int = Field(
        default=32, ge=1, le=4096,
        description="requests a member replica scores in one forward pass (serve.batch)")
    batch_wait_timeout_s: float = Field(
        default=0.0, ge=0, le=10, description="how long a member waits to fill a batch; 0 still batches the "
        "requests that queued during the previous forward pass, without delaying a lone one")
    health_interval_s: float = Field(default=5.0, gt=0, le=3600, description="member health polling period")
    agreement_window: int = Field(
        default=500, ge=10, le=1_000_000,
        description="recent verified items behind the rolling kappa and disagreement")
    reliabilities: str | dict[str, Any] | None = Field(
        default=None, description="Dawid-Skene / one-coin reliabilities learned where there is data: a "
        "`verinet compare` run's reliabilities.json (PATH or PATH#SLICE), read when the config is loaded. "
        "Without one, a rolling fit over recent traffic, and log-odds until the window holds enough items")
    reliability_window: int = Field(default=2000, ge=10, le=1_000_000,
                                    description="recent verified items behind the rolling reliabilities")
    reliability_min_items: int = Field(default=200, ge=1, le=1_000_000,
                                       description="items the window needs before the rolling fit is used")
    ray_address: str | None = Field(default=None,
                                    description="join this Ray cluster (else RAY_ADDRESS, else a local Ray)")
    num_cpus: float | None = Field(default=None, gt=0,
                                   description="CPUs a local Ray declares (default: detected)")

    @field_validator("auth", mode="before")
    @classmethod
    def _auth_shorthand(cls, v: Any) -> Any:
        if v in ("none", "token", "auto"):  # `auth: none` is the explicit opt-out
            return {"mode": v}
        return v

    @model_validator(mode="after")
    def _timeouts(self) -> ServeConfig:
        if self.member_timeout_s > self.timeout_s:
            raise ValueError(f"member_timeout_s {self.member_timeout_s:g} is longer than timeout_s "
                             f"{self.timeout_s:g}: a missing member could never count as missing")
        if self.reliability_min_items > self.reliability_window:
            raise ValueError(f"reliability_min_items {self.reliability_min_items} exceeds reliability_window "
                             f"{self.reliability_window}: the rolling fit could never be used")
        return self

    def reliability_table(self, base_dir: Path | None = None) -> ReliabilityTable | None:
        """The configured table (read from its file, or inline), or None."""
        from verinet.serve.reliability import load_table

        if self.reliabilities is None:
            return None
        try:
            if isinstance(self.reliabilities, dict):
                return ReliabilityTable.from_dict(self.reliabilities)
            return load_table(self.reliabilities, base_dir)
        except ValueError as e:
            raise ServeConfigError(str(e)) from None

    def ensemble_config(self, base_dir: Path | None = None, check_models: bool = True) -> EnsembleConfig:
        """The members: the inline config, or the YAML read from the working directory or ``base_dir``."""
        if isinstance(self.ensemble, EnsembleConfig):
            cfg = self.ensemble
            if check_models:
                try:
                    for m in cfg.members:
                        m.model_location()
                except EnsembleConfigError as e:
                    raise ServeConfigError(f"ensemble: {e}") from None
            return cfg
        p = Path(self.ensemble)
        if not p.is_file() and base_dir is not None and (base_dir / p).is_file():
            p = base_dir / p
        try:
            return load_ensemble_config(p, check_models=check_models)
        except EnsembleConfigError as e:
            raise ServeConfigError(f"ensemble: {e}") from None

    def with_ensemble(self, ensemble: EnsembleConfig) -> ServeConfig:
        """The same config with the members inline (what the Serve app is built from)."""
        return self.model_copy(update={"ensemble": ensemble})


def colocated_resources(members) -> tuple[float, float]:
    """(CPUs, GPUs) of one replica hosting every member (``colocate: true``); members that need a GPU
    or their own placement are refused, since they cannot share one process."""
    from verinet.cluster.placement import member_request

    reqs = [(m, member_request(m)) for m in members]
    bad = [m.name for m, mp in reqs if mp.uses_group or mp.custom or mp.gpus_total > 0]
    if bad:
        raise ServeConfigError(f"colocate: members {bad} need a GPU or their own placement (tensor parallel, custom "
                               "resources), which members sharing one process cannot have; use colocate: false")
    return sum(mp.num_cpus for _, mp in reqs), 0.0


def load_serve_config(path: str | Path, *, check_models: bool = True) -> ServeConfig:
    """Read and validate a serve YAML; the ensemble and the reliability table are resolved and put inline."""
    cfg = load_yaml_config(path, ServeConfig, ServeConfigError, "see configs/serve-local.yaml")
    base = resolve_config_path(path).parent
    cfg = cfg.with_ensemble(cfg.ensemble_config(base, check_models=check_models))
    if cfg.colocate:
        colocated_resources(cfg.ensemble.members)
    table = cfg.reliability_table(base)
    return cfg if table is None else cfg.model_copy(update={"reliabilities": table.to_dict()})


def is_loopback(host: str) -> bool:
    if host.strip().lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(cfg: ServeConfig, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token the server will require (None: no auth); raises when the auth rule is not met."""
    env = os.environ if environ is None else environ
    a = cfg.auth
    if a.mode == "none":
        return None
    token = a.token.get_secret_value() if a.token is not None else env.get(a.token_env) or None
    if token is not None and len(token) < 16:
        raise ServeConfigError(f"auth: the token is {len(token)} characters; use at least 16 "
                               "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if token is None and (a.mode == "token" or not is_loopback(cfg.host)):
        why = "auth.mode is token" if a.mode == "token" else f"host {cfg.host} is not a loopback address"
        raise ServeConfigError(
            f"auth: {why} and no bearer token is configured: set the environment variable {a.token_env} "
            "(or auth.token), or opt out explicitly with `auth: none` in the config or "
            "`verinet serve --insecure`")
    return token


def token_digest(token: str | None) -> str | None:
    """What the ingress keeps instead of the token itself (SHA-256 hex)."""
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()


__all__ = ["Aggregation", "AuthConfig", "Autoscaling", "Defaults", "Limits", "ServeConfig",
           "ServeConfigError", "Topology", "is_loopback", "load_serve_config", "resolve_token",
           "token_digest"]
