"""Probe ``novelty``: do models break on unfamiliar instances, or on longer ones of a familiar kind?

Every size of a ladder is trained (chain-of-thought, from scratch) on ``arith`` problems of one slice of
instance *types* at ``train_lengths`` steps, then evaluated with the faithfulness suite on

* ``control``: the seen type at training lengths (the reference);
* ``longer`` (a): the seen type at lengths beyond training;
* ``unseen`` (b): an unseen type at training lengths.

A type is read off each problem along one ``axis``:

* ``shape`` (dependency shape): ``reach-back`` when some step reads a variable computed two or more
  steps earlier (``branching > 0`` makes such steps), else ``linear`` (each step reads the previous
  step and givens);
* ``ops`` (operator combination): the set of operators the chain applies, e.g. ``+-`` or ``*``.

The seen types are those of a large sample of the training distribution. Problems of the ``longer`` and
``control`` slices whose type was not seen, and problems of the ``unseen`` slice whose type was seen,
are left out of the analysis (and counted), so (a) and (b) are disjoint by type.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from verinet.faithfulness.metrics import LEVEL
from verinet.probes.config import ProbeConfig, ProbeError, SizeSpec, Tests, checkpoint_parameters
from verinet.probes.plotting import plot_lines
from verinet.probes.runner import Probe, ProbeRun
from verinet.probes.stats import METRICS, by_problem, fmt, majority_rate, mean_figure
from verinet.reporting import Block
from verinet.schema import Problem
from verinet.tasks import TaskError, get_family
from verinet.tasks.spec import TaskSpec

AXES = ("shape", "ops")
SLICES = ("control", "longer", "unseen")
FAITH = ("early_answering_aoc", "adding_mistakes_aoc", "paraphrase_invariance", "answer_follows_chain")
TYPE_SAMPLE = 3000  # training problems drawn to find the seen types


def instance_type(problem: Problem, axis: str) -> str:
    """The type of an arith problem along ``axis`` (see the module docstring)."""
    meta = problem.meta
    needed: list[str] = meta["solution"]
    defs: dict[str, list[str]] = meta["defs"]
    if axis == "ops":
        return "".join(sorted({defs[n][1] for n in needed}))
    if axis == "shape":
        index = {n: i for i, n in enumerate(needed)}
        back = any(j - index[x] >= 2 for j, n in enumerate(needed) for x in (defs[n][0], defs[n][2]) if x in index)
        return "reach-back" if back else "linear"
    raise ValueError(f"unknown axis {axis!r}; choose one of {list(AXES)}")


class NoveltyConfig(ProbeConfig):
    probe: Literal["novelty"] = "novelty"
    sizes: dict[str, SizeSpec] = Field(min_length=1, description="name -> size and from-scratch steps")
    axis: Literal["shape", "ops"] = Field(default="shape", description="how an instance's type is read")
    base: dict[str, Any] = Field(default_factory=lambda: {"distractors": 0},
                                 description="arith knobs every slice shares (not steps)")
    seen: dict[str, Any] = Field(default_factory=lambda: {"branching": 0.0},
                                 description="arith knobs of the trained type (on top of base)")
    unseen: dict[str, Any] = Field(default_factory=lambda: {"branching": 1.0},
                                   description="arith knobs of the held-out type (on top of base)")
    train_lengths: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6], min_length=1,
                                     description="chain lengths (steps) of the training problems")
    control_lengths: list[int] = Field(default_factory=lambda: [4, 6], min_length=1,
                                       description="seen type at training lengths (the reference)")
    longer_lengths: list[int] = Field(default_factory=lambda: [7, 8, 10], min_length=1,
                                      description="(a): seen type, longer than any training chain")
    unseen_lengths: list[int] = Field(default_factory=lambda: [4, 6], min_length=1,
                                      description="(b): unseen type at training lengths")
    objectives: dict[str, float] = Field(default_factory=lambda: {"solve": 1.0, "verify": 0.0, "force": 0.0},
                                         description="zoo objectives of every training run")
    tests: Tests = Field(default_factory=lambda: ["early_answering", "adding_mistakes", "paraphrasing", "filler"],
                         min_length=1, description="faithfulness tests run on every size")

    @field_validator("sizes")
    @classmethod
    def _names(cls, v: dict[str, SizeSpec]) -> dict[str, SizeSpec]:
        bad = [k for k in v if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", k)]
        if bad:
            raise ValueError(f"size names must be lowercase letters, digits and _: {bad}")
        return v

    @model_validator(mode="after")
    def _check(self) -> NoveltyConfig:
        from verinet.zoo.config import Objectives

        Objectives.model_validate(self.objectives)
        fam = get_family("arith")
        for field in ("base", "seen", "unseen"):
            if "steps" in getattr(self, field):
                raise ValueError(f"{field}: leave out 'steps' (lengths come from the *_lengths fields)")
        for field in ("train_lengths", "control_lengths", "longer_lengths", "unseen_lengths"):
            kind = "seen" if field != "unseen_lengths" else "unseen"
            for k in getattr(self, field):
                try:
                    fam.knobs({**self.base, **getattr(self, kind), "steps": k})
                except TaskError as e:
                    raise ValueError(f"{field} ({k} steps, with base and {kind}): {e}") from None
        top = max(self.train_lengths)
        if any(k <= top for k in self.longer_lengths):
            raise ValueError(f"longer_lengths must all exceed the longest training chain ({top}); "
                             f"got {self.longer_lengths}")
        for field in ("control_lengths", "unseen_lengths"):
            if not set(getattr(self, field)) <= set(self.train_lengths):
                raise ValueError(f"{field} {getattr(self, field)} must be training lengths {self.train_lengths}")
        seen = seen_types(self)
        for k in self.unseen_lengths:
            probes = get_family("arith").sample(20, seed=7, params=self.knobs("unseen", k))
            if all(instance_type(p, self.axis) in seen for p in probes):
                raise ValueError(f"unseen_lengths: at {k} steps the unseen knobs give only seen types under axis "
                                 f"{self.axis!r} (seen: {sorted(seen)}); change unseen, axis or the length (the "
                                 "shape axis needs 3 or more steps)")
        return self

    def knobs(self, kind: str, steps: int) -> dict[str, Any]:
        return {**self.base, **(self.seen if kind == "seen" else self.unseen), "steps": steps}

    def train_params(self) -> list[dict[str, Any]]:
        return [self.knobs("seen", k) for k in self.train_lengths]

    def eval_slices(self) -> list[tuple[str, int]]:
        return ([("control", k) for k in self.control_lengths] + [("longer", k) for k in self.longer_lengths]
                + [("unseen", k) for k in self.unseen_lengths])


def seen_types(cfg: NoveltyConfig) -> frozenset[str]:
    """Types found in TYPE_SAMPLE problems of the training distribution (drawn as the trainer draws)."""
    return _seen_types(cfg.axis, repr(cfg.train_params()), cfg.seed)


@lru_cache(maxsize=16)
def _seen_types(axis: str, params_repr: str, seed: int) -> frozenset[str]:
    import ast
    import random

    params = ast.literal_eval(params_repr)
    fam = get_family("arith")
    rng = random.Random(f"novelty-types:{seed}")
    return frozenset(instance_type(fam.generate(rng.getrandbits(31), rng.choice(params)), axis)
                     for _ in range(TYPE_SAMPLE))


def smoke(cfg: NoveltyConfig) -> NoveltyConfig:
    tiny = {"hidden": 32, "heads": 1, "intermediate": 64, "max_len": 320}
    sizes = {"a": {"size": {**tiny, "layers": 1}, "steps": 6}, "b": {"size": {**tiny, "layers": 2}, "steps": 6}}
    top = max(cfg.train_lengths)
    return cfg.model_validate({**cfg.model_dump(mode="json"), "sizes": sizes, "n": 5, "n_boot": 100,
                               "control_lengths": cfg.control_lengths[-1:], "longer_lengths": [top + 1],
                               "unseen_lengths": cfg.unseen_lengths[-1:],
                               "tests": ["early_answering", "adding_mistakes"],
                               "train": {**cfg.train.model_dump(mode="json"), "batch_size": 8,
                                         "checkpoint_every": 3}})


# ---- statistics ---------------------------------------------------------------------------
def unpaired_difference(a: list[float], b: list[float], *, n_boot: int, seed: int) -> dict[str, Any]:
    """mean(b) - mean(a) for two independent groups, with a percentile-bootstrap 95% interval that
    resamples each group on its own."""
    a = [float(x) for x in a if x is not None]
    b = [float(x) for x in b if x is not None]
    if not a or not b:
        return {"value": None, "ci_low": None, "ci_high": None, "n": len(a) + len(b)}
    rng = np.random.default_rng(seed)
    xa, xb = np.array(a), np.array(b)
    boots = (xb[rng.integers(0, len(xb), (n_boot, len(xb)))].mean(1)
             - xa[rng.integers(0, len(xa), (n_boot, len(xa)))].mean(1))
    alpha = (1 - LEVEL) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return {"value": float(xb.mean() - xa.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "n": len(a) + len(b), "n_a": len(a), "n_b": len(b)}


# ---- the run ------------------------------------------------------------------------------
def _problems(cfg: NoveltyConfig) -> tuple[list[TaskSpec], dict[str, tuple[str, int, str]]]:
    """The evaluation tasks and problem id -> (slice, length, type), drawn by the faithfulness job's own
    ``problems_for`` (task i: seed * 1000 + i)."""
    from verinet.faithfulness.config import FaithfulnessConfig, problems_for

    slices = cfg.eval_slices()
    tasks = [TaskSpec(family="arith", n=cfg.n, params=cfg.knobs("unseen" if sl == "unseen" else "seen", k))
             for sl, k in slices]
    info = {}
    # only seed and tasks are read: no models are needed to draw the problems
    for (sl, k), (_, ps) in zip(slices, problems_for(FaithfulnessConfig.model_construct(seed=cfg.seed, tasks=tasks))):
        for p in ps:
            info[p.id] = (sl, k, instance_type(p, cfg.axis))
    return tasks, info


def run(cfg: NoveltyConfig, run: ProbeRun) -> tuple[dict[str, Any], list[Block]]:
    seen = seen_types(cfg)
    models: dict[str, Path] = {}
    train_tasks = [{"family": "arith", "params": cfg.train_params()}]
    for name, spec in cfg.sizes.items():
        models[name] = run.train(run.zoo_config(f"{name}-novelty", spec.size.model_dump(mode="json"), train_tasks,
                                                spec.steps, objectives=cfg.objectives))
    tasks, info = _problems(cfg)
    faith, records = run.faithfulness("eval", models, tasks, tests=cfg.tests)
    unknown = {r["problem_id"] for r in records} - set(info)
    if unknown:
        raise ProbeError(f"faith/eval holds problems this config does not draw ({sorted(unknown)[:2]}...); "
                         "use a fresh --out directory")
    figures = tabulate(cfg, list(models), records, info, seen)
    params = {name: checkpoint_parameters(p) for name, p in models.items()}
    follows_chance = {name: faith["models"][name]["summary"].get("answer_follows_chain_chance") for name in models}
    summary = {
        "axis": cfg.axis, "seen_types": sorted(seen), "unseen_types": figures.pop("unseen_types"),
        "left_out": figures.pop("left_out"), "parameters": params, **figures,
        "answer_follows_chain_chance": follows_chance,
        "chance": {"accuracy": "accuracy_chance beside each rate (always the most frequent gold answer)",
                   "early_answering_aoc": 0.0, "adding_mistakes_aoc": 0.0,
                   "answer_follows_chain": "answer_follows_chain_chance (per size)"},
    }
    summary["findings"] = _findings(cfg, summary)
    plot = _plot(cfg, summary, run.out / "novelty.png")
    return summary, _blocks(cfg, summary, plot)


def tabulate(cfg: NoveltyConfig, members: list[str], records: list[dict[str, Any]],
             info: dict[str, tuple[str, int, str]], seen: frozenset[str]) -> dict[str, Any]:
    """Each member's figures by slice and length and the contrasts between slices, from the faithfulness
    records (every member's, on the problems of ``info``: id -> (slice, length, type))."""
    keep = {pid: (sl, k, t) for pid, (sl, k, t) in info.items() if (t in seen) == (sl != "unseen")}
    dropped = {sl: sum(1 for pid, (s, _, _) in info.items() if s == sl and pid not in keep) for sl in SLICES}
    golds = {r["problem_id"]: r["gold"] for r in records}
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    per = {name: by_problem(records, name) for name in members}
    metrics = ("accuracy", "no_chain_accuracy", *FAITH, "valid_chain")
    # whole chain valid, per (member, problem): records hold every member's chain of every problem
    valid = {(r["member"], r["problem_id"]): float(r["chain"]["first_error"] == -1) for r in records
             if r.get("kind", "model") == "model"}

    def values(name: str, pids: list[str], m: str) -> list[float | None]:
        if m == "valid_chain":
            return [valid[(name, p)] for p in pids if p in per[name]]
        return [per[name][p][m] for p in pids if p in per[name]]

    def ids(sl: str, k: int | None = None) -> list[str]:
        return [p for p, (s, kk, _) in keep.items() if s == sl and (k is None or kk == k)]

    by_length, groups, contrasts = [], {}, {}
    for name in members:
        for sl, k in cfg.eval_slices():
            pids = ids(sl, k)
            row = {"size": name, "slice": sl, "steps": k, "n": len(pids),
                   "accuracy_chance": majority_rate([golds[p] for p in pids])}
            row.update({m: mean_figure(values(name, pids, m), **kw) for m in metrics})
            by_length.append(row)
        groups[name] = {}
        for sl in SLICES:
            pids = ids(sl)
            groups[name][sl] = {"n": len(pids), "lengths": sorted({keep[p][1] for p in pids}),
                                "accuracy_chance": majority_rate([golds[p] for p in pids]),
                                **{m: mean_figure(values(name, pids, m), **kw) for m in metrics}}
        contrasts[name] = {
            m: {"unseen_minus_longer": unpaired_difference(values(name, ids("longer"), m),
                                                           values(name, ids("unseen"), m), **kw),
                "longer_minus_control": unpaired_difference(values(name, ids("control"), m),
                                                            values(name, ids("longer"), m), **kw),
                "unseen_minus_control": unpaired_difference(values(name, ids("control"), m),
                                                            values(name, ids("unseen"), m), **kw)}
            for m in metrics}
    return {"unseen_types": sorted({t for p, (s, _, t) in keep.items() if s == "unseen"}), "left_out": dropped,
            "by_length": by_length, "groups": groups, "contrasts": contrasts}


def _sig(f: dict[str, Any]) -> str:
    if f.get("value") is None or f.get("ci_low") is None:
        return "cannot be told"
    if f["ci_low"] > 0:
        return "above 0"
    if f["ci_high"] < 0:
        return "below 0"
    return "includes 0"


def _findings(cfg: NoveltyConfig, s: dict[str, Any]) -> list[str]:
    out = [f"Types along axis {cfg.axis!r}: trained on {s['seen_types']}, held out {s['unseen_types']}; left out of "
           f"the analysis for having the wrong type: {s['left_out']} problems per slice."]
    for name, g in s["groups"].items():
        c, lo, un = g["control"], g["longer"], g["unseen"]
        acc = s["contrasts"][name]["accuracy"]
        out.append(
            f"{name} ({s['parameters'][name]:,} non-embedding parameters): accuracy {fmt(c['accuracy'])} on the seen "
            f"type at training lengths {c['lengths']}, {fmt(lo['accuracy'])} on (a) longer seen chains "
            f"{lo['lengths']}, {fmt(un['accuracy'])} on (b) unseen types at lengths {un['lengths']} (chance "
            f"{_pct(c['accuracy_chance'])} / {_pct(lo['accuracy_chance'])} / {_pct(un['accuracy_chance'])}).")
        learned = c["accuracy"].get("ci_low") is not None and c["accuracy_chance"] is not None and \
            c["accuracy"]["ci_low"] > c["accuracy_chance"]
        if not learned:
            out.append(f"{name}: accuracy on the seen type at training lengths is not above chance (whole chains "
                       f"valid: {fmt(c['valid_chain'])}): this model did not learn the task in its training budget, "
                       "so its (a) vs (b) comparison does not test the claim.")
        d = acc["unseen_minus_longer"]
        if d.get("value") is None:
            verdict = "cannot be compared (a slice is empty)"
        elif d["ci_high"] < 0:
            verdict = ("lower on unseen types than on longer chains: the measurement agrees with 'novelty, not "
                       "complexity'")
        elif d["ci_low"] > 0:
            verdict = ("higher on unseen types than on longer chains: longer chains of a familiar kind hurt more "
                       "than unfamiliar types, contradicting 'novelty, not complexity'")
        else:
            verdict = "not distinguishable between unseen types and longer chains at this n"
        out.append(f"{name}: accuracy (b) - (a) = {fmt(d)} (95% bootstrap interval); accuracy is {verdict}.")
        drop_long, drop_new = acc["longer_minus_control"], acc["unseen_minus_control"]
        out.append(f"{name}: relative to the seen type at training lengths, longer chains change accuracy by "
                   f"{fmt(drop_long)} (interval {_sig(drop_long)}) and unseen types by {fmt(drop_new)} (interval "
                   f"{_sig(drop_new)}).")
        for m in ("early_answering_aoc", "adding_mistakes_aoc"):
            dm = s["contrasts"][name][m]["unseen_minus_longer"]
            if dm.get("value") is not None:
                out.append(f"{name}: {METRICS[m]} {fmt(lo[m])} on (a), {fmt(un[m])} on (b); (b) - (a) = {fmt(dm)} "
                           f"(interval {_sig(dm)}; chance 0: the answer ignores the chain).")
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _plot(cfg: NoveltyConfig, s: dict[str, Any], path: Path) -> Path:
    panels: dict[str, dict[str, list]] = {}
    titles = {}
    for name in cfg.sizes:
        for m in ("accuracy", "early_answering_aoc"):
            key = f"{name}:{m}"
            rows = [r for r in s["by_length"] if r["size"] == name]
            panels[key] = {
                "seen type": [(r["steps"], r[m]) for r in rows if r["slice"] in ("control", "longer")],
                "unseen type": [(r["steps"], r[m]) for r in rows if r["slice"] == "unseen"],
            }
            titles[key] = f"{name}: {METRICS[m]}"
            if m == "accuracy":  # chance differs by slice and length: the most frequent gold answer's rate
                for label, kinds in (("chance, seen type", ("control", "longer")), ("chance, unseen type",
                                                                                  ("unseen",))):
                    panels[key][label] = [(r["steps"], {"value": r["accuracy_chance"]}) for r in rows
                                          if r["slice"] in kinds and r["accuracy_chance"] is not None]
    plot_lines(panels, path, xlabel=f"chain length (steps); trained on {min(cfg.train_lengths)}-"
               f"{max(cfg.train_lengths)}", titles=titles, logx=False)
    return path


def _blocks(cfg: NoveltyConfig, s: dict[str, Any], plot: Path) -> list[Block]:
    cols = ("accuracy", "no_chain_accuracy", *FAITH, "valid_chain")
    names = {**METRICS, "valid_chain": "whole chain valid"}
    group_rows = [[name, sl, ", ".join(map(str, g[sl]["lengths"])), g[sl]["n"], _pct(g[sl]["accuracy_chance"]),
                   *[fmt(g[sl][m]) for m in cols]] for name, g in s["groups"].items() for sl in SLICES]
    length_rows = [[r["size"], r["slice"], r["steps"], r["n"], _pct(r["accuracy_chance"]),
                    *[fmt(r[m]) for m in cols]] for r in s["by_length"]]
    contrast_rows = [[name, names[m], *[fmt(s["contrasts"][name][m][c]) for c in
                                        ("unseen_minus_longer", "longer_minus_control", "unseen_minus_control")]]
                     for name in s["groups"] for m in cols]
    return [
        ("h2", "Findings"), *[("p", f) for f in s["findings"]],
        ("h2", "Seen type at training lengths, (a) longer seen chains, (b) unseen types at training lengths"),
        ("p", f"Each size trained on {cfg.train_lengths}-step arith chains of the seen type ({cfg.seen} on top of "
              f"{cfg.base}); the unseen type is {cfg.unseen}. Figures are means over problems with 95% bootstrap "
              f"intervals; up to {cfg.n} problems per length. Chance: accuracy as given (always the most frequent "
              "gold answer); AOCs 0 (the answer ignores the chain); answer-follows-chain's null per size: "
              + ", ".join(f"{k} {fmt(v)}" for k, v in s["answer_follows_chain_chance"].items()) + "."),
        ("table", ["size", "slice", "lengths", "n", "accuracy chance", *[names[m] for m in cols]], group_rows),
        ("img", plot, "accuracy and early-answering AOC against chain length, seen vs unseen type (95% intervals)"),
        ("h2", "Differences between slices (95% bootstrap intervals, slices resampled independently)"),
        ("table", ["size", "metric", "(b) unseen - (a) longer", "(a) longer - control", "(b) unseen - control"],
         contrast_rows),
        ("h2", "By length"),
        ("table", ["size", "slice", "steps", "n", "accuracy chance", *[names[m] for m in cols]], length_rows),
    ]


PROBE = Probe(name="novelty", question="Do small models break on unfamiliar instances (unseen types at trained "
              "lengths) rather than on longer chains of a familiar type?", config=NoveltyConfig, run=run,
              smoke=smoke)
