"""ProcessBench-format records: reading a user's file, and writing one from verinet's task families."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from verinet.tasks import get_family


class StepsDataError(ValueError):
    """A data file that cannot be used; the message names the file and the line."""


class StepRecord(BaseModel):
    """One labelled chain."""

    model_config = ConfigDict(extra="allow")

    problem: str = Field(min_length=1, description="the question")
    steps: list[str] = Field(min_length=1, description="the chain's steps, in order")
    label: int = Field(ge=-1, description="index of the first wrong step; -1 when all are right")
    subset: str = Field(default="all", min_length=1, description="reported separately (e.g. a source dataset)")
    id: str | None = None

    @model_validator(mode="after")
    def _label_in_range(self) -> StepRecord:
        if self.label >= len(self.steps):
            raise ValueError(f"label {self.label} is past the last step (the chain has {len(self.steps)} steps)")
        if any(not s.strip() for s in self.steps):
            raise ValueError("steps must not be blank")
        return self

    @property
    def error_kind(self) -> str | None:
        kind = (self.model_extra or {}).get("error_kind")
        return kind if isinstance(kind, str) else None


def read_records(path: str | Path, limit: int | None = None) -> list[StepRecord]:
    """Every record of a JSONL file (blank lines skipped); the first bad line raises StepsDataError."""
    p = Path(path)
    if not p.is_file():
        raise StepsDataError(f"{p}: no such file; give a JSONL file of ProcessBench-format records "
                             '({"problem": ..., "steps": [...], "label": K or -1, "subset": optional})')
    out: list[StepRecord] = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise StepsDataError(f"{p}, line {n}: not valid JSON: {e.msg} at column {e.colno}") from None
            if not isinstance(obj, dict):
                raise StepsDataError(f"{p}, line {n}: expected a JSON object, got {type(obj).__name__}")
            try:
                rec = StepRecord.model_validate(obj)
            except ValidationError as e:
                what = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'record'}: "
                                 f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors()[:3])
                raise StepsDataError(f"{p}, line {n}: {what}") from None
            out.append(rec.model_copy(update={"id": rec.id or f"{p.stem}-{n}"}))
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise StepsDataError(f"{p}: no records")
    return out


def family_records(family: str, n: int, seed: int = 0, params: dict[str, Any] | None = None,
                   kinds: Iterable[str] | None = None, path: str | Path | None = None) -> list[dict[str, Any]]:
    """ProcessBench-format records from a task family: each problem's gold chain (label -1) and one
    chain per injectable error kind (label = the checker's first error). The answer becomes a last step
    ("The final answer is N."), so an answer that was not copied is an error at that step. Generated
    families draw ``n`` problems; ``gsm8k`` reads the first ``n`` of the GSM8K-format file ``path``."""
    fam = get_family(family)
    if family == "gsm8k":
        from verinet.tasks.gsm8k import load_gsm8k

        if path is None:
            raise StepsDataError("family gsm8k needs a GSM8K-format JSONL file (path)")
        problems = [p for p in load_gsm8k(path, limit=n) if p.meta.get("gold_first_error", -1) == -1]
    else:
        problems = fam.sample(n, seed=seed, params=params)
    out = []
    for p in problems:
        chains = [fam.gold_chain(p)]
        for kind in fam.injectable_kinds(p):
            if kinds is None or kind in kinds:
                chains.append(fam.inject(p, kind, seed=seed))
        for c in chains:
            steps = [s.text for s in c.steps] + [f"The final answer is {c.answer}."]
            label = c.first_error
            check = fam.check(p, c.text)  # the exact checker agrees with the label, or the record is wrong
            if check.first_error != label:  # pragma: no cover - the families' tests guarantee this
                raise ValueError(f"{c.id}: checker says {check.first_error}, label {label}")
            out.append({"id": c.id, "problem": p.question, "steps": steps, "label": label, "subset": family,
                        "error_kind": c.error_kind})
    return out
