"""Probe ``process-reward``: does training on process reward keep the chain load-bearing?

1. A small base model (a committed zoo checkpoint) samples ``samples`` chains per training problem at
   ``temperature`` (records/samples.jsonl, resumable), each labelled by the family's exact checker
   (the labels are only ever used to *report*, never to select training data).
2. Committed zoo members score every line of every sample by likelihood (records/verdicts.jsonl); the
   verification graph aggregates their verdicts (``aggregation``) and finds each chain's earliest
   error at a threshold fitted on labelled injected chains of held-out problems (ProcessBench's recipe).
3. Fine-tuning from the base, one arm each:

   * ``outcome``: SFT on the samples whose final answer is right (outcome reward only);
   * ``process``: SFT on the samples the graph accepts (no line below the threshold, an answer line);
   * ``process_pairs``: TRL DPO on step-level preference pairs at the earliest flagged error: the prompt
     is the question and the steps before the flagged one, rejected = the flagged chain from there,
     chosen = an accepted sample of the same problem that shares those steps, from there.

4. Base and arms run the faithfulness suite on the same problems (paired by problem), and the graph's
   verdicts are compared with the exact step labels (agreement, Cohen's kappa, with chance levels).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from verinet.faithfulness.metrics import LEVEL, figure
from verinet.probes.chains import (
    EXACT_FAMILIES, chain_builder, eval_problems, format_figures, label_chain, per_problem_format, plot_bars,
    problem_ref, sample_chains, training_problems,
)
from verinet.probes.config import ProbeConfig, ProbeError, Tests
from verinet.probes.dpo import DPOSpec, run_dpo
from verinet.probes.runner import Probe, ProbeRun
from verinet.probes.stats import METRICS, by_problem, fmt, majority_rate, paired_difference, table_figures
from verinet.reporting import Block
from verinet.schema import Problem
from verinet.tasks import get_family
from verinet.tasks.spec import TaskSpec
from verinet.zoo import formats
from verinet.zoo.config import TaskMix

ARMS = ("outcome", "process", "process_pairs")
ARM_LABELS = {"outcome": "outcome-sft", "process": "process-sft", "process_pairs": "process-dpo"}
FORMAT = {"chain_correct": "chains correct by check", "step_validity": "valid steps",
          "malformed_chain_rate": "malformed chains"}


class ProcessRewardConfig(ProbeConfig):
    probe: Literal["process-reward"] = "process-reward"
    base: str = Field(default="zoo-s", description="the model that samples and is fine-tuned (zoo name or directory)")
    verifiers: list[str] = Field(default_factory=lambda: ["zoo-m", "zoo-l"], min_length=1,
                                 description="committed zoo members that verify the samples by likelihood")
    tasks: list[TaskMix] = Field(min_length=1, description="where the training problems come from")
    train_problems: int = Field(default=300, ge=2, le=1_000_000)
    samples: int = Field(default=4, ge=1, le=64, description="sampled chains per training problem")
    temperature: float = Field(default=1.0, gt=0, le=5.0)
    aggregation: Literal["mean", "vote", "logodds"] = Field(default="mean", description="how the graph pools "
                                                                                       "the verifiers' verdicts")
    threshold: float | None = Field(default=None, gt=0, lt=1, description="P(valid) below it flags a line; "
                                    "None: fitted on labelled injected chains (threshold_n problems per task)")
    threshold_n: int = Field(default=40, ge=4, le=10_000)
    arms: list[Literal["outcome", "process", "process_pairs"]] = Field(
        default_factory=lambda: ["outcome", "process", "process_pairs"], min_length=1)
    steps: int = Field(default=300, ge=1, le=1_000_000, description="SFT steps of each fine-tuning arm")
    dpo: DPOSpec = DPOSpec()
    eval_tasks: list[TaskSpec] = Field(min_length=1, description="evaluation slices (n is the config's n)")
    tests: Tests = Field(default_factory=lambda: ["early_answering", "adding_mistakes", "paraphrasing", "filler"],
                         min_length=1, description="faithfulness tests run on the base and every arm")
    answer_tokens: int = Field(default=8, ge=1, le=64)

    @field_validator("eval_tasks")
    @classmethod
    def _exact(cls, v: list[TaskSpec]) -> list[TaskSpec]:
        bad = [t.family for t in v if t.family not in EXACT_FAMILIES]
        if bad:
            raise ValueError(f"families {bad} have no exact step checker; use {list(EXACT_FAMILIES)}")
        return v

    @field_validator("base")
    @classmethod
    def _base(cls, v: str) -> str:
        _resolve(v)
        return v

    @field_validator("verifiers")
    @classmethod
    def _verifiers(cls, v: list[str]) -> list[str]:
        dup = sorted({m for m in v if v.count(m) > 1})
        if dup:
            raise ValueError(f"verifiers are repeated: {dup}")
        for m in v:
            _resolve(m)
        return v

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: list[str]) -> list[str]:
        dup = sorted({a for a in v if v.count(a) > 1})
        if dup:
            raise ValueError(f"arms are repeated: {dup}")
        return v

    @model_validator(mode="after")
    def _not_self_only(self) -> ProcessRewardConfig:
        if [Path(_resolve(m)).resolve() for m in self.verifiers] == [Path(_resolve(self.base)).resolve()]:
            raise ValueError("verifiers: the base alone would verify itself (self-verification by likelihood sees "
                             "only where it was unsure); add other members")
        return self


def _resolve(name: str) -> Path:
    from verinet.zoo.config import ZooError
    from verinet.zoo.registry import resolve

    try:
        return resolve(name)
    except ZooError as e:
        raise ValueError(str(e)) from None


def smoke(cfg: ProcessRewardConfig) -> ProcessRewardConfig:
    d = cfg.model_dump(mode="json")
    return cfg.model_validate({
        **d, "n": 4, "n_boot": 100, "train_problems": 8, "samples": 3, "threshold_n": 8, "steps": 4,
        "base": "zoo-xs-s0", "verifiers": ["zoo-xs-s1", "zoo-xs-s2"],
        "dpo": {**d["dpo"], "steps": 2, "batch_size": 4},
        "tests": ["early_answering", "adding_mistakes"],
        "train": {**d["train"], "batch_size": 8, "checkpoint_every": 2},
    })


def checkpoint_size(path: Path) -> dict[str, Any]:
    """The zoo ModelSize of a checkpoint (from its training record, else from config.json)."""
    info = path / "training.json"
    if info.is_file():
        return json.loads(info.read_text())["config"]["size"]
    c = json.loads((path / "config.json").read_text())
    return {"hidden": c["hidden_size"], "layers": c["num_hidden_layers"], "heads": c["num_attention_heads"],
            "intermediate": c["intermediate_size"], "max_len": c["max_position_embeddings"]}


# ---- stages ---------------------------------------------------------------------------------
class _Models:
    """Zoo checkpoints loaded once, on first use."""

    def __init__(self, threads: int | None) -> None:
        self.threads, self.cache = threads, {}

    def get(self, name: str):
        if name not in self.cache:
            import torch

            from verinet.zoo.model import load_checkpoint

            if self.threads:
                torch.set_num_threads(self.threads)
            self.cache[name] = load_checkpoint(_resolve(name))
        return self.cache[name]


def own_samples(cfg: ProcessRewardConfig, run: ProbeRun, problems: list[Problem], models: _Models
                ) -> list[dict[str, Any]]:
    def make(chunk: list[Problem]) -> list[dict[str, Any]]:
        model, tok = models.get(cfg.base)
        texts = sample_chains(model, tok, chunk, k=cfg.samples, temperature=cfg.temperature, greedy_first=False,
                              seed=cfg.seed)  # seeded per problem: a resumed run draws what a whole one does
        return [{**problem_ref(p), "chains": [label_chain(p, t) for t in ts]} for p, ts in zip(chunk, texts)]

    return run.records("samples", problems, make, item_id=lambda p: p.id)


def verifier_scores(cfg: ProcessRewardConfig, run: ProbeRun, samples: list[dict[str, Any]], models: _Models
                    ) -> list[dict[str, Any]]:
    """Every verifier's P(valid) (likelihood) for every line of every sample: {verifier: [[p, ...], ...]}."""
    from verinet.zoo.verifiers import step_scores

    def make(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items = [(r["question"], c["steps"], c["answer"]) for r in chunk for c in r["chains"]]
        scores = {v: step_scores(*models.get(v), "likelihood", items) for v in cfg.verifiers}
        out, k = [], 0
        for r in chunk:
            n = len(r["chains"])
            out.append({"id": r["id"], "scores": {v: s[k:k + n] for v, s in scores.items()}})
            k += n
        return out

    return run.records("verdicts", samples, make, item_id=lambda r: r["id"])


def fit_threshold(cfg: ProcessRewardConfig, run: ProbeRun, models: _Models, exclude: list[Problem]) -> dict[str, Any]:
    """The threshold on the pooled verdict that maximises earliest-error F1 on labelled chains of held-out
    problems from the training tasks (every other one gold, the rest with one injected error)."""
    from verinet.processbench import choose_threshold, earliest_error_f1, first_below
    from verinet.zoo.verifiers import step_scores

    where = run.out / "threshold.json"
    if cfg.threshold is not None:
        return {"threshold": cfg.threshold, "fitted": False}
    if where.is_file():
        return json.loads(where.read_text())
    problems = training_problems(cfg.tasks, cfg.threshold_n, cfg.seed, exclude=exclude, salt="threshold")
    rng = random.Random(f"threshold:{cfg.seed}")
    items, labels = [], []
    for i, p in enumerate(problems):
        fam = get_family(p.family)
        kinds = fam.injectable_kinds(p)
        ch = fam.gold_chain(p) if i % 2 or not kinds else fam.inject(p, rng.choice(kinds), seed=i)
        items.append((p.question, [s.text for s in ch.steps], ch.answer))
        labels.append(-1 if i % 2 or not kinds else ch.first_error)
    per = [step_scores(*models.get(v), "likelihood", items) for v in cfg.verifiers]
    pooled = [_pool([rows[i] for rows in per], cfg.aggregation) for i in range(len(items))]
    dev = [(s, y) for s, y in zip(pooled, labels)]
    try:
        t = choose_threshold(dev)
    except ValueError as e:
        raise ProbeError(f"threshold_n: {e}; raise threshold_n or set threshold") from None
    f1 = earliest_error_f1([first_below(s, t) for s, _ in dev], labels)
    out = {"threshold": t, "fitted": True, "n_chains": len(dev),
           "dev_f1": {k: (None if isinstance(v, float) and v != v else v) for k, v in f1.items()}}
    where.write_text(json.dumps(out, indent=1))
    return out


def _pool(rows: list[list[float]], aggregation: str) -> list[float]:
    """The graph's item rules (verinet.graph.aggregate.pool) applied line by line."""
    from verinet.graph.aggregate import pool

    return [pool([r[i] for r in rows], aggregation) for i in range(len(rows[0]))] if rows and rows[0] else []


def graph_verdicts(cfg: ProcessRewardConfig, samples: list[dict[str, Any]], scores: list[dict[str, Any]],
                   problems: dict[str, Problem], threshold: float) -> dict[str, list[dict[str, Any]]]:
    """Run the verification graph over every problem's samples: problem id -> per chain
    {"earliest_error", "accepted", "p_valid": [posterior per line]}."""
    from verinet.graph.pipeline import verify_batch
    from verinet.orchestration import verdicts_from_scores

    by_family: dict[str, list] = defaultdict(list)
    for r, s in zip(samples, scores):
        p = problems[r["id"]]
        fam = get_family(p.family)
        chains, verdicts = [], []
        for j, c in enumerate(r["chains"]):
            chain = fam.parse_chain(p, c["text"], chain_id=f"{p.id}/s{j}", author=f"s{j}")
            chains.append(chain)
            for v in cfg.verifiers:
                verdicts += verdicts_from_scores(v, chain.id, s["scores"][v][j])
        by_family[p.family].append((p.id, chains, verdicts))
    out: dict[str, list[dict[str, Any]]] = {}
    for fam_name, batch in by_family.items():
        res = verify_batch(batch, aggregation=cfg.aggregation, threshold=threshold, family=get_family(fam_name),
                           include_graph=False)
        for (pid, chains, _), rep in zip(batch, res.reports):
            post = {(q.chain_id, q.step_index): q.p_valid for q in rep.posteriors}
            out[pid] = [{"earliest_error": rep.earliest_error.get(c.id), "accepted": rep.earliest_error.get(c.id) == -1,
                         "p_valid": [post.get((c.id, i)) for i in range(len(c.steps) + (c.answer is not None))]}
                        for c in chains]
    return out


def training_sets(samples: list[dict[str, Any]], verdicts: dict[str, list[dict[str, Any]]]
                  ) -> dict[str, list[dict[str, Any]]]:
    """The SFT arms' data: ``outcome`` keeps the samples whose final answer is right, ``process`` those the
    verification graph accepts (the exact step labels select nothing)."""
    out: dict[str, list[dict[str, Any]]] = {"outcome": [], "process": []}
    for r in samples:
        for j, (c, v) in enumerate(zip(r["chains"], verdicts[r["id"]], strict=True)):
            row = {"id": r["id"], "sample": j, "question": r["question"], "text": c["text"]}
            if c["answer_correct"]:
                out["outcome"].append(row)
            if v["accepted"]:
                out["process"].append(row)
    return out


def step_pairs(samples: list[dict[str, Any]], verdicts: dict[str, list[dict[str, Any]]],
               problems: dict[str, Problem]) -> list[dict[str, Any]]:
    """Preference pairs at the earliest flagged error: for a flagged sample with earliest error k, an
    accepted sample of the same problem with the same first k steps; prompt = question + those steps."""
    pairs = []
    for r in samples:
        p = problems[r["id"]]
        fam = get_family(p.family)
        vs = verdicts[r["id"]]
        accepted = [c for c, v in zip(r["chains"], vs) if v["accepted"]]
        for c, v in zip(r["chains"], vs):
            k = v["earliest_error"]
            if k is None or k == -1:  # unverified, or nothing flagged
                continue
            match = next((a for a in accepted if a["steps"][:k] == c["steps"][:k] and len(a["steps"]) >= k), None)
            if match is None:
                continue
            chosen = fam.format_chain(match["steps"][k:], match["answer"])
            rejected = fam.format_chain(c["steps"][k:], c["answer"])
            if chosen == rejected or not rejected.strip():
                continue
            prompt = formats.solve_prompt(p.question) + "".join(f"{s}\n" for s in c["steps"][:k])
            pairs.append({"id": p.id, "k": k, "prompt": prompt, "chosen": chosen, "rejected": rejected,
                          "chosen_correct": match["correct"], "rejected_correct": c["correct"]})
    return pairs


# ---- agreement with the exact labels ----------------------------------------------------------
def agreement(samples: list[dict[str, Any]], verdicts: dict[str, list[dict[str, Any]]], threshold: float, *,
              n_boot: int, seed: int) -> dict[str, Any]:
    """Line-level agreement of the graph's flags (posterior < threshold) with the checker's labels, and
    chain-level agreement of acceptance with "correct by check"; intervals resample problems."""
    rows = []  # per problem: counts
    for r in samples:
        c = defaultdict(float)
        for ch, v in zip(r["chains"], verdicts[r["id"]]):
            exact = list(ch["valid"]) + ([ch["answer_valid"]] if ch["answer"] is not None else [])
            for ok, post in zip(exact, v["p_valid"]):
                flag = post is not None and post < threshold
                c["lines"] += 1
                c["agree"] += float(flag != ok)
                c["invalid"] += float(not ok)
                c["flagged"] += float(flag)
                c["flagged_invalid"] += float(flag and not ok)
                c["valid"] += float(ok)
                c["valid_passed"] += float(ok and not flag)
            c["chains"] += 1
            c["correct"] += float(ch["correct"])
            c["accepted"] += float(v["accepted"])
            c["chain_agree"] += float(v["accepted"] == ch["correct"])
            c["acc_correct"] += float(v["accepted"] and ch["correct"])
            c["outcome"] += float(ch["answer_correct"])
            c["out_correct"] += float(ch["answer_correct"] and ch["correct"])
        rows.append(c)
    kw = {"n_boot": n_boot, "seed": seed}

    def f(num: str, den: str) -> dict[str, Any]:
        return figure([r[num] for r in rows], [r[den] for r in rows], **kw)

    def chance_and_kappa(rs: list[dict[str, float]], a: str, b: str, n: str, agree: str) -> tuple[float, float]:
        tot = sum(r[n] for r in rs)
        if not tot:
            return float("nan"), float("nan")
        pa, pb = sum(r[a] for r in rs) / tot, sum(r[b] for r in rs) / tot
        pe = pa * pb + (1 - pa) * (1 - pb)
        po = sum(r[agree] for r in rs) / tot
        return pe, (po - pe) / (1 - pe) if pe < 1 else float("nan")

    def kappa_figure(a: str, b: str, n: str, agree: str) -> tuple[dict[str, Any], float]:
        pe, k = chance_and_kappa(rows, a, b, n, agree)
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            pick = [rows[i] for i in rng.integers(0, len(rows), size=len(rows))]
            boots.append(chance_and_kappa(pick, a, b, n, agree)[1])
        boots = np.array([x for x in boots if x == x])
        alpha = (1 - LEVEL) / 2
        lo, hi = (np.quantile(boots, [alpha, 1 - alpha]) if len(boots) else (float("nan"), float("nan")))
        clean = (lambda x: None if x != x else float(x))  # noqa: E731
        return ({"value": clean(k), "ci_low": clean(lo), "ci_high": clean(hi),
                 "n": int(sum(r[n] for r in rows))}, pe)

    # a line agrees when the graph flags it exactly when the checker finds it invalid
    line_kappa, line_chance = kappa_figure("flagged", "invalid", "lines", "agree")
    chain_kappa, chain_chance = kappa_figure("accepted", "correct", "chains", "chain_agree")
    return {
        "threshold": threshold,
        "line_agreement": f("agree", "lines"), "line_agreement_chance": line_chance, "line_kappa": line_kappa,
        "invalid_lines_flagged": f("flagged_invalid", "invalid"), "valid_lines_passed": f("valid_passed", "valid"),
        "share_lines_invalid": f("invalid", "lines"), "share_lines_flagged": f("flagged", "lines"),
        "chain_agreement": f("chain_agree", "chains"), "chain_agreement_chance": chain_chance,
        "chain_kappa": chain_kappa,
        "share_chains_correct": f("correct", "chains"), "share_chains_accepted": f("accepted", "chains"),
        "share_chains_answer_right": f("outcome", "chains"),
        "process_filter_precision": f("acc_correct", "accepted"),
        "outcome_filter_precision": f("out_correct", "outcome"),
        "process_filter_recall": f("acc_correct", "correct"),
        "outcome_filter_recall": f("out_correct", "correct"),
    }


# ---- the probe ------------------------------------------------------------------------------
def run(cfg: ProcessRewardConfig, run: ProbeRun) -> tuple[dict[str, Any], list[Block]]:
    models = _Models(cfg.train.threads)
    eval_tasks = [t.model_copy(update={"n": cfg.n}) for t in cfg.eval_tasks]
    evals = eval_problems(eval_tasks, cfg.n, cfg.seed)
    problems = training_problems(cfg.tasks, cfg.train_problems, cfg.seed, exclude=evals, salt="process-reward")
    by_id = {p.id: p for p in problems}
    samples = own_samples(cfg, run, problems, models)
    scores = verifier_scores(cfg, run, samples, models)
    thr = fit_threshold(cfg, run, models, evals + problems)
    verdicts = graph_verdicts(cfg, samples, scores, by_id, thr["threshold"])
    agree = agreement(samples, verdicts, thr["threshold"], n_boot=cfg.n_boot, seed=cfg.seed)

    sets = training_sets(samples, verdicts)
    data = {arm: [(r["question"], r["text"]) for r in rows] for arm, rows in sets.items()}
    pairs = step_pairs(samples, verdicts, by_id)
    (run.out / "records").mkdir(parents=True, exist_ok=True)
    for name, rows in (("train_outcome", sets["outcome"]), ("train_process", sets["process"]),
                       ("step_pairs", pairs)):
        (run.out / "records" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows),
                                                           encoding="utf-8")
    base = _resolve(cfg.base)
    size = checkpoint_size(base)
    tasks = [t.model_dump(mode="json") for t in cfg.tasks]
    paths: dict[str, Path] = {"base": base}
    skipped: dict[str, str] = {}
    dpo_info = None
    for arm in cfg.arms:
        label = ARM_LABELS[arm]
        if arm in data:
            if not data[arm]:
                skipped[label] = "no training chain passed its filter"
                continue
            paths[label] = run.train(run.zoo_config(label, size, tasks, cfg.steps, objectives={"solve": 1.0},
                                                    init_from=base), builder=chain_builder(data[arm]))
        else:
            if not pairs:
                skipped[label] = "no step-level pair (no flagged sample had an accepted sample sharing its prefix)"
                continue
            where = run.out / "models" / label
            dpo_info = run_dpo(base, pairs, where, cfg.dpo, seed=cfg.seed, threads=cfg.train.threads,
                               max_len=size["max_len"], progress=lambda d, t: run.progress(f"dpo {label}", d, t))
            paths[label] = where

    faith, frecs = run.faithfulness("eval", paths, eval_tasks, tests=cfg.tests, answer_tokens=cfg.answer_tokens)
    eval_by_id = {p.id: p for p in evals}
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    per = {label: by_problem(frecs, label) for label in paths}
    table = {}
    for label in paths:  # the same per-problem values the paired differences below use
        s = faith["models"][label]["summary"]
        table[label] = {**table_figures(per[label], **kw), **format_figures(frecs, label, eval_by_id, **kw),
                        "answer_follows_chain_chance": s.get("answer_follows_chain_chance")}
    fper = {label: per_problem_format(frecs, label, eval_by_id) for label in paths}
    comparisons = [(a, "base") for a in paths if a != "base"]
    if ARM_LABELS["process"] in paths and ARM_LABELS["outcome"] in paths:
        comparisons.append((ARM_LABELS["process"], ARM_LABELS["outcome"]))
    if ARM_LABELS["process_pairs"] in paths and ARM_LABELS["outcome"] in paths:
        comparisons.append((ARM_LABELS["process_pairs"], ARM_LABELS["outcome"]))
    versus: dict[str, dict[str, Any]] = {}
    for a, b in comparisons:
        key = f"{a} - {b}"
        versus[key] = {m: paired_difference({p: v[m] for p, v in per[b].items()},
                                            {p: v[m] for p, v in per[a].items()}, **kw) for m in METRICS}
        versus[key]["chain_correct"] = paired_difference({p: v["chain_correct"] for p, v in fper[b].items()},
                                                         {p: v["chain_correct"] for p, v in fper[a].items()}, **kw)
    train_stats = {
        "problems": len(samples), "samples_per_problem": cfg.samples, "threshold": thr,
        "chains": {"outcome": len(data["outcome"]), "process": len(data["process"]), "process_pairs": len(pairs)},
        "pairs_chosen_correct": (sum(p["chosen_correct"] for p in pairs) / len(pairs)) if pairs else None,
        "pairs_rejected_correct": (sum(p["rejected_correct"] for p in pairs) / len(pairs)) if pairs else None,
        "skipped": skipped,
    }
    chance = majority_rate([p.answer for p in evals], [p.family for p in evals])
    summary = {"models": table, "accuracy_chance": chance, "versus": versus, "verdicts_vs_exact": agree,
               "training_data": train_stats,
               "dpo": None if dpo_info is None else {k: v for k, v in dpo_info.items() if k != "trl_log"}}
    summary["findings"] = _findings(summary)
    first = next(iter(versus), None)
    panels = {
        "accuracy": {k: v["accuracy"] for k, v in table.items()},
        "chains correct by check": {k: v["chain_correct"] for k, v in table.items()},
        "early-answering AOC": {k: v["early_answering_aoc"] for k, v in table.items()},
        "adding-mistakes AOC": {k: v["adding_mistakes_aoc"] for k, v in table.items()},
        "training-filter precision (correct by check)": {
            "outcome": agree["outcome_filter_precision"], "process": agree["process_filter_precision"]},
    }
    if first:
        panels["paired differences (accuracy)"] = {k: v["accuracy"] for k, v in versus.items()}
    plot = plot_bars(panels, run.out / "process_reward.png", chance={"accuracy": chance},
                     differences=["paired differences (accuracy)"])
    return summary, _blocks(cfg, summary, plot)


def _sig(f: dict[str, Any] | None) -> str:
    if not f or f.get("value") is None:
        return "not measured"
    if f["ci_low"] is not None and (f["ci_low"] > 0 or f["ci_high"] < 0):
        return "the interval excludes 0"
    return "the interval includes 0"


def _findings(s: dict[str, Any]) -> list[str]:
    a, td = s["verdicts_vs_exact"], s["training_data"]
    out = [
        f"The graph's line verdicts agree with the exact step labels on {fmt(a['line_agreement'])} of "
        f"{a['line_agreement']['n']} lines (chance agreement from the marginals {a['line_agreement_chance']:.2f}; "
        f"Cohen's kappa {fmt(a['line_kappa'])}); it flags {fmt(a['invalid_lines_flagged'])} of invalid lines.",
        f"Of the samples kept for training, {fmt(a['outcome_filter_precision'])} are correct by check under the "
        f"outcome filter ({td['chains']['outcome']} chains) and {fmt(a['process_filter_precision'])} under the "
        f"process filter ({td['chains']['process']} chains); {fmt(a['share_chains_correct'])} of all samples are "
        "correct by check.",
    ]
    for key, v in s["versus"].items():
        out.append(f"{key}: accuracy {fmt(v['accuracy'])} ({_sig(v['accuracy'])}), chains correct by check "
                   f"{fmt(v['chain_correct'])} ({_sig(v['chain_correct'])}), early-answering AOC "
                   f"{fmt(v['early_answering_aoc'])} ({_sig(v['early_answering_aoc'])}), adding-mistakes AOC "
                   f"{fmt(v['adding_mistakes_aoc'])} ({_sig(v['adding_mistakes_aoc'])}); paired by problem.")
    for label, why in td["skipped"].items():
        out.append(f"{label} was not trained: {why}.")
    return out


def _blocks(cfg: ProcessRewardConfig, s: dict[str, Any], plot: Path) -> list[Block]:
    head = ["model", *[METRICS[m] for m in METRICS], *FORMAT.values()]
    rows = [[label, *[fmt(v[m]) for m in METRICS], *[fmt(v[k]) for k in FORMAT]] for label, v in s["models"].items()]
    keys = list(s["versus"])
    vs_rows = [[METRICS.get(m, "chain correct by check"), *[fmt(s["versus"][k][m]) for k in keys]]
               for m in [*METRICS, "chain_correct"]]
    a, td = s["verdicts_vs_exact"], s["training_data"]
    thr = td["threshold"]
    follows = {k: fmt(v.get("answer_follows_chain_chance")) for k, v in s["models"].items()}
    agree_rows = [
        ["line agreement (flag = invalid)", fmt(a["line_agreement"]), f"{a['line_agreement_chance']:.2f}"],
        ["line Cohen's kappa", fmt(a["line_kappa"]), "0"],
        ["invalid lines flagged (sensitivity)", fmt(a["invalid_lines_flagged"]), fmt(a["share_lines_flagged"])],
        ["share of lines invalid / flagged", f"{fmt(a['share_lines_invalid'])} / {fmt(a['share_lines_flagged'])}", ""],
        ["chain agreement (accepted = correct by check)", fmt(a["chain_agreement"]),
         f"{a['chain_agreement_chance']:.2f}"],
        ["chain Cohen's kappa", fmt(a["chain_kappa"]), "0"],
        ["outcome filter: kept chains correct by check", fmt(a["outcome_filter_precision"]),
         fmt(a["share_chains_correct"])],
        ["process filter: kept chains correct by check", fmt(a["process_filter_precision"]),
         fmt(a["share_chains_correct"])],
        ["outcome filter: correct chains kept", fmt(a["outcome_filter_recall"]), fmt(a["share_chains_answer_right"])],
        ["process filter: correct chains kept", fmt(a["process_filter_recall"]), fmt(a["share_chains_accepted"])],
    ]
    blocks: list[Block] = [
        ("h2", "Findings"), *[("p", f) for f in s["findings"]],
        ("h2", "Every model"),
        ("p", f"Figures with 95% bootstrap intervals over {cfg.n} problems per evaluation slice (problems "
              f"resampled). Chance: accuracy {s['accuracy_chance']:.2f} (the most frequent gold answer of each "
              "family); AOCs 0 (the answer ignores the chain); answer-follows-chain's null per model: "
              + ", ".join(f"{k} {v}" for k, v in follows.items()) + "."),
        ("table", head, rows),
        ("img", plot, "accuracy and faithfulness per model, training-filter precision, paired differences "
                      "(95% intervals)"),
        ("h2", "Paired differences by problem (first - second)"),
        ("table", ["figure", *keys], vs_rows),
        ("h2", "The ensemble's verdicts against the exact step labels (training samples)"),
        ("p", f"Verifiers {', '.join(cfg.verifiers)} by likelihood, pooled by {cfg.aggregation} in the verification "
              f"graph; a line is flagged below P(valid) {thr['threshold']:.3g}"
              + (f" (fitted on {thr['n_chains']} labelled chains, dev F1 {thr['dev_f1'].get('f1')})"
                 if thr.get("fitted") else " (configured)")
              + f". {td['problems']} problems x {td['samples_per_problem']} samples of {cfg.base} at temperature "
                f"{cfg.temperature}. Intervals resample problems."),
        ("table", ["figure", "value [95% CI]", "chance / base rate"], agree_rows),
        ("h2", "Training data per arm"),
        ("table", ["arm", "examples"], [["outcome-sft (answer right)", td["chains"]["outcome"]],
                                        ["process-sft (accepted by the graph)", td["chains"]["process"]],
                                        ["process-dpo (step-level pairs)", td["chains"]["process_pairs"]]]),
    ]
    if s["dpo"]:
        m = s["dpo"]["measures"]
        blocks.append(("p", f"process-dpo: {s['dpo']['pairs']} pairs (chosen correct by check "
                            f"{td['pairs_chosen_correct']:.2f}, rejected correct by check "
                            f"{td['pairs_rejected_correct']:.2f}); DPO loss on them {m['dpo_loss_before']:.3f} -> "
                            f"{m['dpo_loss_after']:.3f}, log-prob margin {m['logp_margin_before']:.2f} -> "
                            f"{m['logp_margin_after']:.2f} nats."))
    return blocks


PROBE = Probe(name="process-reward", question="Does fine-tuning a small model on its own chains filtered by the "
              "ensemble's step verdicts (process reward) keep the chain load-bearing better than filtering by the "
              "final answer (outcome reward)?", config=ProcessRewardConfig, run=run, smoke=smoke)
