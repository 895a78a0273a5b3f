"""A free TCP port for a server that another process (a subprocess, Ray Serve's proxy) binds later.

The usual recipe, ``bind(("127.0.0.1", 0))`` then close, hands out a port from the kernel's
ephemeral range, and the kernel may give that same port to the next process that binds port 0
before the server binds it. Ray starts a dozen processes in the seconds before Serve's proxy binds
its port, and they take ports from that range (port 0, or a random port above one the kernel gave):
in a CI run of 2026-12-01 one of them held the port that ``verinet serve`` was told to use, and
answered ``GET /readyz`` with 200 and ``POST /v1/verify`` with 405.

:func:`free_port` therefore picks a random port from 20000 to 29999, and checks that it is free
on the given host and on every address. That range lies below the kernel's ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768 by default), above ``ray start``'s worker ports
(10002-19999 by default), and below the ports Ray Serve's direct ingress hands to replicas without
a check (30000-31000, when ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` or ``RAY_SERVE_ENABLE_DIRECT_INGRESS``
is set) and Kubernetes' NodePorts (30000-32767).
"""

from __future__ import annotations

import random
import socket
import warnings
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 20000  # above `ray start`'s default worker ports (--min-worker-port 10002 .. --max-worker-port 19999)
CEILING = 30000  # Ray Serve direct ingress (30000-31000) and Kubernetes NodePorts (30000-32767) start here


def ephemeral_low(path: Path = EPHEMERAL_RANGE_FILE) -> int:
    """The lowest port the kernel hands to ``bind(0)`` (32768 where the file cannot be read)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _binds(host: str, port: int) -> bool:
    with socket.socket(_family(host)) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, tries: int = 200) -> int:
    """A port that is free now on ``host`` and on every address, outside the ranges above.

    Where no such port is free after ``tries`` random picks, or the kernel's ephemeral range
    starts at or below 20000, this warns and returns a port the kernel chose, with the race
    this module exists to avoid."""
    high = min(ephemeral_low(), CEILING) - 1
    wildcard = "::" if _family(host) == socket.AF_INET6 else "0.0.0.0"
    rng = random.SystemRandom()
    if high >= LOWEST:
        for _ in range(tries):
            port = rng.randint(LOWEST, high)
            if _binds(host, port) and _binds(wildcard, port):
                return port
    warnings.warn(f"no free port from {LOWEST} to {high} on {host}; using one from the kernel's ephemeral "
                  "range, which another process binding port 0 may take first", RuntimeWarning, stacklevel=2)
    with socket.socket(_family(host)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


__all__ = ["ephemeral_low", "free_port"]
