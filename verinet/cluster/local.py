"""Starting or joining Ray for a verinet command, keeping a local Ray on loopback."""

from __future__ import annotations

import os

from verinet.signals import stop_on_sigterm

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else Ray binds the machine's external interface
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


def init_ray(address: str | None = None, *, num_cpus: float | None = None) -> None:
    """Join the cluster at ``address`` (or RAY_ADDRESS, as under ``ray job submit``), else start
    an in-process Ray bound to 127.0.0.1 with token auth off."""
    for k, v in LOOPBACK_ENV.items():
        os.environ.setdefault(k, v)
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    # ray.init puts its own handler on SIGTERM in the driver, which logs and aborts: the local Ray's raylet,
    # dashboard and runtime-env agents would then outlive the command. Take SIGTERM back, so it ends the
    # command as Ctrl-C does and Ray's exit hook runs.
    stop_on_sigterm()
