"""The verification endpoint: Ray Serve deployments behind a FastAPI ingress, its metrics, a monitor.

Modules, each importable on its own:

* :mod:`~verinet.serve.config` -- ``ServeConfig`` (configs/serve-*.yaml) and the auth rule;
* :mod:`~verinet.serve.api` -- request and response bodies (the OpenAPI schema);
* :mod:`~verinet.serve.metrics` -- Prometheus metrics; ``AgreementMetrics`` needs neither Ray nor FastAPI;
* :mod:`~verinet.serve.chains` -- a client's chain as records (limits, family readers, exact checker);
* :mod:`~verinet.serve.members` -- member clients: ``Scorer`` (backend + prompt format), ``LocalMember``;
* :mod:`~verinet.serve.engine` -- ``VerifyEngine``: members verify, the graph decides (no Ray, no HTTP);
* :mod:`~verinet.serve.http` -- the FastAPI app; :mod:`~verinet.serve.local` -- it under uvicorn, no Ray;
* :mod:`~verinet.serve.app` -- the Ray Serve application (``build_app``, ``app_builder``, ``start``);
* :mod:`~verinet.serve.monitor` -- the terminal view over ``/metrics``.

Nothing heavy is imported here.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ServeConfig": "verinet.serve.config", "ServeConfigError": "verinet.serve.config",
    "load_serve_config": "verinet.serve.config", "resolve_token": "verinet.serve.config",
    "AgreementMetrics": "verinet.serve.metrics", "ServiceMetrics": "verinet.serve.metrics",
    "VerifyEngine": "verinet.serve.engine", "create_app": "verinet.serve.http",
    "serve_local": "verinet.serve.local",
    "build_app": "verinet.serve.app", "app_builder": "verinet.serve.app", "start": "verinet.serve.app",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verinet.serve' has no attribute {name!r}")


__all__ = sorted(_LAZY)
