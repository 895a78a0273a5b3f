"""Append-only JSONL records that survive a crash: written as each batch completes, resumed by id."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class RecordStore:
    """One JSON object per line, keyed by ``"id"``; every append is flushed and fsynced.

    On open, a torn last line (a crash mid-write) is cut off, so a resumed run neither
    loses a finished record nor writes one twice.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load()
        self._f = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        good = 0
        with self.path.open("rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError:
                    break
                if not raw.endswith(b"\n") or not isinstance(rec, dict) or "id" not in rec:
                    break
                self.records[rec["id"]] = rec
                good += len(raw)
        if good != self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(good)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict[str, Any]) -> None:
        key = record["id"]
        if key in self.records:
            raise ValueError(f"{self.path}: record {key!r} is already written")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.records[key] = record

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RecordStore"]
