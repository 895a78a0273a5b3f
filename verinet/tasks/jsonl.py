"""Reading and writing problems and chains as JSONL, one record per line.

A *check request* line holds a chain text and the problem it answers, either
whole or by reference to a generated problem::

    {"problem": {...Problem...}, "chain": "x:i+t>i7+t0>7;x7\\n#### 7"}
    {"family": "arith", "seed": 12, "params": {"steps": 3}, "chain": "..."}

``verinet tasks sample --out F`` writes the first form with the gold chain, so
its output can be fed straight to ``verinet tasks check``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from verinet.schema import Problem
from verinet.tasks import TaskError, get_family


@dataclass
class CheckRequest:
    line: int  # 1-based line number in the file
    problem: Problem
    chain: str
    chain_id: str | None = None


@dataclass
class LineError:
    line: int
    message: str


def sample_record(problem: Problem, chain_text: str) -> dict[str, Any]:
    return {"problem": problem.model_dump(mode="json"), "chain": chain_text}


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_check_requests(path: Path) -> Iterator[CheckRequest | LineError]:
    """Yield one request per non-blank line; a bad line yields a LineError and reading goes on."""
    if not path.is_file():
        raise TaskError(f"{path}: no such file; give a JSONL file of check requests")
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield _request(n, json.loads(raw))
            except json.JSONDecodeError as e:
                yield LineError(n, f"not valid JSON: {e.msg}: column {e.colno}")
            except (TaskError, ValidationError, TypeError) as e:
                yield LineError(n, _short(e))


def _request(n: int, obj: Any) -> CheckRequest:
    if not isinstance(obj, dict):
        raise TaskError(f"expected a JSON object, got {type(obj).__name__}")
    chain = obj.get("chain")
    if not isinstance(chain, str):
        raise TaskError("missing 'chain' (the chain text, a string)")
    if "problem" in obj:
        problem = Problem.model_validate(obj["problem"])
    elif "family" in obj and "seed" in obj:
        if not isinstance(obj["seed"], int):
            raise TaskError(f"'seed' must be an integer, got {obj['seed']!r}")
        problem = get_family(obj["family"]).generate(obj["seed"], obj.get("params") or {})
    else:
        raise TaskError("needs either 'problem' (a whole problem) or 'family' and 'seed' (and optional 'params')")
    chain_id = obj.get("id")
    return CheckRequest(n, problem, chain, chain_id if isinstance(chain_id, str) else None)


def _short(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "invalid problem: " + "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:3]
        )
    return str(e)
