"""Where the endpoint's Dawid-Skene / one-coin reliabilities come from.

A chain has 3-6 items: fitting verifier reliabilities on one request is noise. So, in order:

* ``table``   -- a table learned where there is data: the comparison job's ``reliabilities.json``
  (Dawid-Skene clamped to the exact checker's labels on its labelled dev split), named by the
  serve config's ``reliabilities``;
* ``rolling`` -- without one, a fit over the most recent ``reliability_window`` verified items of
  live traffic (unsupervised, refitted every ``REFIT_EVERY`` new items, votes cut at the serve
  config's default threshold), once it holds ``reliability_min_items``;
* ``logodds`` -- until then, plain log-odds pooling (no reliabilities at all).

Requests asking for another aggregation use none (``none``). The source is in every response
(``reliability``) and in ``/metrics`` (``verinet_reliability_source``).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verinet.graph.aggregate import ReliabilityTable, dawid_skene

REFIT_EVERY = 50  # new items between refits of the rolling table
SOURCES = ("table", "rolling", "logodds", "none")


@dataclass
class Choice:
    aggregation: str  # what the graph runs: the request's, or logodds while no reliabilities exist
    table: ReliabilityTable | None
    source: str  # one of SOURCES
    n_items: int  # items behind the table (the window's, for rolling)


def load_table(spec: str | Path, base_dir: Path | None = None) -> ReliabilityTable:
    """A table from ``path`` or ``path#key``: a file holding one table, or a comparison run's
    ``reliabilities.json`` (one table per task slice; ``#key`` picks one when it holds several)."""
    text = str(spec)
    path_s, _, key = text.partition("#")
    path = Path(path_s).expanduser()
    if not path.is_file() and base_dir is not None and (base_dir / path).is_file():
        path = base_dir / path
    if not path.is_file():
        raise ValueError(f"reliabilities: no file {path_s!r}; give a table written by `verinet compare` "
                         "(OUT/reliabilities.json), optionally as PATH#SLICE")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"reliabilities: {path} is not JSON ({e})") from None
    if isinstance(data, dict) and "method" not in data:
        if key:
            if key not in data:
                raise ValueError(f"reliabilities: {path} has no table {key!r}; it has {sorted(data)}")
            data = data[key]
        elif len(data) == 1:
            data = next(iter(data.values()))
        else:
            raise ValueError(f"reliabilities: {path} holds {len(data)} tables ({sorted(data)}); pick one "
                             f"as {path_s}#KEY")
    if not isinstance(data, dict):
        raise ValueError(f"reliabilities: {path} does not hold a table")
    try:
        return ReliabilityTable.from_dict(data)
    except ValueError as e:
        raise ValueError(f"reliabilities: {path}: {e}") from None


class Reliabilities:
    """The endpoint's reliabilities: a loaded table, or a rolling fit over a bounded window of traffic."""

    def __init__(self, table: ReliabilityTable | None = None, *, window: int = 2000, min_items: int = 200,
                 cutoff: float = 0.5) -> None:
        if min_items > window:
            raise ValueError(f"reliability_min_items {min_items} exceeds reliability_window {window}")
        self.table = table
        self.window: deque[Mapping[str, float]] = deque(maxlen=window)
        self.min_items = min_items
        self.cutoff = cutoff  # where a member's vote turns "valid" in the rolling fit (no labels to fit one)
        self._rolling: dict[str, tuple[int, ReliabilityTable]] = {}  # method -> (items observed then, table)
        self._observed = 0
        self._lock = threading.Lock()

    def observe(self, ratings: Mapping[Hashable, Mapping[str, float]]) -> None:
        """Add one request's items (item -> verifier -> P(valid)) to the window."""
        with self._lock:
            for per in ratings.values():
                if per:
                    self.window.append(dict(per))
                    self._observed += 1

    def choose(self, aggregation: str) -> Choice:
        if aggregation not in ("dawid_skene", "one_coin"):
            return Choice(aggregation, None, "none", 0)
        if self.table is not None:
            return Choice(aggregation, self.table, "table", self.table.n_items)
        with self._lock:
            n, observed = len(self.window), self._observed
            if n < self.min_items:
                return Choice("logodds", None, "logodds", n)
            cached = self._rolling.get(aggregation)
            if cached is not None and observed - cached[0] < REFIT_EVERY:
                return Choice(aggregation, cached[1], "rolling", n)
            items = dict(enumerate(self.window))  # a snapshot: the fit runs outside the lock
        members = {w for per in items.values() for w in per}
        table = dawid_skene(items, one_coin=aggregation == "one_coin",
                            cutoffs=dict.fromkeys(members, self.cutoff)).table
        with self._lock:
            self._rolling[aggregation] = (observed, table)
        return Choice(aggregation, table, "rolling", n)

    def describe(self) -> dict[str, Any]:
        return {"table": self.table.to_dict() if self.table else None, "window_items": len(self.window),
                "min_items": self.min_items}


__all__ = ["Choice", "REFIT_EVERY", "Reliabilities", "SOURCES", "load_table"]
