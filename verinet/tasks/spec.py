"""A slice of problems in a job config: a generated family with its knobs, or a GSM8K-format file.

Shared by every job config (the comparison, the faithfulness suite), validated by pydantic.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from verinet.tasks.base import TaskError


class TaskSpec(BaseModel):
    """One slice of problems: a generated family with its knobs, or a GSM8K-format file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["arith", "logic", "gsm8k", "arith_nl", "logic_nl"]
    n: int = Field(default=100, ge=1, le=1_000_000, description="problems to draw (gsm8k: to load; "
                   "`verinet compare` needs the file to hold n plus its dev_n)")
    params: dict[str, Any] = Field(default_factory=dict, description="generator knobs")
    path: str | None = Field(default=None, description="JSONL file, for family gsm8k only")

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.family == "gsm8k":
            if not self.path:
                raise ValueError("family gsm8k needs 'path': a GSM8K-format JSONL file")
            if self.params:
                raise ValueError("family gsm8k takes no generator 'params'")
        else:
            if self.path:
                raise ValueError(f"'path' is only for family gsm8k; {self.family} problems are generated")
            from verinet.tasks import get_family

            try:
                get_family(self.family).knobs(self.params)
            except TaskError as e:
                raise ValueError(str(e)) from None
        return self


__all__ = ["TaskSpec"]
