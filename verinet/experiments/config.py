"""Typed, validated configuration of the comparison job.

The defaults are the embedded default run: what ``verinet compare`` does with
no ``--config``. Unknown keys are rejected, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from verinet.schema import ERROR_KINDS, ErrorKind, load_yaml_config
from verinet.tasks import TaskError, get_family


class ConfigError(ValueError):
    """A config that cannot be used; the message says which field and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Strict):
    """One slice of problems: a generated family with its knobs, or a GSM8K-format file."""

    family: Literal["arith", "logic", "gsm8k"]
    n: int = Field(default=100, ge=1, le=1_000_000, description="problems to draw (or at most to load)")
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
            try:
                get_family(self.family).knobs(self.params)
            except TaskError as e:
                raise ValueError(str(e)) from None
        return self


def _default_tasks() -> list[TaskSpec]:
    return [
        TaskSpec(family="arith", n=100, params={"steps": 3, "distractors": 1}),
        TaskSpec(family="logic", n=100, params={"hops": 3, "distractors": 2}),
    ]


class CompareConfig(_Strict):
    """The comparison job. Later stages (models, verification, faithfulness) add sections."""

    name: str = Field(default="default", min_length=1, description="run name, used in the report")
    seed: int = Field(default=0, ge=0, description="base seed for problem generation and injection")
    tasks: list[TaskSpec] = Field(default_factory=_default_tasks, min_length=1)
    inject: list[ErrorKind] = Field(
        default_factory=lambda: list(ERROR_KINDS),
        description="error kinds injected into gold chains to build the labelled error set",
    )
    out_dir: str = Field(default="runs/default", description="where results, summary and report go")


def load_config(path: str | Path | None) -> CompareConfig:
    """Load and validate a YAML config; None gives the embedded default."""
    if path is None:
        return CompareConfig()
    return load_yaml_config(path, CompareConfig, ConfigError, "see configs/ for examples", empty_ok=True)
