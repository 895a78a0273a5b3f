"""Typed configs for ensemble members (configs/ensemble-*.yaml)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from verinet.schema import load_yaml_config

BACKENDS = ("hf", "vllm", "openai")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_RAY_BUILTIN = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


class EnsembleConfigError(ValueError):
    """An ensemble config that cannot be used; the message says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    """What one member asks Ray for."""

    num_cpus: float = Field(default=1.0, ge=0, description="CPUs for the actor")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs; a fraction shares one GPU between members")
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="GPUs of one tensor-parallel group")
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources, e.g. {node_a: 1}: the member runs only on nodes that declare them "
                    "(`ray start --resources '{\"node_a\": 1}'`); a member whose node dies restarts only where "
                    "they are free")

    @model_validator(mode="after")
    def _possible(self) -> Resources:
        for k, v in self.custom.items():
            if k in _RAY_BUILTIN or not k:
                raise ValueError(f"custom resource {k!r}: use num_cpus / num_gpus for Ray's built-in resources, "
                                 "custom names only here")
            if not v > 0:
                raise ValueError(f"custom resource {k!r}: the amount must be positive, got {v}")
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"num_gpus {self.num_gpus}: above 1 it must be a whole number")
        if self.tensor_parallel_size > 1:
            if self.num_gpus not in (0, 1):
                raise ValueError("with tensor_parallel_size > 1 set num_gpus to 1 (per GPU of the group) "
                                 f"or leave it 0; got {self.num_gpus}")
        return self

    @property
    def gpus_total(self) -> float:
        return float(self.tensor_parallel_size) if self.tensor_parallel_size > 1 else self.num_gpus

    def __hash__(self) -> int:  # frozen, and hashable as before ``custom`` (a dict) was added
        return hash((self.num_cpus, self.num_gpus, self.tensor_parallel_size, tuple(sorted(self.custom.items()))))


class MemberSpec(_Strict):
    """One ensemble member: a model behind a backend, with its resources and prompt format."""

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$", description="unique member name")
    backend: Literal["hf", "vllm", "openai"]
    model: str = Field(min_length=1, description="zoo name, local directory, or Hugging Face id / served name")
    format: Literal["zoo", "chat"] = "zoo"
    verifier: Literal["verdict", "likelihood", "prm"] = Field(
        default="likelihood",
        description="how the member scores steps: 'likelihood' (the model as a solver, teacher-forced over "
                    "the chain in one pass; a step scores its least likely token), 'verdict' (the format's "
                    "verdict tokens: the zoo's tagged <+>/<-> pass, a chat model's Yes/No per step) or 'prm' "
                    "(a process reward model: a token-classification head read at every step tag in one "
                    "pass, e.g. Qwen2.5-Math-PRM-7B; such a member verifies only, it writes no chains)")
    step_tag: str | None = Field(
        default=None, min_length=1,
        description="prm: the step-separator token the model scores at (zoo PRMs: <v>, the default for format "
                    "zoo; Qwen2.5-Math-PRM: <extra_0>)")
    valid_label: int = Field(default=1, ge=0, le=63,
                             description="prm: the class of the head that means 'this step is right'")
    step_pooling: Literal["tag", "min"] = Field(
        default="tag",
        description="prm: where the head is read. 'tag': at the step tag after every line (Qwen2.5-Math-PRM, "
                    "`verinet zoo prm`); 'min': at every token of the chain in the solve layout, a step scoring "
                    "its least valid token (token-level PRMs such as `verinet zoo train-prm`)")
    resources: Resources = Resources()
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    batch_size: int = Field(default=32, ge=1, le=4096,
                            description="hf: prompts per forward pass; openai: prompts per request")
    compile: bool = Field(
        default=False,
        description="hf: run the one-pass scoring calls (likelihood, tagged verdicts, per-step verdicts) "
                    "through torch.compile (dynamic shapes), compiled and warmed up when the member loads "
                    "(15-25 s on a CPU); decoding stays eager. It pays on small models, whose forward pass "
                    "is mostly element-wise ops the compiler fuses: see `python benchmarks/backends.py --compile`")
    max_model_len: int | None = Field(default=None, ge=16, description="vllm: context length")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="vllm: share of GPU memory")
    enable_prefix_caching: bool = Field(default=True, description="vllm: reuse shared prompt prefixes")
    base_url: str | None = Field(default=None, description="openai: server URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(default=None, description="openai: environment variable holding the key")
    request_timeout_s: float = Field(default=120.0, gt=0, le=86_400,
                                     description="openai: longest wait for one HTTP request to the server "
                                                 "(a member call may make several; see call_timeout_s)")

    @model_validator(mode="after")
    def _consistent(self) -> MemberSpec:
        if self.backend == "openai":
            if not self.base_url:
                raise ValueError(f"member {self.name}: backend openai needs base_url (e.g. http://127.0.0.1:8000/v1)")
        elif self.base_url:
            raise ValueError(f"member {self.name}: base_url is only for backend openai")
        if self.resources.tensor_parallel_size > 1 and self.backend != "vllm":
            raise ValueError(f"member {self.name}: tensor_parallel_size > 1 needs backend vllm")
        if self.verifier == "prm":
            if self.backend == "openai":
                raise ValueError(f"member {self.name}: verifier prm needs backend hf or vllm (a pooling model "
                                 "loaded in the member)")
            if self.format == "chat" and self.step_pooling == "tag" and not self.step_tag:
                raise ValueError(f"member {self.name}: verifier prm with format chat needs step_tag, the token "
                                 "the model scores at (Qwen2.5-Math-PRM: <extra_0>)")
            from verinet.zoo.tokenizer import TAG

            if self.step_pooling == "min":
                if self.step_tag is not None:
                    raise ValueError(f"member {self.name}: step_pooling min reads every token, so it takes no "
                                     "step_tag; drop step_tag or use step_pooling tag")
            elif self.format == "zoo" and self.step_tag not in (None, TAG):
                raise ValueError(f"member {self.name}: zoo PRMs score at {TAG!r} (`verinet zoo prm`); "
                                 f"step_tag {self.step_tag!r} is for chat PRMs")
        elif self.step_tag is not None or self.valid_label != 1 or self.step_pooling != "tag":
            raise ValueError(f"member {self.name}: step_tag, valid_label and step_pooling are only for verifier prm")
        if self.compile and (self.backend != "hf" or self.verifier == "prm"):
            raise ValueError(f"member {self.name}: compile is for backend hf causal LMs, not backend "
                             f"{self.backend} with verifier {self.verifier} (vLLM compiles its own graphs); "
                             "drop compile")
        if self.backend == "hf" and self.dtype == "auto":
            raise ValueError(f"member {self.name}: backend hf needs an explicit dtype (float32, bfloat16, float16)")
        return self

    @property
    def prm_step_tag(self) -> str | None:
        """The step tag a PRM member scores at (None for other verifier kinds and token-level PRMs)."""
        if self.verifier != "prm" or self.step_pooling == "min":
            return None
        from verinet.zoo.tokenizer import TAG

        return self.step_tag or TAG

    def model_location(self) -> str:
        """The model's path (zoo names resolved) or hub id; raises if it can be neither."""
        if self.backend == "openai":
            return self.model
        from verinet.zoo.registry import MODELS_DIR

        p = Path(self.model).expanduser()
        if p.is_dir():
            return str(p)
        if (MODELS_DIR / self.model).is_dir():
            return str(MODELS_DIR / self.model)
        from verinet.models.packaged import PACKAGED, checkpoint_dir

        if self.model in PACKAGED:  # a packaged real model: where `verinet models prepare` puts it
            return str(checkpoint_dir(self.model))  # make_backend says how to prepare it when it is not there
        if _HUB_ID.match(self.model) and not self.model.startswith((".", "/")):
            return self.model  # a hub id; it must be in the local cache on offline machines
        raise EnsembleConfigError(
            f"member {self.name}: model {self.model!r} is not a directory, a zoo name, a packaged model (see "
            "`verinet models list`) or a Hugging Face id like Qwen/Qwen2.5-0.5B-Instruct")

    def tokenizer_location(self) -> str | None:
        """For backend openai: a local directory holding the served model's tokenizer (its chat template),
        when the served name is a directory, a zoo name or a prepared packaged model; else None."""
        try:
            loc = MemberSpec.model_location(self.model_copy(update={"backend": "hf"}))
        except EnsembleConfigError:
            return None
        return loc if Path(loc).is_dir() else None


class EnsembleConfig(_Strict):
    members: list[MemberSpec] = Field(min_length=1)
    quorum: int = Field(default=1, ge=1, description="fewest members that must answer a call")
    retries: int = Field(default=1, ge=0, le=10, description="retries of a failed member call before giving up on it")
    call_timeout_s: float = Field(default=600.0, gt=0, description="longest wait for one member call")

    @model_validator(mode="after")
    def _members(self) -> EnsembleConfig:
        names = [m.name for m in self.members]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"member names must be unique; repeated: {dup}")
        if self.quorum > len(self.members):
            raise ValueError(f"quorum {self.quorum} is more than the {len(self.members)} members")
        return self


def load_ensemble_config(path: str | Path, *, check_models: bool = True) -> EnsembleConfig:
    cfg = load_yaml_config(path, EnsembleConfig, EnsembleConfigError, "see configs/ensemble-local.yaml")
    if check_models:
        for m in cfg.members:
            m.model_location()
    return cfg
