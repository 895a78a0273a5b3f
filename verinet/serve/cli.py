"""``verinet serve`` and ``verinet monitor`` (registered on the main app in verinet/cli.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from verinet.signals import interrupt

console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def serve_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Serve YAML, e.g. configs/serve-local.yaml")],
    host: Annotated[Optional[str], typer.Option(help="Bind address (overrides the config).")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535,
                                                help="Port (overrides the config).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="No auth, on any address (the explicit "
                                           "opt-out; same as `auth: none`).")] = False,
    local: Annotated[bool, typer.Option("--local", help="Without Ray: the members in this process, under "
                                        "uvicorn (development).")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster (default: RAY_ADDRESS, "
                                                       "else a local Ray).")] = None,
) -> None:
    """Serve the verification endpoint (Ray Serve, FastAPI ingress) until Ctrl-C."""
    from verinet.serve.config import ServeConfigError, load_serve_config, resolve_token

    try:
        cfg = load_serve_config(config)
        update = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        if insecure:
            update["auth"] = cfg.auth.model_copy(update={"mode": "none"})
        cfg = cfg.model_copy(update=update)
        token = resolve_token(cfg)
    except ServeConfigError as e:
        raise _fail(str(e)) from None
    auth = (f"bearer token from {cfg.auth.token_env if cfg.auth.token is None else 'the config'}" if token
            else "off")
    # SIGTERM (docker stop, kubectl, systemd) stops the endpoint exactly as Ctrl-C does: Serve's app, then
    # the Ray this command started with every process of it (raylet, dashboard agent, runtime-env agent).
    # Left to Python's default, SIGTERM ends this process at once and Ray's helpers outlive it.
    # SIGINT gets the same handler, set explicitly and unblocked: a parent that ignored or blocked it (a CI
    # runner, a supervisor) would otherwise leave Ctrl-C without effect and the endpoint running.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    previous = signal.signal(signal.SIGTERM, interrupt)
    previous_int = signal.signal(signal.SIGINT, interrupt)
    srv = None
    started_ray = False
    try:
        if local:
            from verinet.serve.local import serve_local

            srv = serve_local(cfg, token, log_level="info")
            url = srv.url
        else:
            import ray

            from verinet.serve.app import start

            started_ray = not (ray.is_initialized() or ray_address or cfg.ray_address or os.environ.get("RAY_ADDRESS"))
            url = start(cfg, token, ray_address=ray_address)
            # ray.init installs its own SIGTERM handler in the driver (it logs and aborts): take it back
            # (a joined cluster too; init_ray does it for the local one).
            signal.signal(signal.SIGTERM, interrupt)
            signal.signal(signal.SIGINT, interrupt)
        console.print(f"verinet serving at {url}  (docs {url}/docs, metrics {url}/metrics, auth {auth})",
                      highlight=False)
        console.print("press Ctrl-C to stop", style="dim")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop at a time
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts the stop
        try:
            _stop(cfg, srv, local=local, started_ray=started_ray)
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    console.print("stopped", style="dim")


def _stop(cfg: object, srv: object, *, local: bool, started_ray: bool) -> None:
    if local:
        if srv is not None:
            srv.stop()  # type: ignore[attr-defined]
        return
    import ray

    if not ray.is_initialized():
        return
    from ray import serve

    try:
        serve.delete(cfg.app_name)  # type: ignore[attr-defined]
        if started_ray:
            serve.shutdown()
    finally:
        if started_ray:
            ray.shutdown()  # the local Ray's processes end with it


def monitor_command(
    url: Annotated[str, typer.Option("--url", "-u", help="The endpoint (or its /metrics), e.g. "
                                     "http://127.0.0.1:8000")] = "http://127.0.0.1:8000",
    token: Annotated[Optional[str], typer.Option(help="Bearer token for /metrics.",
                                                 envvar="VERINET_API_TOKEN", show_envvar=True)] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between scrapes.")] = 2.0,
    iterations: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many updates "
                                                      "(default: until Ctrl-C).")] = None,
    once: Annotated[bool, typer.Option("--once", help="One scrape, print and exit (figures since the "
                                       "server started).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Live view of agreement, throughput, latency and per-member reliability, from /metrics."""
    from verinet.serve.monitor import MonitorError, run

    try:
        run(url, token=token, interval_s=interval, iterations=iterations, once=once, as_json=as_json,
            console=console)
    except MonitorError as e:
        raise _fail(str(e), code=1) from None


__all__ = ["monitor_command", "serve_command"]
