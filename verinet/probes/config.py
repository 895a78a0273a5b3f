"""What every probe config holds; each probe's config adds its own fields to :class:`ProbeConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from verinet.faithfulness.config import Test
from verinet.schema import load_yaml_config
from verinet.zoo.config import ModelSize, TaskMix


class ProbeError(ValueError):
    """A probe cannot run as configured; the message says what to change."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SizeSpec(_Strict):
    """One rung of a probe's size ladder: an architecture and its optimizer steps."""

    size: ModelSize
    steps: int = Field(ge=1, le=1_000_000, description="optimizer steps of a from-scratch run at this size")


class TrainSpec(_Strict):
    """Optimizer settings shared by every model a probe trains (the zoo's defaults)."""

    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=3e-3, gt=0, le=1.0)
    warmup: float = Field(default=0.05, ge=0, lt=1)
    checkpoint_every: int = Field(default=100, ge=1, description="steps between resumable checkpoints")
    threads: int | None = Field(default=1, ge=1, description="torch CPU threads per training run")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ProbeConfig(_Strict):
    """The fields every probe shares."""

    probe: str = Field(description="the probe this config is for (see `verinet probe list`)")
    seed: int = Field(default=0, ge=0, description="training, problem and bootstrap seed")
    n: int = Field(default=100, ge=2, le=100_000, description="evaluation problems per task")
    n_boot: int = Field(default=1000, ge=100, le=100_000, description="bootstrap resamples per 95% interval")
    train: TrainSpec = TrainSpec()
    out_dir: str | None = Field(default=None, description="default: runs/probes/PROBE")


Tests = list[Test]  # a probe config's faithfulness tests: validated when the config loads, not after training

C = TypeVar("C", bound=ProbeConfig)


def load_probe_config(path: str | Path, model: type[C], probe: str) -> C:
    cfg = load_yaml_config(path, model, ProbeError, f"see configs/probes/{probe}.yaml")
    if cfg.probe != probe:
        raise ProbeError(f"{path}: a config for probe {cfg.probe!r}, not {probe!r}; "
                         f"use configs/probes/{probe}.yaml or set probe: {probe}")
    return cfg


def task_dicts(mixes: list[TaskMix]) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in mixes]


def checkpoint_parameters(path: str | Path) -> int:
    """Non-embedding parameters of a zoo checkpoint the probe trained (from its training.json)."""
    import json

    return int(json.loads((Path(path) / "training.json").read_text())["parameters"]["non_embedding"])


__all__ = ["ProbeConfig", "ProbeError", "SizeSpec", "Tests", "TrainSpec", "checkpoint_parameters",
           "load_probe_config", "task_dicts"]
