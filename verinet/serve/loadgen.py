"""A small closed-loop load generator for the endpoint (load tests and benchmarks/serve.py).

    >>> r = run_load(url, bodies, clients=8, seconds=5)
    >>> r.p50_s, r.p99_s, r.throughput, r.errors

Each of ``clients`` threads sends the next body (round robin, offset per client) as soon as its
previous request is answered, for ``seconds``; every request is recorded with its status and
latency. Anything but a 2xx (or a transport error) counts as an error.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadResult:
    clients: int
    seconds: float  # wall time of the whole run
    latencies_s: list[float] = field(default_factory=list)  # answered requests (any status)
    statuses: Counter = field(default_factory=Counter)  # status code (or exception name) -> count
    items: int = 0  # chains verified in 2xx answers

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if not (isinstance(s, int) and 200 <= s < 300))

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        xs = sorted(self.latencies_s)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    @property
    def p50_s(self) -> float:
        return self.quantile(0.5)

    @property
    def p99_s(self) -> float:
        return self.quantile(0.99)

    def row(self) -> dict[str, Any]:
        return {"clients": self.clients, "requests": self.requests, "errors": self.errors,
                "seconds": round(self.seconds, 3), "throughput_rps": round(self.throughput, 2),
                "chains_per_s": round(self.items / self.seconds, 2) if self.seconds else 0.0,
                "p50_ms": round(1000 * self.p50_s, 2), "p99_ms": round(1000 * self.p99_s, 2),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)}}


def run_load(url: str, bodies: Sequence[dict], *, clients: int, seconds: float, path: str = "/v1/verify",
             token: str | None = None, timeout_s: float = 120.0,
             on_response: Callable[[int, dict | None], None] | None = None) -> LoadResult:
    """``clients`` concurrent closed-loop clients POSTing ``bodies`` to ``url + path`` for ``seconds``."""
    import requests

    if not bodies:
        raise ValueError("run_load needs at least one body")
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    payloads = [json.dumps(b).encode() for b in bodies]  # encoded once: the clients' CPU is not the server's
    parse = on_response is not None or path.endswith("/batch")  # only then is the answer's body needed
    result = LoadResult(clients, 0.0)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        session = requests.Session()
        i = k
        start.wait()
        while time.monotonic() < stop_at[0]:
            payload = payloads[i % len(payloads)]
            i += clients
            t0 = time.monotonic()
            try:
                r = session.post(url + path, data=payload, headers=headers, timeout=timeout_s)
                status: int | str = r.status_code
                data = (r.json() if parse and r.headers.get("content-type", "").startswith("application/json")
                        else None)
            except requests.RequestException as e:
                status, data = type(e).__name__, None
            dt = time.monotonic() - t0
            n_items = len(data.get("results", [])) if isinstance(data, dict) and "results" in data else 1
            with lock:
                result.statuses[status] += 1
                result.latencies_s.append(dt)
                if isinstance(status, int) and 200 <= status < 300:
                    result.items += n_items
            if on_response is not None:
                on_response(status if isinstance(status, int) else -1, data)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - t0
    return result


__all__ = ["LoadResult", "run_load"]
