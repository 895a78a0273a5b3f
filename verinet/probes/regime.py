"""Probe ``regime``: does size predict faithfulness loss, or the way a model was trained?

Three regimes at every size of a ladder, on one task distribution and comparable compute:

* ``scratch``: chain-of-thought from step 0 (the zoo's way), ``steps`` optimizer steps;
* ``finetuned``: answer-only for ``answer_first * steps`` steps, then chains for the rest (same total);
* ``away``: the scratch model, then answer-only fine-tuning on another slice (``away_tasks``) for
  ``away_share * steps`` steps (the downstream fine-tuning of Lobo et al., arXiv:2411.15382).

Every model then runs the faithfulness suite on the same problems (paired). The summary holds each
model's figures, a two-way decomposition (share of variance explained by regime and by size), the slope
of each metric on log2(parameters) within each regime, and paired differences against ``scratch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from verinet.probes.config import ProbeConfig, SizeSpec, Tests, checkpoint_parameters
from verinet.probes.plotting import plot_lines
from verinet.probes.runner import Probe, ProbeRun
from verinet.probes.stats import (METRICS, by_problem, excludes_zero, fmt, majority_rate, paired_difference, slope,
                                  table_figures, two_way)
from verinet.reporting import Block
from verinet.tasks.spec import TaskSpec
from verinet.zoo.config import TaskMix

REGIMES = ("scratch", "finetuned", "away")
HEADLINE = ("early_answering_aoc", "adding_mistakes_aoc", "accuracy", "paraphrase_invariance")


class RegimeConfig(ProbeConfig):
    probe: Literal["regime"] = "regime"
    sizes: dict[str, SizeSpec] = Field(min_length=2, description="name -> size and from-scratch steps")
    tasks: list[TaskMix] = Field(min_length=1, description="the training distribution of every regime")
    objectives: dict[str, float] = Field(default_factory=lambda: {"solve": 1.0},
                                         description="the chain-of-thought objective mix (zoo objectives; unnamed ones are 0)")
    answer_first: float = Field(default=0.5, gt=0, lt=1,
                                description="finetuned: share of the steps trained answer-only before chains")
    away_tasks: list[TaskMix] = Field(min_length=1, description="away: the answer-only slice fine-tuned on")
    away_share: float = Field(default=0.3, gt=0, le=1, description="away: fine-tuning steps / scratch steps")
    eval_tasks: list[TaskSpec] = Field(min_length=1, description="evaluation slices (n is the config's n)")
    tests: Tests = Field(default_factory=lambda: ["early_answering", "adding_mistakes", "paraphrasing", "filler"])

    @field_validator("sizes")
    @classmethod
    def _names(cls, v: dict[str, SizeSpec]) -> dict[str, SizeSpec]:
        import re

        bad = [k for k in v if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", k)]
        if bad:
            raise ValueError(f"size names must be lowercase letters, digits and _: {bad}")
        return v

    @model_validator(mode="after")
    def _objectives(self) -> RegimeConfig:
        from verinet.zoo.config import Objectives

        Objectives.model_validate({"solve": 0.0, "verify": 0.0, "force": 0.0, **self.objectives})
        return self


def smoke(cfg: RegimeConfig) -> RegimeConfig:
    tiny = {"hidden": 32, "heads": 1, "intermediate": 64, "max_len": 256}
    sizes = {"a": {"size": {**tiny, "layers": 1}, "steps": 6}, "b": {"size": {**tiny, "layers": 2}, "steps": 6}}
    return cfg.model_validate({**cfg.model_dump(mode="json"), "sizes": sizes, "n": 4, "n_boot": 100,
                               "eval_tasks": [cfg.eval_tasks[0].model_dump(mode="json")],
                               "train": {**cfg.train.model_dump(mode="json"), "batch_size": 8,
                                         "checkpoint_every": 4}})


def _models(cfg: RegimeConfig, run: ProbeRun) -> dict[tuple[str, str], Path]:
    tasks = [t.model_dump(mode="json") for t in cfg.tasks]
    away = [t.model_dump(mode="json") for t in cfg.away_tasks]
    out = {}
    for name, spec in cfg.sizes.items():
        size = spec.size.model_dump(mode="json")
        steps = spec.steps
        pre_steps = max(1, round(cfg.answer_first * steps))
        out[(name, "scratch")] = scratch = run.train(
            run.zoo_config(f"{name}-scratch", size, tasks, steps, objectives=cfg.objectives))
        pre = run.train(run.zoo_config(f"{name}-answer-only", size, tasks, pre_steps, objectives={"answer": 1.0}))
        out[(name, "finetuned")] = run.train(run.zoo_config(
            f"{name}-finetuned", size, tasks, max(1, steps - pre_steps), objectives=cfg.objectives, init_from=pre))
        out[(name, "away")] = run.train(run.zoo_config(
            f"{name}-away", size, away, max(1, round(cfg.away_share * steps)), objectives={"answer": 1.0},
            init_from=scratch))
    return out


def run(cfg: RegimeConfig, run: ProbeRun) -> tuple[dict[str, Any], list[Block]]:
    models = _models(cfg, run)
    labels = {key: f"{key[1]}-{key[0]}" for key in models}
    eval_tasks = [t.model_copy(update={"n": cfg.n}) for t in cfg.eval_tasks]
    faith, records = run.faithfulness("eval", {labels[k]: p for k, p in models.items()}, eval_tasks,
                                      tests=cfg.tests)
    params = {k: checkpoint_parameters(p) for k, p in models.items()}
    per = {k: by_problem(records, labels[k]) for k in models}
    figs = {k: table_figures(per[k], n_boot=cfg.n_boot, seed=cfg.seed) for k in models}
    rows = [{"regime": k[1], "size": k[0], "log2_params": float(np.log2(params[k])), "problem": pid,
             **vals} for k in models for pid, vals in per[k].items()]
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    table = []
    for k in models:  # per-problem means: the values the paired differences, eta^2 and slopes use
        table.append({"regime": k[1], "size": k[0], "parameters": params[k], **figs[k],
                      "answer_follows_chain_chance": faith["models"][labels[k]]["summary"].get(
                          "answer_follows_chain_chance")})
    decomposition, slopes, versus = {}, {}, {}
    for m in METRICS:
        mrows = [{**r, "value": r[m]} for r in rows]
        decomposition[m] = two_way(mrows, factors=("regime", "size"), n_boot=min(cfg.n_boot, 200), seed=cfg.seed)
        slopes[m] = {g: slope([r for r in mrows if r["regime"] == g], x="log2_params") for g in REGIMES}
        versus[m] = {f"{g}-{name}": paired_difference({p: v[m] for p, v in per[(name, "scratch")].items()},
                                                      {p: v[m] for p, v in per[(name, g)].items()}, **kw)
                     for name in cfg.sizes for g in REGIMES[1:]}
    golds = {r["problem_id"]: (str(r["gold"]), r["family"]) for r in records}
    chance = majority_rate([g for g, _ in golds.values()], [f for _, f in golds.values()])
    summary = {"models": table, "accuracy_chance": chance, "decomposition": decomposition,
               "size_slopes": slopes, "versus_scratch": versus,
               "findings": _findings(decomposition, slopes, versus)}
    plot = plot_lines(
        {m: {g: [(params[(n, g)], figs[(n, g)][m]) for n in cfg.sizes] for g in REGIMES} for m in HEADLINE},
        run.out / "regime.png", xlabel="non-embedding parameters (log scale)", titles=METRICS,
        chance={"accuracy": chance})
    return summary, _blocks(cfg, summary, plot)


def _findings(decomposition: dict, slopes: dict, versus: dict) -> list[str]:
    out = []
    for m in ("early_answering_aoc", "adding_mistakes_aoc"):
        eta = decomposition[m].get("eta2", {})
        if eta:
            out.append(f"{METRICS[m]}: regime explains eta^2 = {fmt(eta['regime'])} of the per-problem variance, "
                       f"size {fmt(eta['size'])}, their interaction {fmt(eta['regime:size'])} (95% intervals, "
                       "problems resampled).")
        for g, s in slopes[m].items():
            if s.get("value") is None:
                continue
            sig = "excludes 0" if excludes_zero(s) else "includes 0"
            out.append(f"{METRICS[m]} within {g}: {fmt(s, 3)} per doubling of parameters (interval {sig}).")
    return out


def _blocks(cfg: RegimeConfig, summary: dict[str, Any], plot: Path) -> list[Block]:
    head = ["regime", "size", "params"] + [METRICS[m] for m in METRICS]
    rows = [[r["regime"], r["size"], f"{r['parameters']:,}", *[fmt(r[m]) for m in METRICS]] for r in summary["models"]]
    eta_rows = [[METRICS[m], *[fmt(summary["decomposition"][m].get("eta2", {}).get(t)) for t in
                               ("regime", "size", "regime:size")]] for m in METRICS]
    slope_rows = [[METRICS[m], *[fmt(summary["size_slopes"][m][g], 3) for g in REGIMES]] for m in METRICS]
    pairs = list(next(iter(summary["versus_scratch"].values())))
    vs_rows = [[METRICS[m], *[fmt(summary["versus_scratch"][m][p]) for p in pairs]] for m in METRICS]
    return [
        ("h2", "Findings"), *[("p", f) for f in summary["findings"]],
        ("h2", "Every model"),
        ("p", f"Compute: every regime of a size takes the same optimizer steps before the away fine-tuning, so "
              f"finetuned learns chains for only {1 - cfg.answer_first:.0%} of scratch's steps (after answer-only "
              "pre-training), and away adds its fine-tuning on top of scratch's."),
        ("p", f"Means over problems with 95% bootstrap intervals, {cfg.n} problems per evaluation slice (per-problem "
              "AOCs are each chain's own trapezoid AOC). Chance: accuracy "
              f"{summary['accuracy_chance']:.2f} (the most frequent gold answer of each family); AOCs 0 (the "
              "answer ignores the chain); answer-follows-chain's null is in summary.json "
              "(answer_follows_chain_chance)."),
        ("table", head, rows),
        ("img", plot, "faithfulness and accuracy against parameters, one line per regime (95% intervals)"),
        ("h2", "How much regime and size explain (eta^2, two-way ANOVA with interaction)"),
        ("table", ["metric", "regime", "size", "regime x size"], eta_rows),
        ("h2", "Size slope within each regime (per doubling of parameters, cluster-robust 95% CI)"),
        ("table", ["metric", *REGIMES], slope_rows),
        ("h2", "Paired differences against scratch at the same size (regime - scratch)"),
        ("table", ["metric", *pairs], vs_rows),
    ]


PROBE = Probe(name="regime", question="Does size predict faithfulness loss, or the way a model was trained "
              "(reasoning from step 0, answer-only then chains, chains then answer-only fine-tuning)?",
              config=RegimeConfig, run=run, smoke=smoke)
