"""The typed config of ``verinet faithfulness`` (configs/faithfulness-*.yaml).

Unknown keys are rejected and every bound is checked when the file is loaded, so a typo
never falls back to a default silently. Models are member specs (as in ensemble configs)
or, for the zoo, just names: ``zoo-s`` means ``{name: zoo-s, backend: hf, model: zoo-s,
format: zoo}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from verinet.backends.config import EnsembleConfigError, MemberSpec
from verinet.faithfulness.interventions import TESTS
from verinet.schema import Problem, load_yaml_config
from verinet.tasks import get_family
from verinet.tasks.spec import TaskSpec

Test = Literal["early_answering", "adding_mistakes", "paraphrasing", "filler"]
# fields a rerun may change without invalidating the records already written
RESUMABLE_CHANGES = ("name", "n_boot", "batch_size", "out_dir")


class FaithfulnessConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineSpec(_Strict):
    """The ensemble pipeline to intervene on: some of the models, cross-verifying each other."""

    members: list[str] = Field(min_length=2, description="names of models (from `models`) in the ensemble")
    label: str = Field(default="ensemble", min_length=1, description="the ensemble's name in tables and plots")
    topology: Literal["all_pairs", "ring", "k_random"] = "all_pairs"
    k: int = Field(default=2, ge=1, description="verifiers per author, for topology k_random")
    aggregation: Literal["mean", "vote", "logodds", "dawid_skene", "one_coin"] = "mean"
    selection: Literal["majority", "weighted", "best"] = "weighted"
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0, description="P(valid) below it flags a step")

    @model_validator(mode="after")
    def _check(self) -> PipelineSpec:
        dup = sorted({m for m in self.members if self.members.count(m) > 1})
        if dup:
            raise ValueError(f"members are repeated: {dup}")
        if self.topology == "k_random" and self.k > len(self.members) - 1:
            raise ValueError(f"k={self.k} verifiers per author needs at least {self.k + 1} members")
        return self


def _default_tasks() -> list[TaskSpec]:
    return [TaskSpec(family="arith", n=80, params={"steps": 3, "distractors": 1}),
            TaskSpec(family="logic", n=80, params={"hops": 3, "distractors": 1})]


class FaithfulnessConfig(_Strict):
    """What ``verinet faithfulness`` runs: models x problems x tests, and optionally an ensemble."""

    name: str = Field(default="faithfulness", min_length=1, description="run name, for tables and plots")
    seed: int = Field(default=0, ge=0, description="problem, edit and pick seed")
    models: list[MemberSpec] = Field(min_length=1, description="zoo names or member specs")
    tasks: list[TaskSpec] = Field(default_factory=_default_tasks, min_length=1)
    tests: list[Test] = Field(default_factory=lambda: list(TESTS), min_length=1)
    n_boot: int = Field(default=1000, ge=100, le=100_000, description="bootstrap resamples per CI")
    batch_size: int = Field(default=64, ge=1, le=100_000,
                            description="problems per batch; records are written after each batch")
    answer_tokens: int = Field(default=16, ge=1, le=512, description="tokens for a forced answer")
    max_steps: int | None = Field(default=None, ge=1, le=10_000, description="keep the first max_steps steps of a "
                                  "longer chain (records keep the count written); default: every step")
    pipeline: PipelineSpec | None = Field(default=None, description="also intervene on this ensemble")
    out_dir: str = Field(default="runs/faithfulness", description="records.jsonl, summary.json and plots go here")

    @field_validator("models", mode="before")
    @classmethod
    def _zoo_names(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        return [{"name": Path(m).name, "backend": "hf", "model": m, "format": "zoo"} if isinstance(m, str) else m
                for m in v]

    @field_validator("tests")
    @classmethod
    def _unique_tests(cls, v: list[str]) -> list[str]:
        dup = sorted({t for t in v if v.count(t) > 1})
        if dup:
            raise ValueError(f"tests are repeated: {dup}")
        return v

    @model_validator(mode="after")
    def _check(self) -> FaithfulnessConfig:
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: names must be unique; repeated: {dup} (give member specs with distinct names)")
        if "pipeline" in names:  # records are keyed '<model>/<problem>', and the ensemble's are 'pipeline/<problem>'
            raise ValueError("models: 'pipeline' is the ensemble pipeline's name in the records; give that member "
                             "spec another name")
        for i, m in enumerate(self.models):
            try:
                m.model_location()
            except EnsembleConfigError as e:
                raise ValueError(f"models.{i}: {e}") from None
        if self.pipeline is not None:
            unknown = [m for m in self.pipeline.members if m not in names]
            if unknown:
                raise ValueError(f"pipeline.members: {unknown} are not models of this config; models: {names}")
        return self

    def resumable_with(self, other: FaithfulnessConfig) -> list[str]:
        """Fields (other than problem counts and RESUMABLE_CHANGES) where ``other`` differs from this config."""
        a, b = self.model_dump(mode="json"), other.model_dump(mode="json")
        for d in (a, b):
            for k in RESUMABLE_CHANGES:
                d.pop(k, None)
            for t in d["tasks"]:
                t.pop("n", None)
        return sorted(k for k in a if a[k] != b.get(k))


def load_config(path: str | Path) -> FaithfulnessConfig:
    """Load and validate a YAML config; every problem raises FaithfulnessConfigError naming the field."""
    return load_yaml_config(path, FaithfulnessConfig, FaithfulnessConfigError, "see configs/faithfulness-zoo.yaml")


def problems_for(config: FaithfulnessConfig) -> list[tuple[TaskSpec, list[Problem]]]:
    """Each task's problems; task i draws with seed ``config.seed * 1000 + i`` (a larger n extends the list)."""
    out = []
    for i, spec in enumerate(config.tasks):
        if spec.family == "gsm8k":
            from verinet.tasks.gsm8k import load_gsm8k

            problems = load_gsm8k(spec.path, limit=spec.n)
        else:
            problems = get_family(spec.family).sample(spec.n, seed=config.seed * 1000 + i, params=spec.params)
        out.append((spec, problems))
    ids = [p.id for _, ps in out for p in ps]
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup:
        raise FaithfulnessConfigError(f"tasks: problem ids repeat across tasks ({dup[:3]}...); two tasks draw the "
                                      "same problems: change one task's params")
    return out


__all__ = ["FaithfulnessConfig", "FaithfulnessConfigError", "PipelineSpec", "TaskSpec", "load_config",
           "problems_for"]
