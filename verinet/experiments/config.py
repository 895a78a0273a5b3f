"""Typed, validated configuration of the comparison job.

The defaults are the embedded default run: what ``verinet compare`` does with
no ``--config``. Unknown keys are rejected, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import re
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
        TaskSpec(family="arith", n=100, params={"steps": 6, "distractors": 0}),
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

    @model_validator(mode="after")
    def _solves(self) -> BaselineArm:
        if self.member.verifier == "prm":
            raise ValueError(f"baseline member {self.member.name}: a process reward model (verifier prm) writes "
                             "no chains; the baseline must solve (use it as an ensemble member instead)")
        return self


class FaithfulnessSpec(_Strict):
    """Which faithfulness tests run, on how many problems of each task slice."""

    tests: list[Literal[FAITHFULNESS_TESTS]] = Field(default_factory=lambda: list(FAITHFULNESS_TESTS))
    n: int = Field(default=20, ge=0, description="problems per task slice (0: skip faithfulness)")
    pipeline: bool = Field(default=True, description="also intervene on the ensemble pipeline's accepted chains")
    n_boot: int = Field(default=1000, ge=100, le=100_000, description="bootstrap resamples for the CIs")


class SweepSpec(_Strict):
    """The compute frontier: every model size alone (solving and verifying itself, K = 1) and
    ensembles of K members of each size (K >= 2, cross-verified with ``topology``). Member j of a
    K-ensemble runs model ``j mod n`` of the size's n models: distinct seeds first, then members that
    sample (``temperature``, seed j) from the same weights. K is also set to match the baseline's FLOPs
    for the ensemble's own size."""

    sizes: dict[str, list[str]] | None = Field(
        default=None,
        description="size label -> models (member names, zoo names or checkpoint paths); models that are "
                    "not members run as extra members shaped like the baseline. Default (null): the whole "
                    "committed zoo size ladder (and the arms' own zoo recipes, e.g. zoo-xs-sf) when both arms are "
                    "zoo models, else the ensemble and the baseline")
    ks: list[int] = Field(default_factory=lambda: [1, 3])
    n: int = Field(default=20, ge=0, description="problems per task slice (0: skip the frontier)")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    topology: Literal["ring", "k_random", "all_pairs"] = "ring"
    compute_matched: bool = Field(default=True, description="add the K whose FLOPs match the baseline's")
    max_k: int = Field(default=6, ge=1, le=256, description="cap on the compute-matched K (the default keeps "
                       "the embedded run under 10 minutes on 2 cores; the report says when the cap binds)")

    @model_validator(mode="after")
    def _ks(self) -> SweepSpec:
        if any(k < 1 for k in self.ks):
            raise ValueError(f"ks: every K must be >= 1, got {self.ks}")
        for label, models in (self.sizes or {}).items():
            if not models:
                raise ValueError(f"sizes.{label}: list at least one model")
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
            if all(m.verifier == "prm" for m in self.ensemble.members):
                raise ValueError("ensemble.members: every member is a process reward model (verifier prm), so "
                                 "none writes a chain; add at least one member that solves")
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
        if all(m.verifier == "prm" for m in cfg.members):
            raise ConfigError(f"{self.ensemble.config}: every member is a process reward model (verifier prm), "
                              "so none writes a chain; add at least one member that solves")
        return cfg

    def solver_names(self) -> list[str]:
        """Ensemble members that write chains (process reward models only verify)."""
        return [m.name for m in self.ensemble_config().members if m.verifier != "prm"]

    def check_file_length(self, index: int, have: int) -> None:
        """A GSM8K slice's file must hold its dev split (the first dev_n lines, unless a fixed threshold is
        given) and its n test problems: a short file would shrink the test set without a word."""
        spec, dev_n = self.tasks[index], self.dev_n if self.threshold is None else 0
        if have < spec.n + dev_n:
            fix = (f"lower tasks.{index}.n to {have - dev_n} or give a longer file" if have > dev_n else
                   "give a longer file, or a fixed `threshold` (no dev split)" if dev_n else "give a longer file")
            raise ConfigError(f"tasks.{index}: {spec.path} has {have} problems; n={spec.n} test problems plus "
                              f"dev_n={dev_n} (the threshold's dev split) need {spec.n + dev_n}: {fix}")

    def frontier_sizes(self) -> dict[str, list[str]]:
        """size label -> member names of the frontier (see SweepSpec.sizes), smallest models first."""
        ens = [m for m in self.ensemble_config().members if m.verifier != "prm"]  # PRMs write no chains
        base = self.baseline.member
        if self.sweep.sizes is not None:
            prm = {m.name for m in self.ensemble_config().members if m.verifier == "prm"}
            named = sorted(prm & {_member_name(m) for ms in self.sweep.sizes.values() for m in ms})
            if named:
                raise ConfigError(f"sweep.sizes names {named}: a process reward model writes no chains, so it "
                                  "cannot be a frontier model; list models that solve")
            return {label: [_member_name(m) for m in models] for label, models in self.sweep.sizes.items()}
        zoo = all(m.backend == "hf" and m.model.startswith("zoo-") for m in [*ens, base])
        if zoo:
            from verinet.zoo.registry import in_ladder, list_checkpoints, recipe_label

            # the size ladder, plus the recipe of any ensemble member or baseline outside it; smallest first
            own = {recipe_label(m.model) for m in [*ens, base]}
            sizes: dict[str, list[str]] = {}
            least: dict[str, int] = {}
            for n, _, card in list_checkpoints():
                label = recipe_label(n)
                if in_ladder(n) or label in own:
                    sizes.setdefault(label, []).append(n)
                    least.setdefault(label, card["parameters"]["non_embedding"])
            if sizes:
                return dict(sorted(sizes.items(), key=lambda kv: (least[kv[0]], kv[0])))
        return {"ensemble": [m.name for m in ens], base.name: [base.name]}

    def frontier_members(self) -> list[MemberSpec]:
        """Frontier models that are neither ensemble members nor the baseline, shaped like the baseline.

        On CPUs they ask Ray for no CPU of their own (they work only in the frontier phase, while the
        arms' actors are idle), so the default run fits a 2-CPU machine; their cost is accounted with
        the baseline's share."""
        known = {m.name for m in self.ensemble_config().members} | {self.baseline.member.name}
        extra: dict[str, MemberSpec] = {}
        base = self.baseline.member
        for models in self.frontier_sizes().values():
            for name in models:
                if name not in known and name not in extra:
                    data = base.model_dump()
                    data.update(name=name, model=_model_of(name, self))
                    if base.resources.gpus_total == 0:
                        data["resources"] = {**data["resources"], "num_cpus": 0.0}
                    extra[name] = MemberSpec.model_validate(data)
        return list(extra.values())

    def all_members(self) -> EnsembleConfig:
        """Ensemble members, the baseline and the frontier's extra models in one config (one Ray actor each)."""
        ens = self.ensemble_config()
        members = [*ens.members, self.baseline.member]
        if self.sweep.n and self.sweep.ks:
            members += self.frontier_members()
        return EnsembleConfig(members=members, quorum=1, retries=ens.retries, call_timeout_s=ens.call_timeout_s)


def _member_name(model: str) -> str:
    """A member name for a model given as a zoo name, a member name or a checkpoint path."""
    name = Path(model).name if ("/" in model or model.startswith(".")) else model
    return re.sub(r"[^\w.-]", "_", name) or "model"


def _model_of(name: str, config: CompareConfig) -> str:
    for models in (config.sweep.sizes or {}).values():
        for m in models:
            if _member_name(m) == name:
                return m
    return name


def load_config(path: str | Path | None) -> CompareConfig:
    """Load and validate a YAML config; None gives the embedded default."""
    if path is None:
        return CompareConfig()
    return load_yaml_config(path, CompareConfig, ConfigError, "see configs/ for examples", empty_ok=True)
