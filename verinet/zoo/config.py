"""Typed configs for zoo models and their training (configs/zoo/*.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from verinet.schema import load_yaml_config
from verinet.tasks import TaskError, get_family

MIN_HEAD_DIM = 32  # vLLM's CPU attention kernel refuses smaller heads


EXIT_RESUMABLE = 75  # `verinet zoo train` stopped by its time budget or a signal, its state saved (EX_TEMPFAIL)


class ZooError(ValueError):
    """A zoo config, checkpoint or request that cannot be used; the message says how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSize(_Strict):
    """Llama architecture sizes. Parameters are dominated by layers * (4 d^2 + 3 d ff)."""

    hidden: int = Field(ge=32, le=4096, description="model width d")
    layers: int = Field(ge=1, le=64)
    heads: int = Field(ge=1, le=64)
    intermediate: int = Field(ge=32, le=16384, description="SwiGLU inner width")
    max_len: int = Field(default=512, ge=64, le=8192, description="longest sequence, in characters")

    @model_validator(mode="after")
    def _head_dim(self) -> ModelSize:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.hidden // self.heads < MIN_HEAD_DIM:
            raise ValueError(
                f"head_dim = hidden / heads = {self.hidden // self.heads} < {MIN_HEAD_DIM}: vLLM's CPU "
                f"attention refuses it; use at most {self.hidden // MIN_HEAD_DIM} heads"
            )
        return self


class TaskMix(_Strict):
    """A family and the range of difficulties drawn for training and evaluation."""

    family: Literal["arith", "logic"]
    weight: float = Field(default=1.0, gt=0)
    params: list[dict[str, Any]] = Field(min_length=1, description="knob settings, drawn uniformly")

    @model_validator(mode="after")
    def _knobs(self) -> TaskMix:
        fam = get_family(self.family)
        for i, p in enumerate(self.params):
            try:
                fam.knobs(p)
            except TaskError as e:
                raise ValueError(f"params.{i}: {e}") from None
        return self


class Objectives(_Strict):
    """Shares of the three kinds of training example."""

    solve: float = Field(default=0.5, ge=0)
    verify: float = Field(default=0.3, ge=0)
    force: float = Field(default=0.2, ge=0)
    answer: float = Field(default=0.0, ge=0,
                          description="answer-only examples: the solve prompt followed by the answer line alone "
                                      "(no steps), the data of answer-only fine-tuning")
    solve_first: float = Field(
        default=0.0, ge=0, lt=1,
        description="share of the training steps that learn to solve only, before verifying and answer "
                    "forcing join: a mixture from step 0 keeps small solvers below the operand-lookup jump")

    @model_validator(mode="after")
    def _some(self) -> Objectives:
        if self.solve + self.verify + self.force + self.answer <= 0:
            raise ValueError("at least one of solve, verify, force, answer must be > 0")
        return self


class Training(_Strict):
    steps: int = Field(ge=1, le=10_000_000, description="optimizer steps")
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=3e-3, gt=0, le=1.0)
    warmup: float = Field(default=0.05, ge=0, lt=1, description="share of steps for linear warm-up")
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(default=1.0, gt=0)
    seed: int = Field(default=0, ge=0)
    checkpoint_every: int = Field(default=200, ge=1, description="steps between resumable checkpoints")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads; None = all cores")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    init_from: str | None = Field(
        default=None, description="a zoo checkpoint (name or directory) whose weights start this run: fine-tuning; "
                                  "its size must equal this config's size")
    dtype: Literal["float32", "bfloat16"] = Field(
        default="float32", description="autocast dtype on GPU; CPU trains in float32"
    )


class ZooConfig(_Strict):
    """One zoo model: its size, what it learns and how long."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    size: ModelSize
    tasks: list[TaskMix] = Field(min_length=1)
    objectives: Objectives = Objectives()
    training: Training
    eval_n: int = Field(default=200, ge=10, description="held-out problems per family and difficulty for the card")


def load_zoo_config(path: str | Path) -> ZooConfig:
    return load_yaml_config(path, ZooConfig, ZooError, "see configs/zoo/")
