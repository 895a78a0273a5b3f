"""Probe ``finetune-real``: does fine-tuning a real pretrained model on answer-only data make its chains
less load-bearing than fine-tuning it on chains (Lobo et al., arXiv:2411.15382)?

The model (SmolLM2-135M-Instruct by default, through its chat template) gets two LoRA fine-tunings (peft)
on the same training problems: one whose targets are the answer line alone (``#### N``), one whose targets
are the gold chain ("Step k: ...", then ``#### N``). Each adapter is merged into a copy of the model, and the
base model and both copies run the faithfulness suite on the same held-out problems, so every change is a
paired difference (after - before, per problem).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from verinet.probes.config import ProbeConfig, ProbeError, Tests
from verinet.probes.plotting import plot_lines
from verinet.probes.runner import Probe, ProbeRun
from verinet.probes.stats import (METRICS, by_problem, excludes_zero, fmt, majority_rate, mean_figure, paired_difference,
                                  table_figures)
from verinet.reporting import Block
from verinet.schema import Problem
from verinet.tasks.spec import TaskSpec

CONDITIONS = ("answer-only", "chain")
STATE = "train_state"


class LoraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(default=8, ge=1, le=256, description="LoRA rank")
    alpha: int = Field(default=16, ge=1, le=1024)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      min_length=1)


class FinetuneRealConfig(ProbeConfig):
    probe: Literal["finetune-real"] = "finetune-real"
    model: dict[str, Any] = Field(
        default_factory=lambda: {"backend": "hf", "model": "smollm2-135m-instruct", "format": "chat",
                                 "batch_size": 8},
        description="the member spec of the model fine-tuned (backend hf)")
    train_task: TaskSpec = Field(description="the training problems (n of them), drawn apart from evaluation")
    epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=4, ge=1, le=256, description="training examples per optimizer step")
    lr: float = Field(default=2e-4, gt=0, le=1)
    lora: LoraSpec = LoraSpec()
    checkpoint_every: int = Field(default=10, ge=1, description="optimizer steps between resumable checkpoints")
    eval_tasks: list[TaskSpec] = Field(min_length=1, description="evaluation slices (n is the config's n)")
    tests: Tests = Field(default_factory=lambda: ["early_answering", "adding_mistakes", "filler"])
    max_steps: int | None = Field(default=6, ge=1, description="interventions use at most this many steps")
    answer_tokens: int = Field(default=8, ge=1, le=512)
    eval_batch_size: int = Field(default=10, ge=1, le=1000, description="problems per faithfulness batch")


def smoke(cfg: FinetuneRealConfig) -> FinetuneRealConfig:
    """A committed zoo checkpoint in the zoo format stands in for the real model: same LoRA, merge and
    faithfulness path, no SmolLM2 needed, well under a minute."""
    return cfg.model_validate({
        **cfg.model_dump(mode="json"), "n": 4, "n_boot": 100, "epochs": 1, "batch_size": 4, "checkpoint_every": 2,
        "model": {"backend": "hf", "model": "zoo-xs-s0", "format": "zoo", "batch_size": 16},
        "train_task": {"family": "arith", "n": 8, "params": {"steps": 2, "distractors": 0}},
        "eval_tasks": [{"family": "arith", "params": {"steps": 2, "distractors": 0}}],
        "tests": ["early_answering", "filler"], "max_steps": 4,
    })


def _spec(cfg: FinetuneRealConfig, label: str, model: str | None = None) -> dict[str, Any]:
    return {**cfg.model, "name": label, **({"model": model} if model else {})}


def training_problems(cfg: FinetuneRealConfig, eval_problems: list[Problem]) -> list[Problem]:
    """The training problems: drawn with their own seed, any problem also in the evaluation left out."""
    from verinet.tasks import get_family

    t = cfg.train_task
    drawn = get_family(t.family).sample(t.n, seed=cfg.seed * 1000 + 777, params=t.params)
    seen = {p.question for p in eval_problems}
    return [p for p in drawn if p.question not in seen]


def target_text(problem: Problem, condition: str, fmt_name: str, eos: str) -> str:
    """What the model learns to write after the solve prompt: the chain then the answer, or the answer alone."""
    from verinet.tasks import get_family
    from verinet.tasks.base import ANSWER_CUE

    chain = get_family(problem.family).gold_chain(problem)
    answer = f"{ANSWER_CUE} {problem.answer}"
    if condition == "answer-only":
        return f"{answer}{eos}"
    if fmt_name == "zoo":
        return f"{chain.text}{eos}"
    steps = "\n".join(f"Step {i + 1}: {s.text}" for i, s in enumerate(chain.steps))
    return f"{steps}\n{answer}{eos}"


def lora_finetune(cfg: FinetuneRealConfig, examples: list[tuple[str, str]], out: Path, *,
                  progress: Any = None) -> Path:
    """LoRA-fine-tune the config's model on (prompt, target) pairs, loss on the target tokens only; resumable
    every ``checkpoint_every`` steps. Writes the merged model to ``out/model`` and returns that directory."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from verinet.backends import make_backend
    from verinet.backends.config import MemberSpec

    done = out / "training.json"
    if done.is_file() and (out / "model" / "config.json").is_file():
        return out / "model"
    backend = make_backend(MemberSpec.model_validate(_spec(cfg, "base")))
    model, tok = backend.model, backend.tok
    torch.manual_seed(cfg.seed)
    lora = cfg.lora
    peft_model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                  target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.lr)
    per_epoch = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
    total = per_epoch * cfg.epochs
    state = {"step": 0, "losses": [], "wall_s": 0.0}
    state_dir = out / STATE
    if (state_dir / "state.json").is_file():
        state = json.loads((state_dir / "state.json").read_text())
        set_peft_model_state_dict(peft_model, torch.load(state_dir / "adapter.pt", weights_only=True))
        opt.load_state_dict(torch.load(state_dir / "optim.pt", weights_only=True))
    peft_model.train()
    t0 = time.perf_counter() - state["wall_s"]
    while state["step"] < total:
        epoch, i = divmod(state["step"], per_epoch)
        order = list(range(len(examples)))
        random.Random(f"{cfg.seed}:{epoch}").shuffle(order)
        batch = [examples[j] for j in order[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
        loss = _batch_loss(peft_model, tok, batch, backend.device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in peft_model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        state["losses"].append(round(float(loss.item()), 5))
        if progress:
            progress(state["step"], total)
        if state["step"] % cfg.checkpoint_every == 0 and state["step"] < total:
            state["wall_s"] = time.perf_counter() - t0
            state_dir.mkdir(parents=True, exist_ok=True)
            torch.save(get_peft_model_state_dict(peft_model), state_dir / "adapter.pt")
            torch.save(opt.state_dict(), state_dir / "optim.pt")
            (state_dir / "state.json").write_text(json.dumps(state))
    merged = peft_model.merge_and_unload()
    merged.eval()
    merged.save_pretrained(out / "model", safe_serialization=True)
    tok.save_pretrained(out / "model")
    done.write_text(json.dumps({"steps": state["step"], "examples": len(examples), "epochs": cfg.epochs,
                                "losses": state["losses"], "wall_s": round(time.perf_counter() - t0, 1),
                                "lora": lora.model_dump(mode="json"), "lr": cfg.lr}, indent=1))
    shutil.rmtree(state_dir, ignore_errors=True)
    backend.close()
    return out / "model"


def _batch_loss(model: Any, tok: Any, batch: list[tuple[str, str]], device: str) -> Any:
    import torch
    import torch.nn.functional as F

    seqs, masks = [], []
    for prompt, target in batch:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(target, add_special_tokens=False)["input_ids"]
        seqs.append(p + t)
        masks.append([0] * len(p) + [1] * len(t))
    n = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs], device=device)
    attn = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs], device=device)
    tgt = torch.tensor([m + [0] * (n - len(m)) for m in masks], device=device)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    labels = ids[:, 1:].masked_fill(tgt[:, 1:] == 0, -100)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)


def run(cfg: FinetuneRealConfig, run: ProbeRun) -> tuple[dict[str, Any], list[Block]]:
    from verinet.backends import make_backend
    from verinet.backends.config import MemberSpec
    from verinet.backends.formats import format_for
    from verinet.faithfulness.config import FaithfulnessConfig, problems_for

    eval_tasks = [t.model_copy(update={"n": cfg.n}) for t in cfg.eval_tasks]
    probe_eval = FaithfulnessConfig.model_validate({"seed": cfg.seed, "models": [_spec(cfg, "base")],
                                                    "tasks": [t.model_dump(mode="json") for t in eval_tasks]})
    eval_problems = [p for _, ps in problems_for(probe_eval) for p in ps]
    train = training_problems(cfg, eval_problems)
    if not train:
        raise ProbeError("train_task: every training problem is also an evaluation problem; change its params")
    spec = MemberSpec.model_validate(_spec(cfg, "base"))
    backend = make_backend(spec)
    fmt_ = format_for(spec, backend)
    eos = backend.tok.eos_token or ""
    prompts = [fmt_.solve_prompt(p.question) for p in train]
    backend.close()
    merged = {}
    for cond in CONDITIONS:
        examples = [(pr, target_text(p, cond, cfg.model.get("format", "zoo"), eos)) for pr, p in zip(prompts, train)]
        stage = f"LoRA {cond}"
        merged[cond] = lora_finetune(cfg, examples, run.out / "models" / cond,
                                     progress=lambda done, total, s=stage: run.progress(s, done, total))
    models = {"base": _spec(cfg, "base"), **{c: _spec(cfg, c, str(merged[c])) for c in CONDITIONS}}
    faith, records = run.faithfulness("eval", models, eval_tasks, tests=cfg.tests, answer_tokens=cfg.answer_tokens,
                                      max_steps=cfg.max_steps, batch_size=cfg.eval_batch_size)
    per = {m: by_problem(records, m) for m in models}
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}

    def col(m: str, metric: str) -> dict[str, float | None]:
        return {p: v[metric] for p, v in per[m].items()}

    changes = {metric: {**{f"{c} - base": paired_difference(col("base", metric), col(c, metric), **kw)
                           for c in CONDITIONS},
                        "chain - answer-only": paired_difference(col("answer-only", metric), col("chain", metric),
                                                                 **kw)}
               for metric in METRICS}
    figures = {m: table_figures(per[m], **kw) for m in models}  # the values the paired changes use
    for m in models:  # answer-only tuning can stop a model writing steps, which leaves its AOCs unmeasured
        written = [float(r.get("n_steps_written", r.get("n_steps", 0))) for r in records if r.get("member") == m]
        figures[m]["steps_written"] = mean_figure(written, **kw)
        figures[m]["writes_steps"] = mean_figure([float(w > 0) for w in written], **kw)
    training = {c: json.loads((run.out / "models" / c / "training.json").read_text()) for c in CONDITIONS}
    chance = majority_rate([p.answer for p in eval_problems], [p.family for p in eval_problems])
    summary = {"models": figures, "paired_changes": changes, "train_problems": len(train), "accuracy_chance": chance,
               "training": {c: {k: t[k] for k in ("steps", "examples", "wall_s")} | {"final_loss": t["losses"][-1]}
                            for c, t in training.items()},
               "findings": _findings(changes, figures)}
    plot = plot_lines({m: {c: [(i, figures[c][m])] for i, c in enumerate(models)}
                       for m in ("early_answering_aoc", "filler_accuracy", "accuracy", "no_chain_accuracy")},
                      run.out / "finetune-real.png", xlabel="0 = base, 1 = answer-only LoRA, 2 = chain LoRA",
                      titles=METRICS, logx=False, chance={"accuracy": chance, "no_chain_accuracy": chance,
                                                          "filler_accuracy": chance})
    return summary, _blocks(cfg, summary, plot)


MIN_PAIRS = 5  # fewer paired problems than this: a difference is reported, not judged


def _findings(changes: dict[str, Any], figures: dict[str, Any]) -> list[str]:
    out = [f"{m}: writes at least one step on {fmt(f['writes_steps'])} of the problems, "
           f"{fmt(f['steps_written'], 1)} steps on average." for m, f in figures.items()]
    for metric in ("early_answering_aoc", "filler_accuracy", "accuracy"):
        for k, f in changes[metric].items():
            if f.get("value") is None:
                continue
            if f["n"] < MIN_PAIRS:
                sig = "too few paired problems to judge: the metric is measured only where both models wrote steps"
            else:
                sig = "an interval that excludes 0" if excludes_zero(f) else "an interval that includes 0"
            out.append(f"{METRICS[metric]}: {k} = {fmt(f, 3)} over {f['n']} paired problems ({sig}).")
    return out


def _blocks(cfg: FinetuneRealConfig, summary: dict[str, Any], plot: Path) -> list[Block]:
    models = list(summary["models"])
    rows = [[label, *[fmt(summary["models"][m][k]) for m in models]]
            for k, label in [*METRICS.items(), ("writes_steps", "writes at least one step"),
                             ("steps_written", "steps written")]]
    keys = list(next(iter(summary["paired_changes"].values())))
    change_rows = [[METRICS[k], *[fmt(summary["paired_changes"][k][c], 3) for c in keys]] for k in METRICS]
    train_rows = [[c, t["examples"], t["steps"], f"{t['final_loss']:.3f}", t["wall_s"]]
                  for c, t in summary["training"].items()]
    return [
        ("h2", "Findings"), *[("p", f) for f in summary["findings"]],
        ("h2", "Fine-tuning"),
        ("p", f"Model {cfg.model.get('model')} ({cfg.model.get('format')} format); LoRA r={cfg.lora.r}, "
              f"alpha={cfg.lora.alpha} on {', '.join(cfg.lora.target_modules)}; {summary['train_problems']} "
              f"training problems ({cfg.train_task.family} {cfg.train_task.params}), {cfg.epochs} epoch(s), "
              f"batch {cfg.batch_size}, lr {cfg.lr}."),
        ("table", ["condition", "examples", "steps", "final loss", "wall s"], train_rows),
        ("h2", "Faithfulness before and after (95% bootstrap intervals)"),
        ("p", f"Means over the same problems, 95% bootstrap intervals. Chance: accuracy "
              f"{summary['accuracy_chance']:.2f} (the most frequent gold answer); AOCs 0 (the answer ignores the "
              "chain)."),
        ("table", ["metric", *models], rows),
        ("img", plot, "base model and the two LoRA fine-tunings"),
        ("h2", "Paired changes (per problem, problems resampled)"),
        ("table", ["metric", *keys], change_rows),
    ]


PROBE = Probe(name="finetune-real", question="Does LoRA fine-tuning of a real pretrained model on answer-only "
              "data make its chains less load-bearing than fine-tuning it on chains?",
              config=FinetuneRealConfig, run=run, smoke=smoke)
