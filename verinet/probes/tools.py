"""Probe ``tools``: does a calculator call remove the cliff where text-only execution collapses?

At every size of a ladder two models learn the same arith problems of ``train_steps`` operations:

* ``text``: today's chains, the model writes every result (``x:i+t>i7+t0>7;x7``);
* ``tool``: the model writes each step up to its operands and the tool marker, a calculator the runtime
  runs writes the result, and the model goes on (``x:i+t>i7+t0@7;x7``; see arith_chains).

Both are then solved greedily on fresh problems of every length in ``eval_steps`` (longer ones than
trained included). A size's **cliff** is the first length whose accuracy falls below ``cliff`` times
its accuracy at the shortest evaluated length. Faithfulness: on the same problems the runtime writes
one result wrong (the tool's, or, for text, the model's own in its place) and we read whether the final
answer follows the corrupted value (the answer the true steps give from it) or stays the original.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from verinet.probes import arith_chains as ac
from verinet.probes.config import ProbeConfig, SizeSpec, checkpoint_parameters
from verinet.probes.plotting import plot_lines
from verinet.probes.runner import Probe, ProbeRun
from verinet.probes.stats import fmt, majority_rate, mean_figure, paired_difference
from verinet.reporting import Block
from verinet.schema import Problem
from verinet.tasks import get_family
from verinet.tasks.base import derive_seed

MODES = {"text": ac.Rendering("one"), "tool": ac.Rendering("tool")}
TAGS = {"text": "", "tool": ac.TOOL + ";"}  # with one model for both modes, "@;" opens a prompt that has the tool


def check_size_names(v: dict[str, SizeSpec]) -> dict[str, SizeSpec]:
    bad = [k for k in v if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", k)]
    if bad:
        raise ValueError(f"size names must be lowercase letters, digits and _: {bad}")
    return v


def check_lengths(v: list[int]) -> list[int]:
    if any(s < 1 or s > 20 for s in v) or len(set(v)) != len(v):
        raise ValueError(f"chain lengths must be distinct integers from 1 to 20, got {v}")
    return sorted(v)


def check_knobs(knobs: dict[str, Any], longest: int) -> None:
    """Arith knobs other than ``steps``, valid at the longest chain (a ValueError names the knob)."""
    if "steps" in knobs:
        raise ValueError("knobs: leave out 'steps' (the chain lengths are train_steps / eval_steps)")
    get_family("arith").knobs({**knobs, "steps": longest})


class ToolsConfig(ProbeConfig):
    probe: Literal["tools"] = "tools"
    sizes: dict[str, SizeSpec] = Field(min_length=1, description="name -> size and optimizer steps (both modes)")
    train_steps: list[int] = Field(default_factory=lambda: list(range(1, 7)), min_length=1,
                                   description="chain lengths (operations) the models learn")
    eval_steps: list[int] = Field(default_factory=lambda: list(range(1, 13)), min_length=2,
                                  description="chain lengths evaluated, n problems each")
    faith_steps: list[int] | None = Field(default=None, description="lengths of the corrupted-result test "
                                                                     "(default: eval_steps)")
    knobs: dict[str, Any] = Field(default_factory=lambda: {"distractors": 0},
                                  description="other arith knobs of every problem (not steps)")
    cliff: float = Field(default=0.5, gt=0, lt=1, description="a cliff: accuracy below this share of the "
                                                              "accuracy at the shortest evaluated length")
    shared: bool = Field(default=True, description="one model per size learns both modes (tool prompts start "
                                                   "with '@;'); false: one model per size and mode")

    @field_validator("sizes")
    @classmethod
    def _names(cls, v: dict[str, SizeSpec]) -> dict[str, SizeSpec]:
        return check_size_names(v)

    @field_validator("train_steps", "eval_steps")
    @classmethod
    def _lengths(cls, v: list[int]) -> list[int]:
        return check_lengths(v)

    @field_validator("faith_steps")
    @classmethod
    def _faith(cls, v: list[int] | None) -> list[int] | None:
        return None if v is None else check_lengths(v)

    @model_validator(mode="after")
    def _consistent(self) -> ToolsConfig:
        check_knobs(self.knobs, max(self.train_steps + self.eval_steps))
        if self.faith_steps is not None and set(self.faith_steps) - set(self.eval_steps):
            raise ValueError(f"faith_steps {sorted(set(self.faith_steps) - set(self.eval_steps))} are not in "
                             "eval_steps")
        return self


def smoke(cfg: ToolsConfig) -> ToolsConfig:
    tiny = {"hidden": 32, "layers": 1, "heads": 1, "intermediate": 64, "max_len": 256}
    return cfg.model_validate({**cfg.model_dump(mode="json"), "sizes": {"a": {"size": tiny, "steps": 6}},
                               "train_steps": [1, 2], "eval_steps": [1, 2, 3], "faith_steps": [2, 3], "n": 4,
                               "n_boot": 100, "train": {**cfg.train.model_dump(mode="json"), "batch_size": 8,
                                                        "checkpoint_every": 3}})


# ---- problems, models, evaluation ------------------------------------------------------------
def problems(cfg: ToolsConfig, lengths: Sequence[int], knobs: dict[str, Any]) -> list[tuple[int, Problem]]:
    fam = get_family("arith")
    return [(L, p) for L in lengths
            for p in fam.sample(cfg.n, seed=derive_seed(cfg.seed, 1000 + L), params={**knobs, "steps": L})]


def plan(variants: dict[str, ac.Variant], shared: bool) -> dict[str, tuple[str, ac.Variant]]:
    """mode -> (the label of the model that runs it, its variant): one model for all, or one each (untagged)."""
    if shared:
        return {k: ("shared", v) for k, v in variants.items()}
    return {k: (k, ac.Variant(v.rendering)) for k, v in variants.items()}


def train_models(cfg: ProbeConfig, run: ProbeRun, modes: dict[str, tuple[str, ac.Variant]], train_steps: list[int],
                 knobs: dict[str, Any], *, instruct: float = 0.0) -> dict[tuple[str, str], Path]:
    """Every size's models (one per label of ``modes``); (size, mode) -> checkpoint."""
    tasks = [{"family": "arith", "params": [{**knobs, "steps": s} for s in train_steps]}]
    labels: dict[str, list[ac.Variant]] = {}
    for label, variant in modes.values():
        labels.setdefault(label, []).append(variant)
    out = {}
    for size, spec in cfg.sizes.items():
        for label, variants in labels.items():
            zoo = run.zoo_config(f"{size}-{label}", spec.size.model_dump(mode="json"), tasks, spec.steps,
                                 objectives={"solve": 1.0})
            path = run.train(zoo, builder=ac.builder(variants, instruct))
            out.update({(size, mode): path for mode, (lb, _) in modes.items() if lb == label})
    return out


class Solver:
    """A trained checkpoint, loaded on first use, that solves prompts greedily with a runtime."""

    def __init__(self, path: Path, threads: int | None) -> None:
        self.path, self.threads, self._loaded = path, threads, None

    def __call__(self, prompts: list[str], hooks: list[ac.Hook | None], max_new: int) -> list[ac.Decoded]:
        import torch

        from verinet.zoo.model import load_checkpoint

        if self.threads:
            torch.set_num_threads(self.threads)
        if self._loaded is None:
            self._loaded = load_checkpoint(self.path)
        model, tok = self._loaded
        return ac.decode(model, tok, prompts, max_new_tokens=max_new, hooks=hooks)


def max_new(items: Sequence[Problem], rendering: ac.Rendering) -> int:
    return max(len(ac.chain_text(p, rendering, instruct=True)) for p in items) * 3 // 2 + 16


def corruption(problem: Problem, seed: int) -> tuple[int, int, str] | None:
    """(line, offset, the answer the true steps give from the corrupted value): a result to write wrong
    such that the final answer changes; None when no single wrong result changes it."""
    mod = problem.meta["modulus"]
    query = problem.meta["query"]
    names = problem.meta["solution"]
    options = [(k, o, str(v)) for k, name in enumerate(names) for o in range(1, mod)
               if (v := ac.true_values(problem, {name: o})[query]) != int(problem.answer)]
    return random.Random(f"tools-corrupt:{seed}:{problem.id}").choice(options) if options else None


def first_step_valid(problem: Problem, chain: str) -> float:
    """1.0 when a chain's first line is a valid step (the same operation at every length of a problem family)."""
    steps = get_family("arith").check(problem, ac.to_canonical(chain)).steps
    return float(bool(steps) and steps[0].valid)


def solve_records(solver: Solver, mode: str, variant: ac.Variant, items: list[tuple[int, Problem]]
                  ) -> list[dict[str, Any]]:
    fam = get_family("arith")
    probs = [p for _, p in items]
    hooks = [ac.calculator(p.meta["modulus"]) if mode == "tool" else None for p in probs]
    got = solver([ac.prompt(p, tag=variant.tag) for p in probs], hooks, max_new(probs, variant.rendering))
    out = []
    for (L, p), d in zip(items, got):
        answer, _ = ac.read_answer(d.text)
        check = fam.check(p, ac.to_canonical(d.text))
        valid = [s.valid for s in check.steps]
        out.append({"id": p.id, "steps": L, "gold": p.answer, "answer": answer, "correct": answer == p.answer,
                    "step_validity": sum(valid) / len(valid) if valid else 0.0, "tool_calls": len(d.forced),
                    "finished": d.finished, "chain": d.text})
    return out


def corrupt_records(solver: Solver, mode: str, variant: ac.Variant,
                    items: list[tuple[int, Problem, tuple[int, int, str]]]) -> list[dict[str, Any]]:
    probs = [p for _, p, _ in items]
    hooks = [ac.calculator(p.meta["modulus"], corrupt_line=k, offset=o, trigger=mode) for _, p, (k, o, _) in items]
    got = solver([ac.prompt(p, tag=variant.tag) for p in probs], hooks, max_new(probs, variant.rendering))
    out = []
    for (L, p, (k, o, propagated)), d in zip(items, got):
        answer, _ = ac.read_answer(d.text)
        applied = any(d.text[:at].count("\n") == k for at, _ in d.forced)
        out.append({"id": p.id, "steps": L, "line": k, "offset": o, "gold": p.answer, "propagated": propagated,
                    "answer": answer, "applied": applied, "follows": answer == propagated,
                    "original": answer == p.answer, "chain": d.text})
    return out


# ---- the probe -------------------------------------------------------------------------------
def cliff_of(acc: dict[int, dict[str, Any]], ratio: float, chance: float) -> int | None:
    """The first length after the shortest whose accuracy is below ``ratio`` x the shortest's; None when
    there is none, or when the shortest's accuracy is not above ``chance`` (nothing to fall from)."""
    lengths = sorted(acc)
    base = acc[lengths[0]]
    if base["value"] is None or base["ci_low"] is None or base["ci_low"] <= chance:
        return None
    return next((L for L in lengths[1:] if acc[L]["value"] is not None and acc[L]["value"] < ratio * base["value"]),
                None)


def above_chance(acc: dict[int, dict[str, Any]], chance: float) -> bool:
    base = acc[min(acc)]
    return base["ci_low"] is not None and base["ci_low"] > chance


def run(cfg: ToolsConfig, run: ProbeRun) -> tuple[dict[str, Any], list[Block]]:
    modes = plan({m: ac.Variant(r, TAGS[m]) for m, r in MODES.items()}, cfg.shared)
    models = train_models(cfg, run, modes, cfg.train_steps, cfg.knobs)
    solvers = {path: Solver(path, cfg.train.threads) for path in set(models.values())}
    items = problems(cfg, cfg.eval_steps, cfg.knobs)
    faith_lengths = set(cfg.faith_steps or cfg.eval_steps)
    by_id = {p.id: p for _, p in items}
    faith_items = [(L, p, c) for L, p in items if L in faith_lengths and (c := corruption(p, cfg.seed))]
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    chance = {L: majority_rate([p.answer for M, p in items if M == L]) for L in cfg.eval_steps}
    solved: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    table, faith = [], {}
    for (size, mode), path in models.items():
        solver, variant = solvers[path], modes[mode][1]
        recs = run.records(f"{size}-{mode}-solve", items,
                           lambda chunk, s=solver, m=mode, v=variant: solve_records(s, m, v, chunk),
                           item_id=lambda x: x[1].id)
        solved[(size, mode)] = {r["id"]: r for r in recs}
        acc = {L: mean_figure([r["correct"] for r in recs if r["steps"] == L], **kw) for L in cfg.eval_steps}
        valid = {L: mean_figure([r["step_validity"] for r in recs if r["steps"] == L], **kw) for L in cfg.eval_steps}
        firsts = {r["id"]: first_step_valid(by_id[r["id"]], r["chain"]) for r in recs}
        first = {L: mean_figure([firsts[r["id"]] for r in recs if r["steps"] == L], **kw) for L in cfg.eval_steps}
        top = max(cfg.train_steps)
        first_by_range = {"trained": mean_figure([firsts[r["id"]] for r in recs if r["steps"] <= top], **kw),
                          "longer": mean_figure([firsts[r["id"]] for r in recs if r["steps"] > top], **kw)}
        table.append({"size": size, "mode": mode, "model": path.name, "parameters": checkpoint_parameters(path),
                      "accuracy": acc,
                      "step_validity": valid, "first_step_valid": first, "first_step_valid_by_range": first_by_range,
                      "cliff": cliff_of(acc, cfg.cliff, chance[cfg.eval_steps[0]]),
                      "above_chance": above_chance(acc, chance[cfg.eval_steps[0]])})
        crecs = run.records(f"{size}-{mode}-corrupt", faith_items,
                            lambda chunk, s=solver, m=mode, v=variant: corrupt_records(s, m, v, chunk),
                            item_id=lambda x: x[1].id)
        clean = solved[(size, mode)]
        kept = [r for r in crecs if r["applied"] and clean[r["id"]]["correct"]]
        faith[f"{size}-{mode}"] = {
            "follows_corrupted": mean_figure([r["follows"] for r in kept], **kw),
            "keeps_original": mean_figure([r["original"] for r in kept], **kw),
            "follows_corrupted_all": mean_figure([r["follows"] for r in crecs if r["applied"]], **kw),
            "applied": mean_figure([r["applied"] for r in crecs], **kw),
            "chance": majority_rate([r["propagated"] for r in kept]) if kept else None,
            "n_chains": len(crecs), "n_clean_correct_applied": len(kept)}
    beyond = [L for L in cfg.eval_steps if L > max(cfg.train_steps)]
    versus = {}
    for size in cfg.sizes:
        a, b = solved[(size, "text")], solved[(size, "tool")]
        diff = {str(L): paired_difference({k: float(r["correct"]) for k, r in a.items() if r["steps"] == L},
                                          {k: float(r["correct"]) for k, r in b.items() if r["steps"] == L}, **kw)
                for L in cfg.eval_steps}
        inside = {k: float(r["correct"]) for k, r in a.items() if r["steps"] <= max(cfg.train_steps)}
        outside = {k: float(r["correct"]) for k, r in a.items() if r["steps"] > max(cfg.train_steps)}
        versus[size] = {"by_steps": diff,
                        "trained_lengths": paired_difference(inside, {k: float(b[k]["correct"]) for k in inside}, **kw),
                        "longer_lengths": paired_difference(outside, {k: float(b[k]["correct"]) for k in outside},
                                                            **kw) if beyond else None}
    summary = {
        "models": [{**t, "accuracy": {str(L): f for L, f in t["accuracy"].items()},
                    "step_validity": {str(L): f for L, f in t["step_validity"].items()},
                    "first_step_valid": {str(L): f for L, f in t["first_step_valid"].items()}} for t in table],
        "accuracy_chance": {str(L): c for L, c in chance.items()}, "cliff_rule": (
            f"the first evaluated length whose accuracy is below {cfg.cliff} x the accuracy at {cfg.eval_steps[0]} "
            f"step(s); null: none up to {cfg.eval_steps[-1]}, or none to locate when that accuracy's 95% interval does "
            "not clear chance (above_chance false)"),
        "tool_minus_text": versus, "faithfulness": faith,
    }
    summary["findings"] = _findings(cfg, table, versus, faith, chance)
    plot = plot_lines(
        {f"accuracy-{size}": {**{mode: [(L, t["accuracy"][L]) for L in cfg.eval_steps] for t in table
                                 if t["size"] == size for mode in [t["mode"]]},
                              "chance (majority answer)": [(L, {"value": c}) for L, c in chance.items()]}
         for size in cfg.sizes} |
        {f"steps-{size}": {f"{t['mode']} {what}": [(L, t[key][L]) for L in cfg.eval_steps] for t in table
                           if t["size"] == size for key, what in (("step_validity", "all steps"),
                                                                  ("first_step_valid", "first step"))}
         for size in cfg.sizes},
        run.out / "tools.png", xlabel="operations in the chain", logx=False, ylabel="rate",
        titles={**{f"accuracy-{s}": f"{s}: answer accuracy (trained on {_span(cfg.train_steps)} steps)"
                   for s in cfg.sizes},
                **{f"steps-{s}": f"{s}: steps valid (all, and the first alone)" for s in cfg.sizes}})
    return summary, _blocks(cfg, table, summary, plot)


def _span(steps: list[int]) -> str:
    if len(steps) == 1:
        return str(steps[0])
    return f"{steps[0]}-{steps[-1]}" if steps == list(range(steps[0], steps[-1] + 1)) else ",".join(map(str, steps))


def _findings(cfg: ToolsConfig, table: list[dict], versus: dict, faith: dict, chance: dict[int, float]) -> list[str]:
    out = []
    first, last, top = cfg.eval_steps[0], cfg.eval_steps[-1], max(cfg.train_steps)
    by = {(t["size"], t["mode"]): t for t in table}
    for size in cfg.sizes:
        for mode in MODES:
            t = by[(size, mode)]
            acc = t["accuracy"]
            where = (f"no cliff can be located: the {first}-step accuracy is not above chance"
                     if not t["above_chance"] else f"no cliff up to {last} steps" if t["cliff"] is None else
                     f"cliff at {t['cliff']} steps (first length below {cfg.cliff} x the {first}-step accuracy)")
            trained = f", {fmt(acc[top])} at {top} (the longest trained)" if top in acc and top not in (first, last) \
                else ""
            fs = t["first_step_valid"]
            out.append(f"{size} ({t['parameters']:,} non-embedding parameters), {mode}: accuracy {fmt(acc[first])} at "
                       f"{first} step(s){trained}, {fmt(acc[last])} at {last} (chance {chance[first]:.2f} / "
                       f"{chance[last]:.2f}); {where}. Its first step alone was valid in {fmt(fs[first])} of chains at "
                       f"{first} step(s), {fmt(fs.get(top))} at {top} and {fmt(fs[last])} at {last}.")
        text, tool = by[(size, "text")]["cliff"], by[(size, "tool")]["cliff"]
        if not by[(size, "text")]["above_chance"] or not by[(size, "tool")]["above_chance"]:
            verdict = (f"whether the tool removes a cliff cannot be told: at {first} step(s) "
                       f"{'text' if not by[(size, 'text')]['above_chance'] else 'tool'} accuracy is not above chance")
        elif text is None:
            verdict = "text-only execution has no cliff here, so there is none for the tool to remove"
        elif tool is None:
            verdict = f"the tool removes the cliff (text falls at {text} steps, the tool not up to {last})"
        elif tool > text:
            verdict = f"the tool moves the cliff from {text} to {tool} steps but does not remove it"
        elif tool == text:
            verdict = f"the tool does not remove the cliff (both fall at {text} steps)"
        else:
            verdict = f"the tool's cliff comes earlier ({tool} steps) than text's ({text})"
        v = versus[size]
        longer = f"; beyond the trained lengths tool - text = {fmt(v['longer_lengths'])}" \
            if v["longer_lengths"] else ""
        out.append(f"{size}: {verdict}. Paired accuracy difference on the trained lengths tool - text = "
                   f"{fmt(v['trained_lengths'])}{longer} (95% intervals, problems resampled).")
        for mode, what in (("tool", "a corrupted tool result"), ("text", "a corrupted result written in its place")):
            f = faith[f"{size}-{mode}"]
            if f["n_clean_correct_applied"]:
                out.append(f"{size}, {mode}: given {what}, the answer followed it in {fmt(f['follows_corrupted'])} "
                           f"and kept the original in {fmt(f['keeps_original'])} of {f['n_clean_correct_applied']} "
                           f"chains the model solved when left alone (a constant answer matches the corrupted "
                           f"answer {f['chance']:.2f}).")
            else:
                out.append(f"{size}, {mode}: no chain both solved when left alone and reaching the corrupted step, "
                           "so whether answers follow the tool's results is not measured.")
    if any(L > top for L in cfg.eval_steps):
        out.append("The first step is the same kind of operation at every length. Valid first steps on the trained "
                   f"lengths ({_span([L for L in cfg.eval_steps if L <= top])}) vs the longer ones "
                   f"({_span([L for L in cfg.eval_steps if L > top])}): " + "; ".join(
                       f"{t['size']} {t['mode']} {fmt(t['first_step_valid_by_range']['trained'])} vs "
                       f"{fmt(t['first_step_valid_by_range']['longer'])}" for t in table) + ".")
    return out


def _blocks(cfg: ToolsConfig, table: list[dict], summary: dict[str, Any], plot: Path) -> list[Block]:
    cols = [(t["size"], t["mode"]) for t in table]
    by = {(t["size"], t["mode"]): t for t in table}
    acc_rows = [[L, f"{summary['accuracy_chance'][str(L)]:.2f}", *[fmt(by[c]["accuracy"][L]) for c in cols]]
                for L in cfg.eval_steps]
    valid_rows = [[L, *[f"{fmt(by[c]['step_validity'][L])} / {fmt(by[c]['first_step_valid'][L])}" for c in cols]]
                  for L in cfg.eval_steps]
    vs_rows = [[L, *[fmt(summary["tool_minus_text"][s]["by_steps"][str(L)]) for s in cfg.sizes]]
               for L in cfg.eval_steps]
    cliff_rows = [[t["size"], t["mode"], f"{t['parameters']:,}", "n/a (at chance)" if not t["above_chance"] else
                   t["cliff"] or f"none up to {cfg.eval_steps[-1]}"] for t in table]
    f_rows = [[k, fmt(f["follows_corrupted"]), fmt(f["keeps_original"]), "n/a" if f["chance"] is None else
               f"{f['chance']:.2f}", f["n_clean_correct_applied"], fmt(f["applied"]), fmt(f["follows_corrupted_all"])]
              for k, f in summary["faithfulness"].items()]
    head = [f"{s} {m}" for s, m in cols]
    return [
        ("h2", "Findings"), *[("p", f) for f in summary["findings"]],
        ("h2", "Answer accuracy against chain length"),
        ("p", f"{cfg.n} problems per length, the same for every model; trained on {_span(cfg.train_steps)} "
              "operations, " + ("one model per size for both modes (tool prompts start with '@;')" if cfg.shared
                                else "one model per size and mode") +
              ". 95% bootstrap intervals. Chance: the most frequent gold answer at that length."),
        ("table", ["steps", "chance", *head], acc_rows),
        ("img", plot, "accuracy and step validity against chain length, text vs tool, per size (95% intervals)"),
        ("h2", "Cliffs"), ("p", summary["cliff_rule"]),
        ("table", ["size", "mode", "params", "cliff (steps)"], cliff_rows),
        ("h2", "Paired accuracy difference, tool - text, per length"),
        ("table", ["steps", *cfg.sizes], vs_rows),
        ("h2", "Steps valid: all steps / the first step alone (the family's checker; tool chains read with the "
               "marker as '>')"),
        ("table", ["steps", *head], valid_rows),
        ("h2", "Does the answer follow the tool's results?"),
        ("p", "One result per chain written wrong by the runtime (tool: the calculator's answer; text: the model's "
              "own result, overwritten as it is about to write it), chosen so the true steps from it give another "
              "answer. Rates over chains the model solved when left alone and that reached the corrupted step; "
              "chance: a constant answer matching the corrupted answer."),
        ("table", ["model", "follows corrupted", "keeps original", "chance", "n", "reached the step",
                   "follows (all chains)"], f_rows),
    ]


PROBE = Probe(name="tools", question="Does executing each step with a calculator call remove the accuracy cliff "
              "that text-only execution of long arithmetic chains falls off, and do answers follow the tool's results?",
              config=ToolsConfig, run=run, smoke=smoke)
