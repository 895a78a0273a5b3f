"""``verinet serve`` and ``verinet monitor`` (registered on the main app in verinet/cli.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

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
    if local:
        from verinet.serve.local import serve_local

        srv = serve_local(cfg, token, log_level="info")
        url = srv.url
    else:
        from verinet.serve.app import start

        url = start(cfg, token, ray_address=ray_address)
    console.print(f"verinet serving at {url}  (docs {url}/docs, metrics {url}/metrics, auth {auth})",
                  highlight=False)
    console.print("press Ctrl-C to stop", style="dim")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if local:
            srv.stop()
        else:
            from ray import serve

            serve.delete(cfg.app_name)
            if not (ray_address or cfg.ray_address or os.environ.get("RAY_ADDRESS")):
                serve.shutdown()


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
