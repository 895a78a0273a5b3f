"""Typed, validated configuration of the comparison job.

The defaults are the embedded default run: what ``verinet compare`` does with
no ``--config``. Unknown keys are rejected, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from verinet.backends.config import EnsembleConfig, EnsembleConfigError, MemberSpec, Resources, load_ensemble_config
from verinet.schema import ERROR_KINDS, ErrorKind, load_yaml_config
from verinet.tasks.spec import TaskSpec

FAITHFULNESS_TESTS = ("early_answering", "adding_mistakes", "paraphrasing", "filler")


class ConfigError(ValueError):
    """A config that cannot be used; the message says which field and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _default_tasks() -> list[TaskSpec]:
    return [
        TaskSpec(family="arith", n=100, params={"steps": 3, "distractors": 0}),
        TaskSpec(family="logic", n=100, params={"hops": 3, "distractors": 1}),
    ]


def _zoo_member(name: str, cpus: float = 0.5) -> MemberSpec:
    return MemberSpec(name=name, backend="hf", model=name, format="zoo", dtype="float32",
                      resources=Resources(num_cpus=cpus, num_gpus=0))


def _default_members() -> list[MemberSpec]:
    return [_zoo_member(f"zoo-xs-s{i}") for i in range(3)]


class EnsembleArm(_Strict):
    """The ensemble of small models: members (inline, or an ensemble YAML) and how they cross-verify."""

    config: str | None = Field(default=None, description="an ensemble YAML (configs/ensemble-*.yaml), "
                               "instead of inline members; relative paths are read from the working directory")
    members: list[MemberSpec] = Field(default_factory=_default_members)
    topology: Literal["all_pairs", "ring", "k_random"] = "all_pairs"
    k: int = Field(default=2, ge=1, description="verifiers per chain, for topology k_random")
    aggregation: Literal["mean", "vote", "logodds", "dawid_skene", "one_coin"] = "mean"
    selection: Literal["majority", "weighted", "best"] = "weighted"
    quorum: int | None = Field(default=None, ge=1, description="members that must answer; default: a majority")
    retries: int = Field(default=1, ge=0, le=10)
    call_timeout_s: float = Field(default=600.0, gt=0)

    def resolved(self) -> EnsembleConfig:
        """The members as an EnsembleConfig (the YAML's, when ``config`` is set)."""
        if self.config is not None:
            try:
                return load_ensemble_config(self.config, check_models=False)
            except EnsembleConfigError as e:
                raise ConfigError(f"ensemble.config: {e}") from None
        n = len(self.members)
        return EnsembleConfig(members=list(self.members), quorum=self.quorum or n // 2 + 1,
                              retries=self.retries, call_timeout_s=self.call_timeout_s)


class BaselineArm(_Strict):
    """The single scaled-up model, verifying its own chains when ``self_verify`` is on."""

    member: MemberSpec = Field(default_factory=lambda: _zoo_member("zoo-l"))
    self_verify: bool = True


class FaithfulnessSpec(_Strict):
    """Which faithfulness tests run, on how many problems of each task slice."""

    tests: list[Literal[FAITHFULNESS_TESTS]] = Field(default_factory=lambda: list(FAITHFULNESS_TESTS))
    n: int = Field(default=20, ge=0, description="problems per task slice (0: skip faithfulness)")
    pipeline: bool = Field(default=True, description="also intervene on the ensemble pipeline's accepted chains")
    n_boot: int = Field(default=1000, ge=100, le=100_000, description="bootstrap resamples for the CIs")


class SweepSpec(_Strict):
    """Ensembles of K members for K in ``ks``; members beyond the ensemble's own sample
    (``temperature``, seed k) from its checkpoints in turn. K is also set to match the baseline's FLOPs."""

    ks: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 6, 8, 12, 16])
    n: int = Field(default=40, ge=0, description="problems per task slice (0: skip the sweep)")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    topology: Literal["ring", "k_random", "all_pairs"] = "ring"
    compute_matched: bool = Field(default=True, description="add the K whose FLOPs match the baseline's")
    max_k: int = Field(default=32, ge=1, le=256, description="cap on the compute-matched K")

    @model_validator(mode="after")
    def _ks(self) -> SweepSpec:
        if any(k < 1 for k in self.ks):
            raise ValueError(f"ks: every K must be >= 1, got {self.ks}")
        return self


class SamplingSpec(_Strict):
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0: greedy")
    max_tokens: int | None = Field(default=None, ge=1, le=32_768, description="default: 1.5x the longest gold chain")


class RaySpec(_Strict):
    address: str | None = Field(default=None, description="a Ray cluster ('auto' inside `ray job submit`); "
                                "default: an embedded local Ray")
    local: bool = Field(default=False, description="run the models in this process, without Ray (tests, debugging)")
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs for the embedded Ray")


class CostSpec(_Strict):
    parameters: dict[str, float] = Field(
        default_factory=dict,
        description="member name -> non-embedding parameters, for models whose weights are not on this "
                    "machine (dry runs); measured from the loaded model otherwise")
    tokens_per_problem: dict[str, float] = Field(
        default_factory=lambda: {"prefill": 300.0, "decode": 250.0},
        description="dry-run estimate of tokens a member processes per problem and phase")


class CompareConfig(_Strict):
    """The comparison job: an ensemble of small models against one scaled-up model."""

    name: str = Field(default="default", min_length=1, description="run name, used in the report")
    seed: int = Field(default=0, ge=0, description="base seed for problem generation, injection and sampling")
    tasks: list[TaskSpec] = Field(default_factory=_default_tasks, min_length=1)
    inject: list[ErrorKind] = Field(
        default_factory=lambda: list(ERROR_KINDS),
        description="error kinds injected into gold chains to build the labelled error set",
    )
    ensemble: EnsembleArm = Field(default_factory=EnsembleArm)
    baseline: BaselineArm = Field(default_factory=BaselineArm)
    faithfulness: FaithfulnessSpec = Field(default_factory=FaithfulnessSpec)
    sweep: SweepSpec = Field(default_factory=SweepSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="earliest-error threshold on "
                                    "P(valid); default: chosen per arm and task slice on a labelled dev split")
    dev_n: int = Field(default=20, ge=2, description="dev problems per task slice for the threshold")
    chunk_size: int = Field(default=25, ge=1, le=10_000, description="problems per batched model call")
    ray: RaySpec = Field(default_factory=RaySpec)
    cost: CostSpec = Field(default_factory=CostSpec)
    cluster: list[dict[str, float]] = Field(
        default_factory=list, description="declared nodes for --dry-run, e.g. [{CPU: 32, GPU: 4}]")
    out_dir: str = Field(default="runs/default", description="where results, summary and report go")

    @model_validator(mode="after")
    def _names(self) -> CompareConfig:
        if self.ensemble.config is None:
            names = [m.name for m in self.ensemble.members]
            if len(names) < 2:
                raise ValueError("ensemble.members: cross-verification needs at least 2 members")
            if len(set(names)) != len(names):
                raise ValueError(f"ensemble.members: names must be unique, got {names}")
            if self.baseline.member.name in names:
                raise ValueError(f"baseline.member.name {self.baseline.member.name!r} is also an ensemble "
                                 "member; give the baseline its own name")
        return self

    def ensemble_config(self) -> EnsembleConfig:
        cfg = self.ensemble.resolved()
        names = [m.name for m in cfg.members]
        if self.baseline.member.name in names:
            raise ConfigError(f"baseline.member.name {self.baseline.member.name!r} is also an ensemble member "
                              f"of {self.ensemble.config}; give the baseline its own name")
        if len(names) < 2:
            raise ConfigError(f"{self.ensemble.config}: cross-verification needs at least 2 members")
        return cfg

    def all_members(self) -> EnsembleConfig:
        """Ensemble members and the baseline in one config (one Ray actor each)."""
        ens = self.ensemble_config()
        return EnsembleConfig(members=[*ens.members, self.baseline.member], quorum=1, retries=ens.retries,
                              call_timeout_s=ens.call_timeout_s)


def load_config(path: str | Path | None) -> CompareConfig:
    """Load and validate a YAML config; None gives the embedded default."""
    if path is None:
        return CompareConfig()
    return load_yaml_config(path, CompareConfig, ConfigError, "see configs/ for examples", empty_ok=True)
