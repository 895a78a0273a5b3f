"""A free TCP port for a server that another process (a subprocess, Ray Serve's proxy) binds later.

The usual recipe, ``bind(("127.0.0.1", 0))`` then close, hands out a port from the kernel's
ephemeral range, and the kernel may give that same port to the next process that binds port 0
before the server binds it. Ray starts a dozen such processes (raylet, agents, metrics exporters)
in the seconds before Serve's proxy binds its port: in a CI run of 2026-12-01 one of them held the
port that ``verinet serve`` was told to use, answered ``GET /readyz`` with 200 and ``POST
/v1/verify`` with 405. :func:`free_port` therefore picks a port below the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768 by default) and above Ray's worker ports
(10002-19999 by default), where only a process told that port binds it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 20000  # above Ray's default worker ports (--min-worker-port 10002 .. --max-worker-port 19999)


def ephemeral_low(path: Path = EPHEMERAL_RANGE_FILE) -> int:
    """The lowest port the kernel hands to ``bind(0)`` (32768 where the file cannot be read)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _binds(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, tries: int = 200) -> int:
    """A port on ``host`` that is free now, outside the range the kernel gives to ``bind(0)``.

    Falls back to a kernel-chosen port when no port between 20000 and the ephemeral range is
    free after ``tries`` random picks (or the ephemeral range starts below 20000)."""
    high = ephemeral_low() - 1
    rng = random.SystemRandom()
    if high > LOWEST:
        for _ in range(tries):
            port = rng.randint(LOWEST, high)
            if _binds(host, port):
                return port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


__all__ = ["ephemeral_low", "free_port"]
