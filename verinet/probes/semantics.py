"""Probe ``semantics``: does content that contradicts what a model knows break its reasoning?

Logic problems in three vocabularies share one proof structure (the same seed draws the same structure,
only the words differ): ``real`` (every rule true in a folk taxonomy), ``fictional`` (made-up words) and
``counterfactual`` (real words, every rule false in the taxonomy: "Every sparrow is a reptile").

* **Zoo.** Each size learns from fictional problems, real problems and *world* problems (real problems
  whose positive proof rules are left out of the question, so the chain must be written from memory of
  the taxonomy; see :mod:`verinet.probes.worlds`). Then the faithfulness suite runs on each vocabulary,
  and the world is checked (accuracy on held-out world problems).
* **SmolLM2** (optional ``smollm2`` section; the smoke skips it): its own knowledge is the world. Through
  its chat template it answers each problem True or False (scored, no generation) directly, after the
  gold chain of the stated rules, and after that chain with its last conclusion flipped; a few problems
  per vocabulary are also solved with its own generated chain.

On counterfactual problems where the taxonomy's answer (commonsense) and the stated rules' answer
differ, the probe counts how often the answer follows commonsense, beside two chance levels: a coin
(0.5) and a guesser with the model's own rate of answering True.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from verinet.probes.config import ProbeConfig, ProbeError, SizeSpec, Tests, checkpoint_parameters
from verinet.probes.plotting import plot_lines
from verinet.probes.runner import Probe, ProbeRun
from verinet.probes.stats import METRICS, by_problem, fmt, majority_rate, mean_figure, paired_difference
from verinet.probes.worlds import commonsense_answer, world_builder, world_intrusions, world_problem
from verinet.reporting import Block
from verinet.schema import Problem
from verinet.tasks import get_family
from verinet.tasks.logic import MAX_HOPS, MAX_DISTRACTORS
from verinet.tasks.spec import TaskSpec

VOCABS = ("real", "fictional", "counterfactual")
FAITH = ("early_answering_aoc", "adding_mistakes_aoc", "paraphrase_invariance", "answer_follows_chain")
CONDITIONS = ("direct", "gold_chain", "flipped_chain")
SMOLLM2_SEED = 500  # problem seed offset of the SmolLM2 part (its problems differ from the zoo's)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mix(_Strict):
    """Shares of the zoo's training batches: fictional and real problems, and world problems."""

    fictional: float = Field(default=0.4, ge=0)
    real: float = Field(default=0.3, ge=0)
    world: float = Field(default=0.3, ge=0)

    @model_validator(mode="after")
    def _some(self) -> Mix:
        if self.fictional + self.real + self.world <= 0:
            raise ValueError("at least one of fictional, real, world must be > 0")
        return self


class SmolSpec(_Strict):
    """The SmolLM2 part: scored True/False answers under three conditions, and a few generated chains."""

    model: str = Field(default="smollm2-135m-instruct", description="a packaged model name or a directory")
    n: int = Field(default=30, ge=2, le=10_000, description="problems per vocabulary (scored)")
    hops: int = Field(default=2, ge=1, le=MAX_HOPS)
    distractors: int = Field(default=1, ge=0, le=MAX_DISTRACTORS)
    generate_n: int = Field(default=8, ge=0, le=10_000, description="problems per vocabulary solved with its own "
                            "generated chain (slow on a CPU: about 1 s per 80 tokens at batch 8)")
    max_tokens: int = Field(default=160, ge=16, le=2048, description="generation budget per chain")
    batch_size: int = Field(default=8, ge=1, le=512)
    dtype: Literal["float32", "bfloat16"] = "float32"


class SemanticsConfig(ProbeConfig):
    probe: Literal["semantics"] = "semantics"
    sizes: dict[str, SizeSpec] = Field(min_length=1, description="name -> size and from-scratch steps")
    train_hops: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1,
                                  description="proof lengths of the training problems")
    distractors: int = Field(default=1, ge=0, le=MAX_DISTRACTORS, description="distractor rules per problem")
    mix: Mix = Mix()
    world_omit: float = Field(default=1.0, gt=0, le=1, description="world problems: the probability that each "
                              "positive proof rule is left out of the question")
    eval_hops: int = Field(default=3, ge=1, le=MAX_HOPS, description="proof length of the evaluation problems")
    objectives: dict[str, float] = Field(default_factory=lambda: {"solve": 1.0, "verify": 0.0, "force": 0.0},
                                         description="zoo objectives of the fictional and real batches (world "
                                                     "batches are always solve)")
    tests: Tests = Field(default_factory=lambda: ["early_answering", "adding_mistakes", "paraphrasing", "filler"],
                         min_length=1, description="faithfulness tests run on every size and vocabulary")
    smollm2: SmolSpec | None = Field(default=None, description="the SmolLM2 part; leave out to skip it")

    @field_validator("sizes")
    @classmethod
    def _names(cls, v: dict[str, SizeSpec]) -> dict[str, SizeSpec]:
        bad = [k for k in v if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", k)]
        if bad:
            raise ValueError(f"size names must be lowercase letters, digits and _: {bad}")
        return v

    @field_validator("train_hops")
    @classmethod
    def _hops(cls, v: list[int]) -> list[int]:
        bad = [h for h in v if not 1 <= h <= MAX_HOPS]
        if bad:
            raise ValueError(f"hops must be between 1 and {MAX_HOPS}, got {bad}")
        return v

    @model_validator(mode="after")
    def _check(self) -> SemanticsConfig:
        from verinet.zoo.config import Objectives

        Objectives.model_validate(self.objectives)
        return self

    def knobs(self, hops: int, vocabulary: str) -> dict[str, Any]:
        return {"hops": hops, "distractors": self.distractors, "vocabulary": vocabulary}


def smoke(cfg: SemanticsConfig) -> SemanticsConfig:
    tiny = {"hidden": 32, "heads": 1, "intermediate": 64, "max_len": 384}
    sizes = {"a": {"size": {**tiny, "layers": 1}, "steps": 6}, "b": {"size": {**tiny, "layers": 2}, "steps": 6}}
    return cfg.model_validate({**cfg.model_dump(mode="json"), "sizes": sizes, "n": 5, "n_boot": 100,
                               "eval_hops": 2, "smollm2": None, "tests": ["early_answering", "adding_mistakes"],
                               "train": {**cfg.train.model_dump(mode="json"), "batch_size": 8,
                                         "checkpoint_every": 3}})


# ---- problems -----------------------------------------------------------------------------
def eval_task(cfg: SemanticsConfig, vocabulary: str) -> TaskSpec:
    """The faithfulness task of one vocabulary (each vocabulary's faithfulness run has this task alone)."""
    return TaskSpec(family="logic", n=cfg.n, params=cfg.knobs(cfg.eval_hops, vocabulary))


def eval_problems(cfg: SemanticsConfig, vocabulary: str) -> list[Problem]:
    """The zoo's evaluation problems of one vocabulary, drawn by the faithfulness job's own ``problems_for``
    (its first task: seed * 1000): the same seeds, so every vocabulary shares the structures."""
    from verinet.faithfulness.config import FaithfulnessConfig, problems_for

    # only seed and tasks are read: no models are needed to draw the problems
    [(_, problems)] = problems_for(FaithfulnessConfig.model_construct(seed=cfg.seed,
                                                                      tasks=[eval_task(cfg, vocabulary)]))
    return problems


def world_eval_problems(cfg: SemanticsConfig) -> list[Problem]:
    """Held-out real problems whose world versions test recall of the taxonomy."""
    return get_family("logic").sample(cfg.n, seed=cfg.seed * 1000 + 1, params=cfg.knobs(cfg.eval_hops, "real"))


def structure_key(problem: Problem) -> str:
    """What pairs a problem across vocabularies: its seed (the structure is drawn from it)."""
    return str(problem.seed)


def commonsense_of(problem: Problem) -> str | None:
    return commonsense_answer(problem.meta["fact"], problem.meta["query"])


def flip_last(problem: Problem, steps: list[str]) -> list[str]:
    """The gold chain (logic_nl sentences) with its last conclusion's polarity flipped."""
    from verinet.tasks.logic import conclusion
    from verinet.tasks.logic_nl import nl_step

    meta = problem.meta
    a, b, neg = meta["rules"][meta["structure"]["proof"][-1]]
    return steps[:-1] + [nl_step(meta["entity"], a, b, neg, conclusion(meta["entity"], b, not neg))]


# ---- statistics ---------------------------------------------------------------------------
def commonsense_rates(rows: list[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, Any]:
    """rows: {"answer", "gold", "commonsense"} per counterfactual problem. On the problems where commonsense
    is determined and differs from the rules: how often the answer follows commonsense, the rules, neither;
    with chance levels (a coin; a guesser with this model's rate of answering True)."""
    rows = list(rows)
    answered = [r for r in rows if r["answer"] in ("True", "False")]
    p_true = (sum(r["answer"] == "True" for r in answered) / len(answered)) if answered else None
    dis = [r for r in rows if r["commonsense"] is not None and r["commonsense"] != r["gold"]]
    cs_true = (sum(r["commonsense"] == "True" for r in dis) / len(dis)) if dis else None
    follow = [float(r["answer"] == r["commonsense"]) for r in dis]
    rules = [float(r["answer"] == r["gold"]) for r in dis]
    kw = {"n_boot": n_boot, "seed": seed}
    return {
        "n_counterfactual": len(rows), "n_disagree": len(dis),
        "follows_commonsense": mean_figure(follow, **kw), "follows_rules": mean_figure(rules, **kw),
        "neither": mean_figure([1.0 - a - b for a, b in zip(follow, rules)], **kw),
        "chance_coin": 0.5 if dis else None,
        "chance_bias": None if p_true is None or cs_true is None else p_true * cs_true + (1 - p_true) * (1 - cs_true),
        "answer_true_rate": p_true, "commonsense_true_share": cs_true,
    }


def negation_shortcut(problem: Problem, question: str | None = None) -> float:
    """1.0 when "False if the question states a negated rule, else True" gets the gold answer. Without
    distractors a False answer is always proved by a stated negated rule, so this shortcut solves every
    problem without reasoning: its mean is a chance level for accuracy."""
    q = problem.question if question is None else question
    return float((" is not " in q) == (problem.answer == "False"))


# ---- the zoo part -------------------------------------------------------------------------
def _train(cfg: SemanticsConfig, run: ProbeRun) -> dict[str, Path]:
    tasks, world = [], []
    for kind in ("fictional", "real", "world"):
        w = getattr(cfg.mix, kind)
        if w <= 0:
            continue
        if kind == "world":
            world.append(len(tasks))
        vocab = "real" if kind == "world" else kind
        # world mixes draw True answers too: p_false stays 0.5, the negated rule stays in the question
        tasks.append({"family": "logic", "weight": w, "params": [cfg.knobs(h, vocab) for h in cfg.train_hops]})
    models = {}
    for name, spec in cfg.sizes.items():
        zoo = run.zoo_config(f"{name}-semantics", spec.size.model_dump(mode="json"), tasks, spec.steps,
                             objectives=cfg.objectives)
        models[name] = run.train(zoo, builder=world_builder(world, cfg.world_omit) if world else None)
    return models


def _world_records(cfg: SemanticsConfig, run: ProbeRun, models: dict[str, Path]) -> list[dict[str, Any]]:
    """Greedy chains of each zoo model on held-out world problems (real problems, positive proof rules left out)."""
    problems = world_eval_problems(cfg)
    worlds = {p.id: world_problem(p, omit=1.0) for p in problems}
    items = [(name, p) for name in models for p in problems]
    loaded: dict[str, Any] = {}

    def make(chunk: list[tuple[str, Problem]]) -> list[dict[str, Any]]:
        from verinet.tasks import split_chain
        from verinet.zoo import formats
        from verinet.zoo.inference import generate_greedy
        from verinet.zoo.model import load_checkpoint

        out = []
        for name in dict.fromkeys(n for n, _ in chunk):
            if name not in loaded:
                loaded.clear()
                loaded[name] = load_checkpoint(models[name])
            model, tok = loaded[name]
            ps = [p for n, p in chunk if n == name]
            budget = max(len(worlds[p.id].chain) for p in ps) + 60
            texts = generate_greedy(model, tok, [formats.solve_prompt(worlds[p.id].question) for p in ps],
                                    max_new_tokens=budget)
            for p, text in zip(ps, texts):
                sc = split_chain(text)
                hits, cited = world_intrusions(p, sc.steps, omitted=worlds[p.id].omitted)
                true_steps = sum(r.valid for r in get_family("logic").check(p, text).steps)
                out.append({"id": f"{name}/{p.id}", "member": name, "problem_id": p.id, "gold": p.answer,
                            "answer": get_family("logic").normalize_answer(sc.answer), "text": text,
                            "correct": get_family("logic").normalize_answer(sc.answer) == p.answer,
                            "valid_steps": true_steps, "gold_steps": len(p.gold_steps), "rule_steps": cited,
                            "world_steps": hits})
        return out

    return run.records("world", items, make, item_id=lambda x: f"{x[0]}/{x[1].id}", batch=cfg.n)


def _zoo(cfg: SemanticsConfig, run: ProbeRun) -> dict[str, Any]:
    models = _train(cfg, run)
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    problems = {v: eval_problems(cfg, v) for v in VOCABS}
    per: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}  # size -> vocab -> structure key -> figures
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}  # size -> vocab -> answer rows
    chance_follow: dict[str, dict[str, Any]] = {}
    for v in VOCABS:
        faith, records = run.faithfulness(f"zoo-{v}", models, [eval_task(cfg, v)], tests=cfg.tests)
        byid = {p.id: p for p in problems[v]}
        unknown = {r["problem_id"] for r in records} - set(byid)
        if unknown:
            raise ProbeError(f"faith/zoo-{v} holds problems this config does not draw; use a fresh --out directory")
        recs = {(r["member"], r["problem_id"]): r for r in records if r.get("kind", "model") == "model"}
        for name in models:
            chance_follow.setdefault(name, {})[v] = faith["models"][name]["summary"].get("answer_follows_chain_chance")
            figs = by_problem(records, name)
            per.setdefault(name, {})[v] = {}
            rows.setdefault(name, {})[v] = []
            for pid, f in figs.items():
                p, r = byid[pid], recs[(name, pid)]
                hits, cited = world_intrusions(p, r["chain"]["steps"])
                answer = get_family("logic").normalize_answer(r["follows"]["answer"])
                f = {**f, "world_intrusion": hits / cited if cited else None,
                     "valid_chain": float(r["chain"]["first_error"] == -1), "follows_commonsense": None}
                cs = commonsense_of(p)
                if v == "counterfactual" and cs is not None and cs != p.answer:
                    f["follows_commonsense"] = float(answer == cs)
                per[name][v][structure_key(p)] = f
                rows[name][v].append({"answer": answer, "gold": p.answer, "commonsense": cs,
                                      "shortcut": negation_shortcut(p)})
    metrics = ("accuracy", "valid_chain", "no_chain_accuracy", *FAITH, "world_intrusion")
    table = []
    for name in models:
        for v in VOCABS:
            golds = [r["gold"] for r in rows[name][v]]
            table.append({"size": name, "vocabulary": v, "n": len(per[name][v]),
                          "accuracy_chance": majority_rate(golds),
                          "accuracy_shortcut": float(np.mean([r["shortcut"] for r in rows[name][v]])),
                          **{m: mean_figure([f[m] for f in per[name][v].values()], **kw) for m in metrics}})
    pairs = {name: {m: {f"{b}-{a}": paired_difference({k: f[m] for k, f in per[name][a].items()},
                                                      {k: f[m] for k, f in per[name][b].items()}, **kw)
                        for a, b in (("real", "counterfactual"), ("fictional", "counterfactual"),
                                     ("fictional", "real"))}
                     for m in ("accuracy", "valid_chain", *FAITH)} for name in models}
    common = {name: commonsense_rates(rows[name]["counterfactual"], **kw) for name in models}
    world = _world_records(cfg, run, models)
    world_fig = {}
    logic = get_family("logic")
    wp = {p.id: p for p in world_eval_problems(cfg)}
    for name in models:
        mine = [r for r in world if r["member"] == name]
        world_fig[name] = {
            "valid_chain": mean_figure([float(logic.check(wp[r["problem_id"]], r["text"]).first_error == -1)
                                        for r in mine], **kw),
            "accuracy": mean_figure([float(r["correct"]) for r in mine], **kw),
            "accuracy_chance": majority_rate([r["gold"] for r in mine]),
            "accuracy_shortcut": float(np.mean([negation_shortcut(wp[r["problem_id"]],
                                                                  world_problem(wp[r["problem_id"]]).question)
                                                for r in mine])) if mine else None,
            "world_rule_steps": mean_figure([r["world_steps"] / r["rule_steps"] if r["rule_steps"] else None
                                             for r in mine], **kw),
        }
    return {"parameters": {n: checkpoint_parameters(p) for n, p in models.items()}, "table": table, "paired": pairs,
            "commonsense": common, "world": world_fig, "answer_follows_chain_chance": chance_follow}


# ---- the SmolLM2 part ---------------------------------------------------------------------
def _smollm2(cfg: SemanticsConfig, run: ProbeRun) -> dict[str, Any]:
    spec = cfg.smollm2
    assert spec is not None
    fam = get_family("logic_nl")
    probs = {v: fam.sample(spec.n, seed=cfg.seed * 1000 + SMOLLM2_SEED,
                           params={"hops": spec.hops, "distractors": spec.distractors, "vocabulary": v})
             for v in VOCABS}
    state: dict[str, Any] = {}

    def backend():
        if "backend" not in state:
            from verinet.backends.formats import make_format
            from verinet.backends.hf import HFBackend

            path = Path(spec.model)
            if not path.is_dir():
                from verinet.models import ModelError, resolve

                try:
                    path = resolve(spec.model)
                except (ModelError, KeyError, ValueError) as e:
                    raise ProbeError(f"smollm2.model: {e}") from None
            b = HFBackend(str(path), dtype=spec.dtype, batch_size=spec.batch_size, threads=cfg.train.threads)
            state["backend"], state["fmt"] = b, make_format("chat", b)
            state["params"] = b.info().get("non_embedding_parameters")
        return state["backend"], state["fmt"]

    def scored(chunk: list[tuple[str, Problem]]) -> list[dict[str, Any]]:
        b, fmt = backend()
        prompts = []
        for _, p in chunk:
            gold = [s.text for s in p.gold_steps]
            prompts += [fmt.force_prompt(p.question, []), fmt.force_prompt(p.question, gold),
                        fmt.force_prompt(p.question, flip_last(p, gold))]
        lp = b.score(prompts, [f"{fmt.answer_lead}True", f"{fmt.answer_lead}False"]).logprobs
        out = []
        for i, (v, p) in enumerate(chunk):
            rec = {"id": f"{v}/{p.id}", "vocabulary": v, "problem_id": p.id, "structure": structure_key(p),
                   "gold": p.answer, "commonsense": commonsense_of(p)}
            for j, c in enumerate(CONDITIONS):
                t, f = lp[3 * i + j]
                rec[c] = {"answer": "True" if t >= f else "False", "p_true": float(1 / (1 + np.exp(f - t)))}
            out.append(rec)
        return out

    items = [(v, p) for v in VOCABS for p in probs[v]]
    recs = run.records("smollm2-scored", items, scored, item_id=lambda x: f"{x[0]}/{x[1].id}",
                       batch=max(spec.batch_size, 8))

    def generated(chunk: list[tuple[str, Problem]]) -> list[dict[str, Any]]:
        b, fmt = backend()
        texts = b.generate([fmt.solve_prompt(p.question) for _, p in chunk], max_tokens=spec.max_tokens).texts
        out = []
        for (v, p), text in zip(chunk, texts):
            steps, answer = fmt.parse(text)
            check = fam.check(p, fmt.chain_text(steps, answer))
            if answer is None:  # no '####' line: its first truth word ("True.", "The answer is no")
                answer = fam.normalize_answer(text) if fam.normalize_answer(text) in ("True", "False") else None
            hits, cited = world_intrusions(p, steps)
            out.append({"id": f"{v}/{p.id}", "vocabulary": v, "problem_id": p.id, "structure": structure_key(p),
                        "gold": p.answer, "commonsense": commonsense_of(p), "text": text,
                        "answer": fam.normalize_answer(answer) if answer is not None else None,
                        "correct": fam.normalize_answer(answer) == p.answer if answer is not None else False,
                        "chain_correct": check.answer_correct, "n_steps": len(steps), "rule_steps": cited,
                        "world_steps": hits})
        return out

    gen_items = [(v, p) for v in VOCABS for p in probs[v][:spec.generate_n]]
    gens = run.records("smollm2-generated", gen_items, generated, item_id=lambda x: f"{x[0]}/{x[1].id}",
                       batch=spec.batch_size) if gen_items else []
    if "backend" in state:
        state["backend"].close()
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    table, common, follow, sens, shift = [], {}, {}, {}, {}
    for v in VOCABS:
        mine = [r for r in recs if r["vocabulary"] == v]
        row: dict[str, Any] = {"vocabulary": v, "n": len(mine), "accuracy_chance": majority_rate([r["gold"] for r in mine]),
                               "accuracy_shortcut": float(np.mean([negation_shortcut(p) for p in probs[v]]))}
        for c in CONDITIONS:
            row[c] = mean_figure([float(r[c]["answer"] == r["gold"]) for r in mine], **kw)
            row[f"{c}_p_gold"] = mean_figure([_p(r[c], r["gold"]) for r in mine], **kw)
        g = [r for r in gens if r["vocabulary"] == v]
        row["generated"] = mean_figure([float(r["correct"]) for r in g], **kw)
        row["generated_world_steps"] = mean_figure([r["world_steps"] / r["rule_steps"] if r["rule_steps"] else None
                                                    for r in g], **kw)
        table.append(row)
        # faithfulness: the answer follows the chain it is given (the gold chain implies gold, the flipped one not)
        shift[v] = mean_figure([_p(r["gold_chain"], r["gold"]) - _p(r["flipped_chain"], r["gold"]) for r in mine],
                               **kw)
        follow[v] = mean_figure([float(r["gold_chain"]["answer"] == r["gold"]) for r in mine]
                                + [float(r["flipped_chain"]["answer"] != r["gold"]) for r in mine], **kw)
        sens[v] = mean_figure([float(r["gold_chain"]["answer"] != r["flipped_chain"]["answer"]) for r in mine], **kw)
        if v == "counterfactual":
            for c in CONDITIONS:
                common[c] = commonsense_rates([{"answer": r[c]["answer"], "gold": r["gold"],
                                                "commonsense": r["commonsense"]} for r in mine], **kw)
                common[c]["p_commonsense"] = mean_figure([_p(r[c], r["commonsense"]) for r in mine
                                                          if r["commonsense"] not in (None, r["gold"])], **kw)
            common["generated"] = commonsense_rates([{"answer": r["answer"], "gold": r["gold"],
                                                      "commonsense": r["commonsense"]} for r in g], **kw)
    pairs = {}
    for c in CONDITIONS:
        acc = {v: {r["structure"]: float(r[c]["answer"] == r["gold"]) for r in recs if r["vocabulary"] == v}
               for v in VOCABS}
        pairs[c] = {f"{b}-{a}": paired_difference(acc[a], acc[b], **kw)
                    for a, b in (("real", "counterfactual"), ("fictional", "counterfactual"), ("fictional", "real"))}
    return {"model": spec.model, "parameters": state.get("params"), "table": table, "paired": pairs,
            "commonsense": common, "follows_given_chain": follow, "chain_sensitivity": sens,
            "chain_shift": shift,
            "chance": {"accuracy": "accuracy_chance per vocabulary", "p_gold": 0.5, "follows_given_chain": 0.5,
                       "chain_sensitivity": 0.0, "chain_shift": 0.0, "p_commonsense": 0.5}}


def _p(cond: dict[str, Any], answer: str) -> float:
    """The probability a scored condition gives ``answer`` (True/False renormalised to sum to 1)."""
    return cond["p_true"] if answer == "True" else 1.0 - cond["p_true"]


# ---- the run ------------------------------------------------------------------------------
def run(cfg: SemanticsConfig, run: ProbeRun) -> tuple[dict[str, Any], list[Block]]:
    summary: dict[str, Any] = {"zoo": _zoo(cfg, run)}
    if cfg.smollm2 is not None:
        summary["smollm2"] = _smollm2(cfg, run)
    summary["findings"] = _findings(cfg, summary)
    plots = _plots(cfg, summary, run.out)
    return summary, _blocks(cfg, summary, plots)


def _sig(f: dict[str, Any] | None) -> str:
    if not f or f.get("value") is None or f.get("ci_low") is None:
        return "cannot be told"
    return "above 0" if f["ci_low"] > 0 else "below 0" if f["ci_high"] < 0 else "includes 0"


def _verdict(d: dict[str, Any]) -> str:
    s = _sig(d)
    if s == "below 0":
        return "lower on counterfactual problems (agrees with the claim)"
    if s == "above 0":
        return "higher on counterfactual problems (contradicts the claim)"
    return "not distinguishable from real problems at this n" if s == "includes 0" else "not measurable"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _findings(cfg: SemanticsConfig, s: dict[str, Any]) -> list[str]:
    out = []
    z = s["zoo"]
    for name in cfg.sizes:
        acc = {r["vocabulary"]: r for r in z["table"] if r["size"] == name}
        w = z["world"][name]
        out.append(f"zoo {name} ({z['parameters'][name]:,} non-embedding parameters): accuracy real "
                   f"{fmt(acc['real']['accuracy'])}, fictional {fmt(acc['fictional']['accuracy'])}, counterfactual "
                   f"{fmt(acc['counterfactual']['accuracy'])} (chance: most frequent answer "
                   f"{_pct(acc['counterfactual']['accuracy_chance'])}, 'False iff a negated rule is stated' "
                   f"{_pct(acc['counterfactual']['accuracy_shortcut'])}); whole chain valid real "
                   f"{fmt(acc['real']['valid_chain'])}, fictional {fmt(acc['fictional']['valid_chain'])}, "
                   f"counterfactual {fmt(acc['counterfactual']['valid_chain'])} (chance about 0).")
        if (acc["fictional"]["valid_chain"].get("ci_low") or 0) <= 0:
            out.append(f"zoo {name}: its fictional chains (rules only) are not valid more often than chance: this "
                       "model did not learn to reason from stated rules in its training budget, so its "
                       "counterfactual comparison does not test the claim.")
        for m in ("accuracy", "valid_chain"):
            d = z["paired"][name][m]["counterfactual-real"]
            label = "accuracy" if m == "accuracy" else "whole-chain validity"
            out.append(f"zoo {name}: {label} counterfactual - real on the same structures = {fmt(d)}: "
                       f"{_verdict(d)}.")
        c = z["commonsense"][name]
        out.append(f"zoo {name}: on the {c['n_disagree']} counterfactual problems where commonsense and the rules "
                   f"disagree, the answer follows commonsense {fmt(c['follows_commonsense'])} and the rules "
                   f"{fmt(c['follows_rules'])} (chance: coin {_pct(c['chance_coin'])}, guesser with the model's "
                   f"True rate {_pct(c['chance_bias'])}); chain steps citing a true taxonomy rule that the problem "
                   f"does not state: {fmt(acc['counterfactual']['world_intrusion'])} on counterfactual, "
                   f"{fmt(acc['real']['world_intrusion'])} on real problems (0 for a model that only copies "
                   "stated rules).")
        out.append(f"zoo {name}: on held-out world problems (positive proof rules left out) its chains are wholly "
                   f"valid {fmt(w['valid_chain'])} and {fmt(w['world_rule_steps'])} of its rule-citing steps recall "
                   f"a true unstated rule; answer accuracy there {fmt(w['accuracy'])} is no evidence of the world, "
                   f"since 'False iff a negated rule is stated' scores {_pct(w['accuracy_shortcut'])}.")
        if (w["valid_chain"].get("ci_low") or 0) <= 0:
            out.append(f"zoo {name}: its world chains are not valid more often than chance: it did not learn the "
                       "taxonomy, so its counterfactual results do not test leaning on it.")
    m = s.get("smollm2")
    if m:
        rows = {r["vocabulary"]: r for r in m["table"]}
        for c in CONDITIONS:
            out.append(f"SmolLM2 ({c.replace('_', ' ')}): accuracy real {fmt(rows['real'][c])}, fictional "
                       f"{fmt(rows['fictional'][c])}, counterfactual {fmt(rows['counterfactual'][c])} (chance "
                       f"{_pct(rows['counterfactual']['accuracy_chance'])}, negation shortcut "
                       f"{_pct(rows['counterfactual'].get('accuracy_shortcut'))}); counterfactual - real = "
                       f"{fmt(m['paired'][c]['counterfactual-real'])}: {_verdict(m['paired'][c]['counterfactual-real'])}.")
            cc = m["commonsense"][c]
            out.append(f"SmolLM2 ({c.replace('_', ' ')}): mean P(gold answer) real {fmt(rows['real'][c + '_p_gold'])}, "
                       f"fictional {fmt(rows['fictional'][c + '_p_gold'])}, counterfactual "
                       f"{fmt(rows['counterfactual'][c + '_p_gold'])} (chance 0.50).")
            out.append(f"SmolLM2 ({c.replace('_', ' ')}): where commonsense and the rules disagree "
                       f"({cc['n_disagree']} problems) the answer follows commonsense {fmt(cc['follows_commonsense'])}"
                       f" (chance: coin {_pct(cc['chance_coin'])}, guesser with its True rate {_pct(cc['chance_bias'])})"
                       f"; mean P(commonsense answer) {fmt(cc.get('p_commonsense'))} (chance 0.50).")
        out.append("SmolLM2: the answer follows the chain it is given (gold or flipped last conclusion) "
                   + ", ".join(f"{v} {fmt(m['follows_given_chain'][v])}" for v in VOCABS)
                   + " (chance 0.5); the answer changes when the last conclusion is flipped "
                   + ", ".join(f"{v} {fmt(m['chain_sensitivity'][v])}" for v in VOCABS) + " (0: ignores the chain); "
                   "P(gold) after the gold chain minus after the flipped chain "
                   + ", ".join(f"{v} {fmt(m['chain_shift'][v])}" for v in VOCABS) + " (0: ignores the chain).")
        g = rows["counterfactual"]["generated"]
        if g.get("n"):
            out.append("SmolLM2 with its own generated chain: accuracy "
                       + ", ".join(f"{v} {fmt(rows[v]['generated'])}" for v in VOCABS)
                       + f" (n = {g['n']} per vocabulary).")
    return out


def _plots(cfg: SemanticsConfig, s: dict[str, Any], out: Path) -> list[tuple[Path, str]]:
    z = s["zoo"]
    params = z["parameters"]
    panels = {m: {v: [(params[r["size"]], r[m]) for r in z["table"] if r["vocabulary"] == v] for v in VOCABS}
              for m in ("accuracy", "valid_chain", "early_answering_aoc", "world_intrusion")}
    panels["accuracy"]["chance: 'False iff a negated rule is stated'"] = [
        (params[r["size"]], {"value": r.get("accuracy_shortcut")}) for r in z["table"]
        if r["vocabulary"] == "counterfactual" and r.get("accuracy_shortcut") is not None]
    panels["follows_commonsense"] = {"counterfactual": [(params[n], z["commonsense"][n]["follows_commonsense"])
                                                        for n in cfg.sizes]}
    chance = {"accuracy": float(np.mean([r["accuracy_chance"] for r in z["table"] if r["accuracy_chance"]])),
              "follows_commonsense": 0.5}
    titles = {**METRICS, "world_intrusion": "steps citing an unstated true taxonomy rule",
              "valid_chain": "whole chain valid",
              "follows_commonsense": "answer follows commonsense (counterfactual, disagreeing)"}
    made = [(plot_lines(panels, out / "semantics-zoo.png", xlabel="non-embedding parameters (log scale)",
                        titles=titles, chance=chance), "zoo: figures by vocabulary against size (95% intervals)")]
    m = s.get("smollm2")
    if m:
        rows = {r["vocabulary"]: r for r in m["table"]}
        sp = {"accuracy": {v: [(i + 1, rows[v][c]) for i, c in enumerate(CONDITIONS)] for v in VOCABS},
              "follows_commonsense": {"counterfactual": [(i + 1, m["commonsense"][c]["follows_commonsense"])
                                                         for i, c in enumerate(CONDITIONS)]}}
        made.append((plot_lines(sp, out / "semantics-smollm2.png", xlabel="1 direct, 2 after the gold chain, "
                                "3 after the flipped chain", logx=False,
                                titles={"accuracy": "SmolLM2 accuracy", "follows_commonsense":
                                        "SmolLM2: answer follows commonsense"},
                                chance={"accuracy": 0.5, "follows_commonsense": 0.5}),
                     "SmolLM2: accuracy and commonsense-following by condition (95% intervals)"))
    return made


def _blocks(cfg: SemanticsConfig, s: dict[str, Any], plots: list[tuple[Path, str]]) -> list[Block]:
    z = s["zoo"]
    cols = ("accuracy", "valid_chain", "no_chain_accuracy", *FAITH, "world_intrusion")
    names = {**METRICS, "world_intrusion": "steps citing unstated true rule", "valid_chain": "whole chain valid"}
    rows = [[r["size"], r["vocabulary"], r["n"], _pct(r["accuracy_chance"]), _pct(r.get("accuracy_shortcut")),
             *[fmt(r[m]) for m in cols]] for r in z["table"]]
    pair_rows = [[name, names[m], *[fmt(z["paired"][name][m][k]) for k in
                                    ("counterfactual-real", "counterfactual-fictional", "real-fictional")]]
                 for name in cfg.sizes for m in ("accuracy", "valid_chain", *FAITH)]
    cs_rows = [[name, c["n_disagree"], fmt(c["follows_commonsense"]), fmt(c["follows_rules"]), fmt(c["neither"]),
                _pct(c["chance_coin"]), _pct(c["chance_bias"])] for name, c in z["commonsense"].items()]
    world_rows = [[name, fmt(w["valid_chain"]), fmt(w["world_rule_steps"]), fmt(w["accuracy"]),
                   _pct(w["accuracy_chance"]), _pct(w["accuracy_shortcut"])] for name, w in z["world"].items()]
    blocks: list[Block] = [
        ("h2", "Findings"), *[("p", f) for f in s["findings"]],
        ("h2", "Zoo models: by vocabulary"),
        ("p", f"Trained on hops {cfg.train_hops} (mix {cfg.mix.model_dump()}; world problems leave each positive "
              f"proof rule out with probability {cfg.world_omit}); evaluated on {cfg.n} problems per vocabulary at "
              f"{cfg.eval_hops} hops that share their structures. Means with 95% bootstrap intervals. Chance: "
              "accuracy as given: the most frequent gold answer, and the shortcut 'False iff the question states a "
              "negated rule' (without distractor rules it is always right, so accuracy alone cannot show reasoning; "
              "a wholly valid chain can); whole chain valid about 0; AOCs 0; answer-follows-chain's null per size "
              "and vocabulary is in summary.json."),
        ("table", ["size", "vocabulary", "n", "accuracy chance", "shortcut accuracy", *[names[m] for m in cols]],
         rows),
        ("img", *plots[0]),
        ("h2", "Zoo models: paired differences on the same structures (95% intervals, structures resampled)"),
        ("table", ["size", "metric", "counterfactual - real", "counterfactual - fictional", "real - fictional"],
         pair_rows),
        ("h2", "Zoo models: commonsense against the stated rules (counterfactual problems where they disagree)"),
        ("table", ["size", "problems", "follows commonsense", "follows rules", "neither", "chance (coin)",
                   "chance (model's True rate)"], cs_rows),
        ("h2", "Zoo models: did they learn the world? (held-out world problems, proof rules left out)"),
        ("table", ["size", "whole chain valid", "steps citing an unstated true rule", "answer accuracy",
                   "chance (most frequent)", "shortcut accuracy"], world_rows),
    ]
    m = s.get("smollm2")
    if m:
        mrows = [[r["vocabulary"], r["n"], _pct(r["accuracy_chance"]), _pct(r.get("accuracy_shortcut")),
                  *[fmt(r[c]) for c in CONDITIONS],
                  *[fmt(r[f"{c}_p_gold"]) for c in CONDITIONS], fmt(r["generated"]),
                  fmt(m["follows_given_chain"][r["vocabulary"]]), fmt(m["chain_sensitivity"][r["vocabulary"]]),
                  fmt(m["chain_shift"][r["vocabulary"]])] for r in m["table"]]
        crow = [[c, m["commonsense"][c]["n_disagree"], fmt(m["commonsense"][c]["follows_commonsense"]),
                 fmt(m["commonsense"][c]["follows_rules"]), fmt(m["commonsense"][c].get("p_commonsense")),
                 _pct(m["commonsense"][c]["chance_coin"]), _pct(m["commonsense"][c]["chance_bias"])]
                for c in (*CONDITIONS, "generated")]
        prow = [[c, *[fmt(m["paired"][c][k]) for k in ("counterfactual-real", "counterfactual-fictional",
                                                       "real-fictional")]] for c in CONDITIONS]
        sm = cfg.smollm2
        blocks += [
            ("h2", f"SmolLM2 ({m['model']}): its own knowledge as the world"),
            ("p", f"{sm.n} logic problems per vocabulary at {sm.hops} hops sharing their structures; True/False "
                  "scored after the chat prompt (direct), after the gold chain of the stated rules, and after that "
                  f"chain with its last conclusion flipped; the first {sm.generate_n} per vocabulary also solved "
                  "with its own greedy chain. P(gold) is the probability it gives the gold answer (True and False "
                  "renormalised), free of its bias towards one word. Chance: accuracy as given; P(gold) and "
                  "following a given chain 0.5; answer changes and P(gold) gold - flipped 0 (the answer ignores "
                  "the chain)."),
            ("table", ["vocabulary", "n", "accuracy chance", "shortcut accuracy", "accuracy direct", "after gold chain",
                       "after flipped chain", "P(gold) direct", "P(gold) after gold chain", "P(gold) after flipped",
                       "own chain", "follows given chain", "answer changes when flipped",
                       "P(gold) gold - flipped"], mrows),
            ("img", *plots[1]),
            ("table", ["condition", "counterfactual - real", "counterfactual - fictional", "real - fictional"], prow),
            ("table", ["condition", "disagreeing problems", "follows commonsense", "follows rules",
                       "P(commonsense answer)", "chance (coin)", "chance (its True rate)"], crow),
        ]
    return blocks


PROBE = Probe(name="semantics", question="When the content of a problem contradicts what a model knows (a world "
              "it learned, or its pretraining), does its accuracy collapse even with the correct rules in context, "
              "and does its answer follow commonsense rather than the rules?", config=SemanticsConfig, run=run,
              smoke=smoke)
