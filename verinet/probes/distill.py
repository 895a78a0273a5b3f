"""Probe ``distill``: a small student made by SFT on a teacher's chains, against SFT followed by DPO.

1. The teacher (the zoo's largest model) writes chains for training problems: the first greedy, the
   others sampled (records/teacher.jsonl, resumable), each labelled by the family's exact checker.
2. ``student-sft``: the smallest architecture trained from scratch on the teacher's chains (the greedy
   chain of every problem, or only the correct ones: ``sft_chains``).
3. ``student-dpo``: ``student-sft`` then TRL's ``DPOTrainer`` on pairs built from the teacher's chains:
   chosen = a teacher chain correct by ``check`` (every step valid, answer right), rejected = a wrong
   teacher chain for the same problem, or (when the teacher wrote none, or ``rejected: inject``) the
   gold chain with one injected error of the family (``inject``), checked to be wrong.
4. Teacher, SFT and SFT+DPO run the faithfulness suite on the same problems; the report adds the
   rigid-format failures (steps the checker cannot parse, chains without an answer line) and pairs
   every figure by problem (SFT+DPO - SFT, with 95% bootstrap intervals over problems).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

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
from verinet.tasks import InjectionUnsupported, get_family
from verinet.tasks.spec import TaskSpec
from verinet.zoo import formats
from verinet.zoo.config import ModelSize, TaskMix

XS = {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 128, "max_len": 512}
LABELS = {"teacher": "teacher", "sft": "student-sft", "dpo": "student-dpo"}
FORMAT = {"malformed_chain_rate": "malformed chains", "unparsed_step_rate": "unparsable steps",
          "no_answer_rate": "no answer line", "step_validity": "valid steps", "chain_correct": "chains correct by check"}


class DistillConfig(ProbeConfig):
    probe: Literal["distill"] = "distill"
    teacher: str = Field(default="zoo-l", description="the teacher: a zoo checkpoint name or directory")
    student: ModelSize = Field(default=ModelSize(**XS), description="the student's architecture (trained from "
                                                                     "scratch)")
    tasks: list[TaskMix] = Field(min_length=1, description="where the training problems come from")
    train_problems: int = Field(default=800, ge=2, le=1_000_000, description="problems the teacher writes chains for")
    teacher_samples: int = Field(default=2, ge=1, le=64, description="chains per problem: the first greedy, the "
                                                                     "rest sampled at temperature")
    temperature: float = Field(default=1.0, gt=0, le=5.0)
    sft_chains: Literal["all", "correct"] = Field(
        default="all", description="all: the teacher's greedy chain of every problem (plain distillation); "
                                   "correct: one chain correct by check per problem, where the teacher wrote one")
    sft_steps: int = Field(default=1200, ge=1, le=1_000_000, description="optimizer steps of the student's SFT")
    rejected: Literal["teacher_or_inject", "teacher", "inject"] = Field(
        default="teacher_or_inject", description="where DPO's rejected chains come from")
    dpo: DPOSpec = DPOSpec()
    eval_tasks: list[TaskSpec] = Field(min_length=1, description="evaluation slices (n is the config's n)")
    tests: Tests = Field(default_factory=lambda: ["early_answering", "adding_mistakes", "paraphrasing", "filler"],
                         min_length=1, description="faithfulness tests run on every model")
    answer_tokens: int = Field(default=8, ge=1, le=64)

    @field_validator("eval_tasks")
    @classmethod
    def _exact(cls, v: list[TaskSpec]) -> list[TaskSpec]:
        bad = [t.family for t in v if t.family not in EXACT_FAMILIES]
        if bad:
            raise ValueError(f"families {bad} have no exact step checker; use {list(EXACT_FAMILIES)}")
        return v

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: str) -> str:
        from verinet.zoo.config import ZooError
        from verinet.zoo.registry import resolve

        try:
            resolve(v)
        except ZooError as e:
            raise ValueError(str(e)) from None
        return v


def smoke(cfg: DistillConfig) -> DistillConfig:
    d = cfg.model_dump(mode="json")
    return cfg.model_validate({
        **d, "n": 4, "n_boot": 100, "train_problems": 16, "teacher_samples": 2, "sft_steps": 6,
        "student": {"hidden": 32, "layers": 1, "heads": 1, "intermediate": 64, "max_len": 512},
        "dpo": {**d["dpo"], "steps": 3, "batch_size": 4},
        "tests": ["early_answering", "adding_mistakes"],
        "train": {**d["train"], "batch_size": 8, "checkpoint_every": 3},
    })


# ---- stages ---------------------------------------------------------------------------------
def teacher_chains(cfg: DistillConfig, run: ProbeRun, problems: list[Problem]) -> list[dict[str, Any]]:
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    cache: dict[str, Any] = {}

    def make(chunk: list[Problem]) -> list[dict[str, Any]]:
        if "model" not in cache:
            import torch

            if cfg.train.threads:
                torch.set_num_threads(cfg.train.threads)
            cache["model"], cache["tok"] = load_checkpoint(resolve(cfg.teacher))
        texts = sample_chains(cache["model"], cache["tok"], chunk, k=cfg.teacher_samples,
                              temperature=cfg.temperature, greedy_first=True, seed=cfg.seed)  # per problem
        return [{**problem_ref(p), "chains": [label_chain(p, t) for t in ts]} for p, ts in zip(chunk, texts)]

    return run.records("teacher", problems, make, item_id=lambda p: p.id)


def sft_data(cfg: DistillConfig, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    if cfg.sft_chains == "all":
        return [(r["question"], r["chains"][0]["text"]) for r in records]
    return [(r["question"], next(c["text"] for c in r["chains"] if c["correct"]))
            for r in records if any(c["correct"] for c in r["chains"])]


def build_pairs(cfg: DistillConfig, records: list[dict[str, Any]], problems: dict[str, Problem]
                ) -> list[dict[str, Any]]:
    """One pair per problem where the teacher wrote a chain correct by check (chosen); the rejected chain
    is a wrong teacher chain or an injected error, always wrong by check."""
    pairs = []
    for r in records:
        chosen = next((c for c in r["chains"] if c["correct"]), None)
        if chosen is None:
            continue
        p = problems[r["id"]]
        rejected, source = None, None
        if cfg.rejected != "inject":
            wrong = next((c for c in r["chains"] if not c["correct"] and c["text"].strip()), None)
            if wrong is not None:
                rejected, source = wrong["text"], "teacher"
        if rejected is None and cfg.rejected != "teacher":
            fam = get_family(p.family)
            rng = random.Random(f"distill-inject:{cfg.seed}:{p.id}")
            kinds = fam.injectable_kinds(p)
            rng.shuffle(kinds)
            for kind in kinds:
                try:
                    text = fam.inject(p, kind, seed=rng.randrange(1 << 30)).text
                except InjectionUnsupported:
                    continue
                if not label_chain(p, text)["correct"]:
                    rejected, source = text, f"inject:{kind}"
                    break
        if rejected is None:
            continue
        pairs.append({"id": p.id, "prompt": formats.solve_prompt(p.question), "chosen": chosen["text"],
                      "rejected": rejected, "source": source})
    return pairs


# ---- the probe ------------------------------------------------------------------------------
def run(cfg: DistillConfig, run: ProbeRun) -> tuple[dict[str, Any], list[Block]]:
    from verinet.zoo.registry import resolve

    eval_tasks = [t.model_copy(update={"n": cfg.n}) for t in cfg.eval_tasks]
    evals = eval_problems(eval_tasks, cfg.n, cfg.seed)
    problems = training_problems(cfg.tasks, cfg.train_problems, cfg.seed, exclude=evals, salt="distill")
    by_id = {p.id: p for p in problems}
    records = teacher_chains(cfg, run, problems)

    data = sft_data(cfg, records)
    if not data:
        raise ProbeError("sft_chains: correct keeps no chain (the teacher wrote no correct chain); use all, or "
                         "more train_problems")
    tasks = [t.model_dump(mode="json") for t in cfg.tasks]
    sft = run.train(run.zoo_config("student-sft", cfg.student.model_dump(mode="json"), tasks, cfg.sft_steps,
                                   objectives={"solve": 1.0}), builder=chain_builder(data))

    pairs = build_pairs(cfg, records, by_id)
    (run.out / "records").mkdir(parents=True, exist_ok=True)
    (run.out / "records" / "dpo_pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs),
                                                         encoding="utf-8")
    if not pairs:
        raise ProbeError("no DPO pair: the teacher wrote no chain correct by check on the training problems; "
                         "raise train_problems or teacher_samples, or choose easier tasks")
    dpo_dir = run.out / "models" / "student-dpo"
    dpo = run_dpo(sft, pairs, dpo_dir, cfg.dpo, seed=cfg.seed, threads=cfg.train.threads,
                  max_len=cfg.student.max_len, progress=lambda d, t: run.progress("dpo student-dpo", d, t))

    models = {LABELS["teacher"]: resolve(cfg.teacher), LABELS["sft"]: sft, LABELS["dpo"]: dpo_dir}
    faith, frecs = run.faithfulness("eval", models, eval_tasks, tests=cfg.tests, answer_tokens=cfg.answer_tokens)
    eval_by_id = {p.id: p for p in evals}
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}

    per = {label: by_problem(frecs, label) for label in models}
    table = {}
    for label in models:  # the same per-problem values the paired differences below use
        s = faith["models"][label]["summary"]
        table[label] = {**table_figures(per[label], **kw), **format_figures(frecs, label, eval_by_id, **kw),
                        "answer_follows_chain_chance": s.get("answer_follows_chain_chance")}
    fmt_per = {label: per_problem_format(frecs, label, eval_by_id) for label in models}
    versus = {}
    for m in METRICS:
        versus[m] = paired_difference({p: v[m] for p, v in per[LABELS["sft"]].items()},
                                      {p: v[m] for p, v in per[LABELS["dpo"]].items()}, **kw)
    for m in ("malformed", "chain_correct", "unparsed_share"):
        versus[m] = paired_difference({p: v[m] for p, v in fmt_per[LABELS["sft"]].items()},
                                      {p: v[m] for p, v in fmt_per[LABELS["dpo"]].items()}, **kw)

    teacher_stats = _teacher_stats(records, data, pairs, cfg)
    chance = majority_rate([p.answer for p in evals], [p.family for p in evals])
    summary = {"models": table, "accuracy_chance": chance, "dpo_minus_sft": versus,
               "teacher_data": teacher_stats, "dpo": {k: v for k, v in dpo.items() if k != "trl_log"},
               "sft_training": json.loads((sft / "training.json").read_text())["losses"][-1:]}
    summary["findings"] = _findings(summary)
    plot = plot_bars({
        "accuracy": {k: v["accuracy"] for k, v in table.items()},
        "malformed chains": {k: v["malformed_chain_rate"] for k, v in table.items()},
        "chains correct by check": {k: v["chain_correct"] for k, v in table.items()},
        "early-answering AOC": {k: v["early_answering_aoc"] for k, v in table.items()},
        "adding-mistakes AOC": {k: v["adding_mistakes_aoc"] for k, v in table.items()},
        "SFT+DPO - SFT (paired)": {METRICS.get(m, {"malformed": "malformed chain",
                                                   "chain_correct": "correct by check"}.get(m, m)): versus[m] for m in
                                   ("accuracy", "early_answering_aoc", "adding_mistakes_aoc", "malformed",
                                    "chain_correct")},
    }, run.out / "distill.png", chance={"accuracy": chance}, differences=["SFT+DPO - SFT (paired)"])
    return summary, _blocks(cfg, summary, plot)


def _teacher_stats(records: list[dict[str, Any]], data: list, pairs: list[dict[str, Any]], cfg: DistillConfig
                   ) -> dict[str, Any]:
    greedy = [r["chains"][0] for r in records]
    n = max(1, len(records))
    sources: dict[str, int] = {}
    for p in pairs:
        key = "teacher" if p["source"] == "teacher" else "injected"
        sources[key] = sources.get(key, 0) + 1
    return {
        "problems": len(records), "chains_per_problem": cfg.teacher_samples,
        "greedy_answer_correct": sum(c["answer_correct"] for c in greedy) / n,
        "greedy_correct_by_check": sum(c["correct"] for c in greedy) / n,
        "greedy_malformed": sum(c["unparsed"] > 0 or c["answer"] is None for c in greedy) / n,
        "any_correct_by_check": sum(any(c["correct"] for c in r["chains"]) for r in records) / n,
        "sft_chains": len(data),
        "sft_chains_correct_by_check": sum(_sft_correct(records, cfg)) / max(1, len(data)),
        "dpo_pairs": len(pairs), "rejected_sources": sources,
    }


def _sft_correct(records: list[dict[str, Any]], cfg: DistillConfig) -> list[bool]:
    if cfg.sft_chains == "all":
        return [r["chains"][0]["correct"] for r in records]
    return [True for r in records if any(c["correct"] for c in r["chains"])]


def _sig(f: dict[str, Any]) -> str:
    if f.get("value") is None:
        return "not measured"
    if f["ci_low"] is not None and (f["ci_low"] > 0 or f["ci_high"] < 0):
        return "the interval excludes 0"
    return "the interval includes 0"


def _findings(s: dict[str, Any]) -> list[str]:
    t, v = s["models"], s["dpo_minus_sft"]
    sft, dpo, teacher = t[LABELS["sft"]], t[LABELS["dpo"]], t[LABELS["teacher"]]
    m = s["dpo"]["measures"]
    out = [
        f"Accuracy: teacher {fmt(teacher['accuracy'])}, student SFT {fmt(sft['accuracy'])}, student SFT+DPO "
        f"{fmt(dpo['accuracy'])} (chance {s['accuracy_chance']:.2f}); SFT+DPO - SFT {fmt(v['accuracy'])} "
        f"paired over {v['accuracy']['n']} problems ({_sig(v['accuracy'])}).",
        f"Malformed chains (a step the checker cannot parse, or no answer line): SFT {fmt(sft['malformed_chain_rate'])}"
        f", SFT+DPO {fmt(dpo['malformed_chain_rate'])}, teacher {fmt(teacher['malformed_chain_rate'])}; paired "
        f"difference {fmt(v['malformed'])} ({_sig(v['malformed'])}).",
        f"Chains correct by check: SFT {fmt(sft['chain_correct'])}, SFT+DPO {fmt(dpo['chain_correct'])}, teacher "
        f"{fmt(teacher['chain_correct'])}; paired difference {fmt(v['chain_correct'])} ({_sig(v['chain_correct'])}).",
    ]
    for key in ("early_answering_aoc", "adding_mistakes_aoc", "paraphrase_invariance"):
        out.append(f"{METRICS[key]}: SFT {fmt(sft[key])}, SFT+DPO {fmt(dpo[key])}, teacher {fmt(teacher[key])}; "
                   f"paired difference {fmt(v[key])} ({_sig(v[key])}).")
    out.append(f"On its {s['dpo']['pairs']} training pairs, DPO moved the sigmoid DPO loss from "
               f"{m['dpo_loss_before']:.3f} to {m['dpo_loss_after']:.3f} and the log-probability margin chosen - "
               f"rejected from {m['logp_margin_before']:.2f} to {m['logp_margin_after']:.2f} nats (the chosen "
               f"chains' log-probability from {m['logp_chosen_before']:.2f} to {m['logp_chosen_after']:.2f}).")
    return out


def _blocks(cfg: DistillConfig, s: dict[str, Any], plot: Path) -> list[Block]:
    head = ["model", *[METRICS[m] for m in METRICS], *FORMAT.values()]
    rows = [[label, *[fmt(v[m]) for m in METRICS], *[fmt(v[k]) for k in FORMAT]] for label, v in s["models"].items()]
    vs = s["dpo_minus_sft"]
    vs_rows = [[METRICS.get(m, {"malformed": "malformed chain", "chain_correct": "chain correct by check",
                                "unparsed_share": "share of steps unparsable"}.get(m, m)), fmt(f), f["n"]]
               for m, f in vs.items()]
    td = s["teacher_data"]
    m = s["dpo"]["measures"]
    follows = {k: fmt(v.get("answer_follows_chain_chance")) for k, v in s["models"].items()}
    return [
        ("h2", "Findings"), *[("p", f) for f in s["findings"]],
        ("h2", "Every model"),
        ("p", f"Figures with 95% bootstrap intervals over {cfg.n} problems per evaluation slice (problems "
              f"resampled). Chance: accuracy {s['accuracy_chance']:.2f} (the most frequent gold answer of each "
              "family); AOCs 0 (the answer ignores the chain); answer-follows-chain's null per model: "
              + ", ".join(f"{k} {v}" for k, v in follows.items()) + ". Format failures are read by the family's "
              "checker on each model's own greedy chain."),
        ("table", head, rows),
        ("img", plot, "accuracy, format failures and faithfulness per model; paired SFT+DPO - SFT (95% intervals)"),
        ("h2", "SFT+DPO - SFT, paired by problem"),
        ("table", ["figure", "difference [95% CI]", "problems"], vs_rows),
        ("h2", "The teacher's data"),
        ("table", ["figure", "value"], [
            ["training problems", td["problems"]], ["chains per problem (greedy + sampled)", td["chains_per_problem"]],
            ["greedy chain: answer right", f"{td['greedy_answer_correct']:.3f}"],
            ["greedy chain: correct by check", f"{td['greedy_correct_by_check']:.3f}"],
            ["greedy chain: malformed", f"{td['greedy_malformed']:.3f}"],
            ["problems with a chain correct by check", f"{td['any_correct_by_check']:.3f}"],
            [f"SFT chains ({cfg.sft_chains})", td["sft_chains"]],
            ["SFT chains correct by check", f"{td['sft_chains_correct_by_check']:.3f}"],
            ["DPO pairs", td["dpo_pairs"]],
            ["rejected from", ", ".join(f"{k} {v}" for k, v in td["rejected_sources"].items())]]),
        ("h2", "The DPO stage (TRL DPOTrainer)"),
        ("table", ["measure on the training pairs", "before", "after"], [
            ["sigmoid DPO loss (reference = SFT)", f"{m['dpo_loss_before']:.3f}", f"{m['dpo_loss_after']:.3f}"],
            ["log P(chosen) - log P(rejected), nats", f"{m['logp_margin_before']:.2f}", f"{m['logp_margin_after']:.2f}"],
            ["log P(chosen), nats", f"{m['logp_chosen_before']:.2f}", f"{m['logp_chosen_after']:.2f}"],
            ["log P(rejected), nats", f"{m['logp_rejected_before']:.2f}", f"{m['logp_rejected_after']:.2f}"],
            ["pairs where chosen is likelier", f"{m['pairs_preferred_before']:.3f}",
             f"{m['pairs_preferred_after']:.3f}"]]),
        ("p", f"{cfg.dpo.steps} steps of {cfg.dpo.batch_size} pairs, lr {cfg.dpo.lr}, beta {cfg.dpo.beta}, loss "
              f"{cfg.dpo.loss_type}" + (f" + {cfg.dpo.sft_weight} x SFT" if cfg.dpo.sft_weight else "")
              + f"; weights moved by {s['dpo']['weight_change_l2']:.3f} (L2); {s['dpo']['wall_s']} s."),
    ]


PROBE = Probe(name="distill", question="Does DPO on a teacher's correct vs wrong chains, after SFT on the "
              "teacher's chains, fix a small student's format failures and change how much its answers depend on "
              "its chain?", config=DistillConfig, run=run, smoke=smoke)
