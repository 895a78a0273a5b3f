"""Probe ``length``: is accuracy an inverted U in chain length, and does a long chain dilute an instruction?

The same arith problems are written at several granularities (arith_chains): ``multi`` (several
operations a line, the inner results unwritten: the shortest chain), ``one`` (today's chains),
``spelled`` (each operation as four one-action lines) and ``padded`` (today's lines plus filler: longer
with nothing added). At every size one model learns each rendering, on the same problems and the same
step budget. A share ``instruction_share`` of the training prompts starts with ``!w;``, "answer in
words" (``#### seven``).

Every model then solves ``n`` problems at each difficulty (``eval_steps`` operations), once plainly
and once with the instruction. Per size and difficulty: accuracy against the chain's length in
characters, the rendering at which it peaks (with paired differences to the others), and adherence
to the instruction (answers in words) against chain length.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from verinet.probes import arith_chains as ac
from verinet.probes.config import ProbeConfig, SizeSpec
from verinet.probes.plotting import plot_lines
from verinet.probes.runner import Probe, ProbeRun
from verinet.probes.stats import fmt, majority_rate, mean_figure, paired_difference, slope
from verinet.probes.tools import (Solver, check_knobs, check_lengths, check_size_names, max_new, plan, problems,
                                  train_models)
from verinet.reporting import Block
from verinet.schema import Problem


class RenderingSpec(BaseModel):
    """One granularity: ``kind``; ``group`` operations a line for multi; ``pad`` filler dots for padded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["multi", "one", "spelled", "padded"]
    group: int = Field(default=2, ge=2, le=6, description="multi: operations per line")
    pad: int = Field(default=12, ge=1, le=64, description="padded: filler characters per line")

    def rendering(self) -> ac.Rendering:
        return ac.Rendering(self.kind, self.group, self.pad)


def _default_renderings() -> dict[str, RenderingSpec]:
    return {"multi": RenderingSpec(kind="multi", group=2), "one": RenderingSpec(kind="one"),
            "spelled": RenderingSpec(kind="spelled"), "padded": RenderingSpec(kind="padded", pad=12)}


class LengthConfig(ProbeConfig):
    probe: Literal["length"] = "length"
    sizes: dict[str, SizeSpec] = Field(min_length=1, description="name -> size and optimizer steps (every rendering)")
    renderings: dict[str, RenderingSpec] = Field(default_factory=_default_renderings, min_length=2,
                                                 description="name -> granularity; one model each per size")
    train_steps: list[int] = Field(default_factory=lambda: list(range(1, 7)), min_length=1,
                                   description="chain lengths (operations) the models learn")
    eval_steps: list[int] = Field(default_factory=lambda: [2, 4, 6], min_length=1,
                                  description="difficulties evaluated (operations), n problems each")
    knobs: dict[str, Any] = Field(default_factory=lambda: {"distractors": 0, "branching": 0.0},
                                  description="other arith knobs of every problem (not steps)")
    instruction_share: float = Field(default=0.3, gt=0, lt=1,
                                     description="share of training prompts carrying the answer-in-words rule")
    shared: bool = Field(default=True, description="one model per size learns every rendering, each prompt tagged "
                                                   "'&K;' (K: the rendering's index); false: one model per rendering")

    @field_validator("sizes")
    @classmethod
    def _names(cls, v: dict[str, SizeSpec]) -> dict[str, SizeSpec]:
        return check_size_names(v)

    @field_validator("renderings")
    @classmethod
    def _rendering_names(cls, v: dict[str, RenderingSpec]) -> dict[str, RenderingSpec]:
        bad = [k for k in v if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", k)]
        if bad:
            raise ValueError(f"rendering names must be lowercase letters, digits and _: {bad}")
        return v

    @field_validator("train_steps", "eval_steps")
    @classmethod
    def _lengths(cls, v: list[int]) -> list[int]:
        return check_lengths(v)

    @model_validator(mode="after")
    def _consistent(self) -> LengthConfig:
        check_knobs(self.knobs, max(self.train_steps + self.eval_steps))
        return self


def smoke(cfg: LengthConfig) -> LengthConfig:
    tiny = {"hidden": 32, "layers": 1, "heads": 1, "intermediate": 64, "max_len": 256}
    return cfg.model_validate({**cfg.model_dump(mode="json"), "sizes": {"a": {"size": tiny, "steps": 4}},
                               "train_steps": [1, 2], "eval_steps": [1, 2], "n": 4, "n_boot": 100,
                               "train": {**cfg.train.model_dump(mode="json"), "batch_size": 8, "checkpoint_every": 2}})


# ---- evaluation ------------------------------------------------------------------------------
def _item_id(item: tuple[int, Problem, bool]) -> str:
    return item[1].id + ("+w" if item[2] else "")


def _chain_chars(text: str) -> int:
    """Characters of a chain before its answer line."""
    cut = text.find(ac.ANSWER_CUE)
    return len(text if cut < 0 else text[:cut].rstrip("\n"))


def _chain_lines(text: str) -> int:
    cut = text.find(ac.ANSWER_CUE)
    return (text if cut < 0 else text[:cut]).count("\n")


def solve_records(solver: Solver, variant: ac.Variant, items: list[tuple[int, Problem, bool]]
                  ) -> list[dict[str, Any]]:
    probs = [p for _, p, _ in items]
    got = solver([ac.prompt(p, instruct=w, tag=variant.tag) for _, p, w in items], [None] * len(items),
                 max_new(probs, variant.rendering))
    out = []
    for (L, p, w), d in zip(items, got):
        answer, in_words = ac.read_answer(d.text)
        out.append({"id": _item_id((L, p, w)), "problem": p.id, "steps": L, "instruct": w, "gold": p.answer,
                    "answer": answer, "correct": answer == p.answer, "words": in_words,
                    "chars": _chain_chars(d.text), "lines": _chain_lines(d.text),
                    "finished": d.finished, "chain": d.text})
    return out


def run(cfg: LengthConfig, run: ProbeRun) -> tuple[dict[str, Any], list[Block]]:
    renderings = {k: r.rendering() for k, r in cfg.renderings.items()}
    modes = plan({k: ac.Variant(r, f"&{i};") for i, (k, r) in enumerate(renderings.items())}, cfg.shared)
    models = train_models(cfg, run, modes, cfg.train_steps, cfg.knobs, instruct=cfg.instruction_share)
    solvers = {path: Solver(path, cfg.train.threads) for path in set(models.values())}
    base = problems(cfg, cfg.eval_steps, cfg.knobs)
    items = [(L, p, w) for L, p in base for w in (False, True)]
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    chance = {L: majority_rate([p.answer for M, p in base if M == L]) for L in cfg.eval_steps}
    gold_chars = {(r, L): float(np.mean([_chain_chars(ac.chain_text(p, rend)) for M, p in base if M == L]))
                  for r, rend in renderings.items() for L in cfg.eval_steps}
    cells: dict[tuple[str, str, int], dict[str, Any]] = {}
    per: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for (size, rname), path in models.items():
        recs = run.records(f"{size}-{rname}", items,
                           lambda chunk, s=solvers[path], v=modes[rname][1]: solve_records(s, v, chunk),
                           item_id=_item_id)
        per[(size, rname)] = {r["id"]: r for r in recs}
        for L in cfg.eval_steps:
            plain = [r for r in recs if r["steps"] == L and not r["instruct"]]
            told = [r for r in recs if r["steps"] == L and r["instruct"]]
            cells[(size, rname, L)] = {
                "size": size, "rendering": rname, "steps": L, "gold_chars": gold_chars[(rname, L)],
                "chars": mean_figure([r["chars"] for r in plain], **kw),
                "accuracy": mean_figure([r["correct"] for r in plain], **kw),
                "adherence": mean_figure([r["words"] for r in told], **kw),
                "accuracy_instructed": mean_figure([r["correct"] for r in told], **kw),
                "words_unasked": mean_figure([r["words"] for r in plain], **kw)}
    optimum, adherence_slope = {}, {}
    for size in cfg.sizes:
        for L in cfg.eval_steps:
            accs = {r: cells[(size, r, L)]["accuracy"]["value"] for r in renderings}
            best = max(accs, key=lambda r: (accs[r] if accs[r] is not None else -1, -gold_chars[(r, L)]))
            by_len = sorted(renderings, key=lambda r: gold_chars[(r, L)])
            ids = [p.id for M, p in base if M == L]
            versus = {r: paired_difference({i: float(per[(size, r)][i]["correct"]) for i in ids},
                                           {i: float(per[(size, best)][i]["correct"]) for i in ids}, **kw)
                      for r in renderings if r != best}
            lengths = [gold_chars[(r, L)] for r in renderings]
            interior = min(lengths) < gold_chars[(best, L)] < max(lengths)
            above = cells[(size, best, L)]["accuracy"]["ci_low"]
            optimum[f"{size}/{L}"] = {
                "size": size, "steps": L, "best": best, "ties": sorted(r for r in accs if accs[r] == accs[best]),
                "best_chars": gold_chars[(best, L)], "interior": interior, "by_length": by_len, "best_minus": versus,
                "above_chance": above is not None and above > chance[L],
                # an inverted U: the peak is interior and above both the shortest and the longest rendering
                "inverted_u": interior and all(versus[r]["ci_low"] is not None and versus[r]["ci_low"] > 0
                                               for r in (by_len[0], by_len[-1]))}
        rows = [{"problem": r["problem"], "x": gold_chars[(rn, r["steps"])] / 100, "value": float(r["words"]),
                 "steps": r["steps"]}
                for (s, rn), recs in per.items() if s == size for r in recs.values() if r["instruct"]]
        adherence_slope[size] = {"pooled": slope(rows, x="x"),
                                 **{str(L): slope([r for r in rows if r["steps"] == L], x="x") for L in cfg.eval_steps}}
    table = [{**c, "steps": c["steps"]} for c in cells.values()]
    summary = {"cells": table, "accuracy_chance": {str(L): c for L, c in chance.items()},
               "adherence_baseline": {size: mean_figure([r["words"] for (s, _), recs in per.items() if s == size
                                                         for r in recs.values() if not r["instruct"]], **kw)
                                      for size in cfg.sizes},
               "optimum": optimum,
               "adherence_slope_per_100_chars": adherence_slope}
    summary["findings"] = _findings(cfg, cells, optimum, adherence_slope, chance, summary["adherence_baseline"])
    panels: dict[str, dict[str, list]] = {}
    for size in cfg.sizes:
        for metric in ("accuracy", "adherence"):
            # x nudged by 0.01 per rendering: renderings of equal length (multi and one at 1 operation) must not
            # tie, since plot_lines sorts (x, figure) pairs and figures do not compare
            panels[f"{metric}-{size}"] = {f"{L} ops": [(cells[(size, r, L)]["gold_chars"] + 0.01 * i,
                                                        cells[(size, r, L)][metric]) for i, r in enumerate(renderings)]
                                          for L in cfg.eval_steps}
    plot = plot_lines(panels, run.out / "length.png", xlabel="chain length (characters of the gold rendering)",
                      logx=False, ylabel="rate", chance={f"accuracy-{s}": max(chance.values()) for s in cfg.sizes},
                      titles={**{f"accuracy-{s}": f"{s}: accuracy (plain prompts)" for s in cfg.sizes},
                              **{f"adherence-{s}": f"{s}: answers in words when told to" for s in cfg.sizes}})
    return summary, _blocks(cfg, summary, cells, renderings, plot)


def _findings(cfg: LengthConfig, cells: dict, optimum: dict, slopes: dict, chance: dict[int, float],
              baseline: dict[str, dict]) -> list[str]:
    out = []
    for size in cfg.sizes:
        peaks = []
        for L in cfg.eval_steps:
            o = optimum[f"{size}/{L}"]
            parts = ", ".join(f"{r} {fmt(cells[(size, r, L)]['accuracy'])} ({cells[(size, r, L)]['gold_chars']:.0f} "
                              "chars)" for r in o["by_length"])
            shortest = min(cells[(size, r, L)]["gold_chars"] for r in o["by_length"])
            shape = ("interior" if o["interior"] else "the shortest rendering" if o["best_chars"] == shortest
                     else "the longest rendering")
            near = [r for r, d in o["best_minus"].items() if d["ci_low"] is not None and d["ci_low"] <= 0]
            tie = (f"; not distinguishable from it (paired 95% interval of the difference includes 0): {', '.join(near)}"
                   if near else "; above every other rendering (paired 95% intervals)")
            u = "an inverted U" if o["inverted_u"] else "no inverted U (the peak is not interior and above both ends)"
            verdict = ("No rendering's accuracy clears chance, so there is no optimum to locate"
                       if not o["above_chance"] else f"Highest: {o['best']} ({shape}){tie}; {u}")
            out.append(f"{size}, {L} operations: accuracy by chain length {parts}; chance {chance[L]:.2f}. "
                       f"{verdict}.")
            peaks.append(f"{L} operations {o['best']} ({o['best_chars']:.0f} chars)" if o["above_chance"] else
                         f"{L} operations none above chance")
        out.append(f"{size}: the highest accuracy at " + ", ".join(peaks) + ".")
        s = slopes[size]["pooled"]
        lo = min((c for c in cells.values() if c["size"] == size), key=lambda c: c["gold_chars"])
        hi = max((c for c in cells.values() if c["size"] == size), key=lambda c: c["gold_chars"])
        flat = s.get("value") is not None and max(abs(s["ci_low"]), abs(s["ci_high"])) < 1e-9
        sig = ("n/a" if s.get("value") is None else "adherence did not vary" if flat else
               "excludes 0" if s["ci_low"] > 0 or s["ci_high"] < 0 else "includes 0")
        out.append(f"{size}: adherence to the answer-in-words instruction {fmt(lo['adherence'])} at the shortest chain "
                   f"({lo['rendering']}, {lo['steps']} ops, {lo['gold_chars']:.0f} chars) and {fmt(hi['adherence'])} "
                   f"at the longest ({hi['rendering']}, {hi['steps']} ops, {hi['gold_chars']:.0f} chars); slope "
                   f"{fmt(s, 3)} per 100 characters (cluster-robust 95% interval, {sig}); answers in words without "
                   f"the instruction (the baseline): {fmt(baseline[size])}.")
    for L in cfg.eval_steps:
        if len(cfg.sizes) > 1:
            out.append(f"{L} operations: the highest-accuracy rendering by size is " + ", ".join(
                f"{size} {o['best'] if o['above_chance'] else 'none above chance'}"
                for size in cfg.sizes for o in [optimum[f'{size}/{L}']]) + ".")
    return out


def _blocks(cfg: LengthConfig, summary: dict, cells: dict, renderings: dict, plot: Path) -> list[Block]:
    rows = [[c["size"], c["steps"], r, f"{c['gold_chars']:.0f}", fmt(c["chars"], 0),
             f"{summary['accuracy_chance'][str(c['steps'])]:.2f}", fmt(c["accuracy"]), fmt(c["adherence"]),
             fmt(c["accuracy_instructed"]), fmt(c["words_unasked"])]
            for size in cfg.sizes for L in cfg.eval_steps for r in renderings for c in [cells[(size, r, L)]]]
    opt_rows = [[o["size"], o["steps"], o["best"] if o["above_chance"] else f"({o['best']}: at chance)",
                 "yes" if o["inverted_u"] else "no", " < ".join(o["by_length"]),
                 "; ".join(f"{r}: {fmt(d)}" for r, d in o["best_minus"].items())] for o in summary["optimum"].values()]
    slope_rows = [[size, *[fmt(summary["adherence_slope_per_100_chars"][size][k], 3) for k in
                           ["pooled", *map(str, cfg.eval_steps)]]] for size in cfg.sizes]
    examples = [("p", f"{name}: " + ac.chain_text(_example(), r).replace("\n", " | ")) for name, r in renderings.items()]
    return [
        ("h2", "Findings"), *[("p", f) for f in summary["findings"]],
        ("h2", "The renderings (one 3-operation problem)"), *examples,
        ("h2", "Accuracy and adherence by size, difficulty and rendering"),
        ("p", f"{cfg.n} problems per difficulty, each asked plainly (accuracy) and with the answer-in-words "
              f"instruction (adherence: share answered in words; accuracy when told). Trained on "
              f"{cfg.train_steps[0]}-{cfg.train_steps[-1]} operations, {cfg.instruction_share:.0%} of prompts "
              "instructed; " + ("one model per size learned every rendering, its prompts tagged '&K;' (K: the "
                                "rendering's index), and is prompted to each" if cfg.shared else
                                "one model per size and rendering, the same optimizer steps each") +
              ". 95% bootstrap intervals. Accuracy chance: the most frequent gold answer."),
        ("table", ["size", "ops", "rendering", "gold chars", "chars written", "chance", "accuracy", "adherence",
                   "accuracy told", "words unasked"], rows),
        ("img", plot, "accuracy and adherence against chain length; one line per difficulty, one point per "
                      "rendering (dashed: the highest chance level of the difficulties)"),
        ("h2", "The optimum per size and difficulty (paired differences best - other, problems resampled)"),
        ("table", ["size", "ops", "highest", "inverted U", "renderings by length", "highest - other"], opt_rows),
        ("h2", "Adherence against chain length (slope per 100 characters, cluster-robust 95% interval)"),
        ("table", ["size", "pooled", *[f"{L} ops" for L in cfg.eval_steps]], slope_rows),
    ]


def _example() -> Problem:
    from verinet.tasks import get_family

    return get_family("arith").generate(7, {"steps": 3, "distractors": 0, "branching": 0.0})


PROBE = Probe(name="length", question="Is accuracy an inverted U in chain length (granularity) for arithmetic chains, "
              "where is the optimum per size and difficulty, and do longer chains dilute adherence to an instruction?",
              config=LengthConfig, run=run, smoke=smoke)
