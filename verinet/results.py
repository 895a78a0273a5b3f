"""Append-only JSONL results that survive a crash: write as you go, resume where you left off.

Used by every long job (the comparison, the faithfulness suite); Ray-free and model-free."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class ResultsLog:
    """One JSON object per line, keyed by ``key``; each append is flushed and fsynced.

    On open, a torn last line (a crash mid-write) is cut off, so a resumed run
    neither loses a finished record nor duplicates one.
    """

    def __init__(self, path: Path, key: str = "problem_id") -> None:
        self.path = path
        self.key = key
        self.records: dict[str, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load()
        self._f = path.open("a", encoding="utf-8")

    def _load(self) -> None:
        good_bytes = 0
        with self.path.open("rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError:
                    break
                if not raw.endswith(b"\n") or not isinstance(rec, dict) or self.key not in rec:
                    break
                self.records[rec[self.key]] = rec
                good_bytes += len(raw)
        if good_bytes != self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(good_bytes)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict[str, Any]) -> None:
        k = record[self.key]
        if k in self.records:
            raise ValueError(f"{self.path}: duplicate {self.key} {k!r}")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.records[k] = record

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
