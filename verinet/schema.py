"""Typed records that cross every boundary of verinet.

Every record is a pydantic model with documented fields and a ``format_version``
so JSONL results written by one version can be recognised by the next. Records
reject unknown fields and out-of-range values with errors that name the field.

Indexing conventions used throughout:

* steps are numbered from 0 in chain order;
* ``first_error`` is the index of the first step that is not locally valid, or
  ``-1`` when every step and the final answer are valid; it equals
  ``len(steps)`` when the only error is the final answer line (for example an
  answer that was not copied from the last step);
* ``premises`` of a step are indices of *earlier* steps of the same chain.
  Facts stated in the question are not steps and never appear there. What a step
  uses that neither the question nor an earlier step states is a *missing* premise
  (``missing_premises``): the step is unsupported, not premise-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FORMAT_VERSION = 1
M = TypeVar("M", bound=BaseModel)
# The shipped configs: package data in an installed wheel; in a source checkout, a symlink to configs/.
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"

Family = Literal["arith", "logic", "gsm8k", "arith_nl", "logic_nl"]
ErrorKind = Literal["wrong_result", "wrong_premise", "dropped_step", "answer_miscopy"]
ERROR_KINDS: tuple[str, ...] = ("wrong_result", "wrong_premise", "dropped_step", "answer_miscopy")


class Record(BaseModel):
    """Base for all records: strict about unknown keys, versioned."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    format_version: int = Field(default=FORMAT_VERSION, ge=1, description="record format version")


class Step(Record):
    """One reasoning step of a chain."""

    index: int = Field(ge=0, description="position in the chain, from 0")
    text: str = Field(description="the step as written, in the family's canonical format")
    premises: list[int] = Field(
        default_factory=list, description="indices of earlier steps this step uses"
    )
    value: str | None = Field(default=None, description="what the step establishes, e.g. '7'")
    missing_premises: list[str] = Field(
        default_factory=list,
        description="what the step uses that neither the question nor an earlier step states, e.g. '10': "
        "premises the chain never established, so the step is unsupported (never premise-free)",
    )

    @model_validator(mode="after")
    def _premises_are_earlier(self) -> Step:
        for p in self.premises:
            if p < 0 or p >= self.index:
                raise ValueError(
                    f"premises: step {self.index} cites step {p}; premises must be earlier steps "
                    f"(0 <= p < {self.index})"
                )
        return self


class Problem(Record):
    """A question with a gold solution (a DAG of steps) and its exact answer."""

    id: str = Field(min_length=1, description="stable id, unique within a run")
    family: Family = Field(description="task family that generated or loaded the problem")
    question: str = Field(min_length=1, description="the question text shown to models")
    answer: str = Field(description="the gold final answer, as the canonical format writes it")
    gold_steps: list[Step] = Field(default_factory=list, description="gold solution steps (a DAG)")
    seed: int | None = Field(default=None, description="generator seed; None for loaded data")
    params: dict[str, Any] = Field(default_factory=dict, description="generator knobs or loader info")
    meta: dict[str, Any] = Field(
        default_factory=dict, description="family-specific data the checker needs"
    )

    @field_validator("gold_steps")
    @classmethod
    def _indices_in_order(cls, steps: list[Step]) -> list[Step]:
        for i, s in enumerate(steps):
            if s.index != i:
                raise ValueError(f"gold_steps: step at position {i} has index {s.index}")
        return steps


class Chain(Record):
    """A chain of reasoning steps plus a final answer, written by some author."""

    id: str = Field(min_length=1, description="unique chain id")
    problem_id: str = Field(min_length=1)
    author: str = Field(default="gold", description="model name, 'gold' or 'inject:<kind>'")
    text: str = Field(description="the full chain text, as generated or formatted")
    steps: list[Step] = Field(default_factory=list, description="steps parsed from text")
    answer: str | None = Field(default=None, description="final answer, None if missing")
    error_kind: ErrorKind | None = Field(default=None, description="injected error, if any")
    first_error: int = Field(
        default=-1, ge=-1, description="labelled index of the first error (-1: none)"
    )

    @model_validator(mode="after")
    def _first_error_in_range(self) -> Chain:
        if self.first_error > len(self.steps):
            raise ValueError(
                f"first_error: {self.first_error} is past the answer line (at most {len(self.steps)})"
            )
        return self


class StepCheck(Record):
    """The exact checker's judgement of one step (or of the final answer line)."""

    index: int = Field(ge=0)
    text: str
    parsed: bool = Field(description="the step could be read in the family's format")
    valid: bool = Field(description="locally valid: correct given the premises it uses")
    supported: bool = Field(description="valid and every premise supported")
    checked: bool = Field(
        default=True,
        description="False when the family cannot decide this step (free text); it then counts as valid",
    )
    premises: list[int] = Field(default_factory=list)
    missing_premises: list[str] = Field(
        default_factory=list, description="used but stated by neither the question nor an earlier step: unsupported"
    )
    value: str | None = None
    reason: str | None = Field(default=None, description="why the step is unparsed, invalid or unsupported")


class ChainCheck(Record):
    """The exact checker's judgement of a whole chain."""

    problem_id: str
    steps: list[StepCheck]
    answer: StepCheck = Field(description="the final answer line, judged as one more step")
    first_error: int = Field(ge=-1, description="first invalid step, len(steps) for the answer, -1 none")
    answer_correct: bool = Field(description="final answer equals the gold answer")
    n_valid: int = Field(ge=0)
    n_supported: int = Field(ge=0)

    @property
    def all_valid(self) -> bool:
        return self.first_error == -1


class Verdict(Record):
    """One verifier's score for one step."""

    verifier: str = Field(min_length=1)
    chain_id: str = Field(min_length=1)
    step_index: int = Field(ge=0)
    p_valid: float = Field(ge=0.0, le=1.0, description="P(valid) from the verdict-token distribution")

    @property
    def vote(self) -> bool:
        return self.p_valid >= 0.5


class StepPosterior(Record):
    """Aggregated belief about one step after verification."""

    chain_id: str = Field(min_length=1)
    step_index: int = Field(ge=0)
    p_valid: float = Field(ge=0.0, le=1.0, description="aggregated P(valid)")
    p_supported: float = Field(ge=0.0, le=1.0, description="P(valid and all premises supported)")
    n_verdicts: int = Field(ge=0)
    method: Literal["mean", "vote", "logodds", "dawid_skene", "one_coin", "gold"] = "mean"


class VerificationReport(Record):
    """Everything verification says about one problem."""

    problem_id: str = Field(min_length=1)
    chains: list[Chain]
    verdicts: list[Verdict] = Field(default_factory=list)
    posteriors: list[StepPosterior] = Field(default_factory=list)
    earliest_error: dict[str, int] = Field(
        default_factory=dict, description="chain id -> predicted first error (-1: none); unverified chains absent"
    )
    unverified: list[str] = Field(
        default_factory=list, description="ids of chains no verdict names (every verifier of them failed): "
        "no earliest error is predicted for them, so error metrics leave them out"
    )
    accepted: list[str] = Field(default_factory=list, description="ids of accepted chains")
    final_answer: str | None = None
    agreement: dict[str, float | None] = Field(default_factory=dict)
    graph: dict[str, Any] | None = Field(default=None, description="node-link JSON of the graph")
    timings_s: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _refs_exist(self) -> VerificationReport:
        ids = {c.id for c in self.chains}
        for where, refs in (("accepted", self.accepted), ("earliest_error", self.earliest_error),
                            ("unverified", self.unverified)):
            missing = [r for r in refs if r not in ids]
            if missing:
                raise ValueError(f"{where}: unknown chain ids {missing}")
        return self


def format_validation_error(e: ValidationError) -> str:
    """One line naming every bad field: 'tasks.0.n: Input should be ...; seed: ...'."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; unknown keys are rejected)"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)



def resolve_config_path(path: str | Path) -> Path:
    """``path`` itself when it exists; else, for a relative ``configs/...`` path, the shipped copy."""
    p = Path(path)
    if p.exists() or p.is_absolute() or not p.parts or p.parts[0] != "configs":
        return p
    shipped = PACKAGED_CONFIGS.joinpath(*p.parts[1:])
    return shipped if shipped.is_file() else p


def load_yaml_config(path: str | Path, model: type[M], error: type[Exception], hint: str,
                     empty_ok: bool = False) -> M:
    """Read a YAML mapping into ``model``; every failure raises ``error`` naming the file and the field.

    A relative ``configs/NAME.yaml`` that is not in the working directory is read from the copy shipped
    in the package, so an installed wheel runs ``--config configs/compare-local.yaml`` from anywhere.
    """
    p = resolve_config_path(path)
    if not p.is_file():
        raise error(f"{p}: config file not found ({hint})")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise error(f"{p}: not valid YAML: {e}") from None
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise error(f"{p}: {format_validation_error(e)}") from None


__all__ = [
    "ERROR_KINDS",
    "FORMAT_VERSION",
    "Chain",
    "ChainCheck",
    "ErrorKind",
    "Family",
    "Problem",
    "Record",
    "Step",
    "StepCheck",
    "StepPosterior",
    "Verdict",
    "VerificationReport",
    "format_validation_error",
    "load_yaml_config",
    "resolve_config_path",
]
