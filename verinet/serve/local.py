"""The endpoint without Ray: in-process members behind the same FastAPI app, under uvicorn.

For tests, the benchmark's baseline, and ``verinet serve --local`` on a laptop::

    >>> with serve_local(cfg) as srv:         # 127.0.0.1, a free port unless cfg.port is set
    ...     requests.post(f"{srv.url}/v1/verify", json={...})
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from verinet.serve.config import ServeConfig, token_digest
from verinet.serve.engine import VerifyEngine
from verinet.serve.members import LocalMember
from verinet.serve.http import create_app


def local_engine(cfg: ServeConfig) -> VerifyEngine:
    """An engine whose members are backends loaded in this process (``cfg.ensemble`` must be resolved)."""
    ens = cfg.ensemble_config()
    members = {m.name: LocalMember(m) for m in ens.members}
    return VerifyEngine(cfg, members, ens.members, quorum=ens.quorum)


@dataclass
class LocalServer:
    server: Any
    thread: threading.Thread
    sock: socket.socket
    host: str
    port: int
    engine: VerifyEngine

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_local(cfg: ServeConfig, token: str | None = None, *, engine: VerifyEngine | None = None,
                port: int | None = None, log_level: str = "warning",
                startup_timeout_s: float = 120.0) -> LocalServer:
    """Start uvicorn in a background thread on ``cfg.host`` (``port`` 0: a free one) and return its handle."""
    from verinet.backends.server import start_in_thread

    engine = engine or local_engine(cfg)
    app = create_app(engine, token_digest(token))
    host = cfg.host
    try:
        server, thread, sock, bound = start_in_thread(app, host, cfg.port if port is None else port,
                                                      lifespan="on", log_level=log_level,
                                                      startup_timeout_s=startup_timeout_s)
    except TimeoutError as e:
        raise RuntimeError(str(e)) from None
    return LocalServer(server, thread, sock, host, bound, engine)


__all__ = ["LocalServer", "local_engine", "serve_local"]
