"""The machinery every probe shares: resumable training, resumable evaluation, and the report.

A probe's output directory::

    config.yaml          the resolved config; a rerun must match it (or use a fresh --out)
    models/NAME/         every model the probe trains (zoo checkpoints; a killed run resumes mid-training)
    faith/KEY/           faithfulness-suite runs (records.jsonl, summary.json, plots), resumable
    records/KEY.jsonl    the probe's own per-problem records, appended as they are made
    summary.json         the probe's figures with 95% intervals
    report.md, report.html, *.png

Nothing here imports Ray: probes run in one process, like ``verinet faithfulness``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from verinet.probes.config import ProbeConfig, ProbeError
from verinet.reporting import Block, write_report
from verinet.results import ResultsLog
from verinet.schema import FORMAT_VERSION
from verinet.tasks.spec import TaskSpec
from verinet.zoo.config import ZooConfig

Progress = Callable[[str, int, int | None], None]  # (stage, done, total)


@dataclass(frozen=True)
class Probe:
    """A registered probe: its name, the question it answers, its config class and its two functions."""

    name: str
    question: str
    config: type[ProbeConfig]
    run: Callable[[Any, ProbeRun], tuple[dict[str, Any], list[Block]]]  # (config, run) -> (summary, report)
    smoke: Callable[[Any], Any]  # config -> the same probe at a size that runs in well under a minute


class ProbeRun:
    """One probe's output directory and the resumable steps a probe is made of."""

    def __init__(self, probe: Probe, config: ProbeConfig, out: Path, *, progress: Progress | None = None) -> None:
        self.probe, self.config, self.out = probe, config, Path(out)
        self.progress = progress or (lambda stage, done, total: None)
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_resume()

    def _check_resume(self) -> None:
        saved = self.out / "config.yaml"
        mine = self.config.model_dump(mode="json")
        if saved.is_file():
            old = yaml.safe_load(saved.read_text(encoding="utf-8"))
            if old != mine:
                differ = sorted(k for k in set(old or {}) | set(mine) if (old or {}).get(k) != mine.get(k))
                raise ProbeError(f"{self.out} holds a run of another config ({', '.join(differ)} differ); use a "
                                 "fresh --out directory, or the earlier config to resume it")
        saved.write_text(yaml.safe_dump(mine, sort_keys=False), encoding="utf-8")

    # ---- training -------------------------------------------------------------------------
    def train(self, zoo: ZooConfig, *, builder: Callable[[ZooConfig, Any], Any] | None = None) -> Path:
        """Train ``zoo`` into models/NAME (resuming a killed run, or returning a finished one).
        ``builder(config, tokenizer)``: another source of training examples (see zoo.train.train)."""
        from verinet.zoo.train import train

        where = self.out / "models" / zoo.name
        stage = f"train {zoo.name}"
        total = zoo.training.steps
        train(zoo, where, builder=builder, on_step=lambda step, loss, tps: self.progress(stage, step, total)
              if step % 10 == 0 or step == total else None)
        self.progress(stage, total, total)
        return where

    def zoo_config(self, name: str, size: Any, tasks: Sequence[Any], steps: int, *,
                   objectives: Mapping[str, float], init_from: str | Path | None = None,
                   seed: int | None = None) -> ZooConfig:
        """A zoo config with this probe's optimizer settings. ``objectives`` is the whole mix: an objective
        it does not name gets share 0 (the zoo's own defaults would add verify and force data)."""
        t = self.config.train
        mix = {"solve": 0.0, "verify": 0.0, "force": 0.0, "answer": 0.0, **objectives}
        return ZooConfig.model_validate({
            "name": name, "size": size, "tasks": list(tasks), "objectives": mix,
            "training": {"steps": steps, "batch_size": t.batch_size, "lr": t.lr, "warmup": t.warmup,
                         "seed": self.config.seed if seed is None else seed, "checkpoint_every": t.checkpoint_every,
                         "threads": t.threads, "device": t.device,
                         "init_from": None if init_from is None else str(init_from)},
        })

    # ---- evaluation -----------------------------------------------------------------------
    def faithfulness(self, key: str, models: Mapping[str, str | Path | Mapping[str, Any]], tasks: Sequence[TaskSpec],
                     *, tests: Sequence[str] | None = None, answer_tokens: int = 8, max_steps: int | None = None,
                     batch_size: int = 50) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The faithfulness suite over ``{label: zoo checkpoint path, or a member spec}`` (resumable);
        returns (summary, records)."""
        from verinet.faithfulness.config import FaithfulnessConfig
        from verinet.faithfulness.job import run_job

        def member(label: str, m: str | Path | Mapping[str, Any]) -> dict[str, Any]:
            if isinstance(m, Mapping):
                return {**m, "name": label}
            return {"name": label, "backend": "hf", "model": str(m), "format": "zoo"}

        spec: dict[str, Any] = {
            "name": f"{self.probe.name}-{key}", "seed": self.config.seed, "n_boot": self.config.n_boot,
            "models": [member(label, m) for label, m in models.items()],
            "tasks": [t.model_dump(mode="json") for t in tasks], "answer_tokens": answer_tokens,
            "max_steps": max_steps, "batch_size": batch_size,
        }
        if tests is not None:
            spec["tests"] = list(tests)
        cfg = FaithfulnessConfig.model_validate(spec)
        where = self.out / "faith" / key
        stage = f"faithfulness {key}"
        summary = run_job(cfg, where, progress=lambda done, total: self.progress(stage, done, total))
        records = [json.loads(line) for line in (where / "records.jsonl").read_text(encoding="utf-8").splitlines()
                   if line.strip()]
        return summary, records

    def records(self, key: str, items: Iterable[Any], make: Callable[[list[Any]], list[dict[str, Any]]], *,
                item_id: Callable[[Any], str], batch: int = 50) -> list[dict[str, Any]]:
        """The probe's own per-item records under records/KEY.jsonl: ``make`` runs on the items not yet
        written, a batch at a time, each record carrying ``id == item_id(item)``; returns them all in order."""
        items = list(items)
        stage = f"evaluate {key}"
        with ResultsLog(self.out / "records" / f"{key}.jsonl", key="id") as log:
            todo = [x for x in items if item_id(x) not in log]
            for i in range(0, len(todo), batch):
                chunk = todo[i:i + batch]
                made = make(chunk)
                if [r["id"] for r in made] != [item_id(x) for x in chunk]:
                    raise ProbeError(f"{key}: the records made do not match their items one to one")
                for r in made:
                    log.append(r)
                self.progress(stage, len(items) - len(todo) + i + len(chunk), len(items))
            return [log.records[item_id(x)] for x in items]

    # ---- output ---------------------------------------------------------------------------
    def finish(self, summary: dict[str, Any], blocks: list[Block]) -> dict[str, Any]:
        full = {"format_version": FORMAT_VERSION, "probe": self.probe.name, "question": self.probe.question,
                "config": self.config.model_dump(mode="json"), **summary}
        (self.out / "summary.json").write_text(json.dumps(full, indent=1), encoding="utf-8")
        write_report(self.out, f"verinet probe {self.probe.name}",
                     [("h1", f"Probe: {self.probe.name}"), ("p", self.probe.question), *blocks])
        return full


def run_probe(probe: Probe, config: ProbeConfig, out: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) ``probe``; writes and returns its summary."""
    run = ProbeRun(probe, config, out, progress=progress)
    summary, blocks = probe.run(config, run)
    return run.finish(summary, blocks)


__all__ = ["Probe", "ProbeRun", "Progress", "run_probe"]
