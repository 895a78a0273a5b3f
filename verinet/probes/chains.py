"""What the ``distill`` and ``process-reward`` probes share: training problems, sampled chains and their
exact labels, supervised fine-tuning on a fixed set of chains, format-failure figures and a bar plot.

A sampled chain is stored as a plain record (JSON) with its exact labels from the family's checker::

    {"text": "STEP\\nSTEP\\n#### A", "steps": [...], "answer": "A" | None, "unparsed": 0,
     "valid": [true, false], "first_error": 1, "answer_correct": true, "correct": false}

``correct`` means correct by ``check``: every step valid and the final answer right.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from verinet.faithfulness.metrics import figure
from verinet.probes.config import ProbeError
from verinet.schema import Problem
from verinet.tasks import chain_budget, get_family
from verinet.tasks.base import split_chain
from verinet.tasks.spec import TaskSpec
from verinet.zoo import formats
from verinet.zoo.config import TaskMix, ZooConfig
from verinet.zoo.data import Example, ExampleBuilder

EXACT_FAMILIES = ("arith", "logic")  # families whose `check` labels every step exactly


# ---- problems ---------------------------------------------------------------------------------
def eval_problems(tasks: Sequence[TaskSpec], n: int, seed: int) -> list[Problem]:
    """The evaluation problems exactly as ``ProbeRun.faithfulness`` draws them: the faithfulness job's own
    ``problems_for`` on its tasks (``n`` problems each) and seed."""
    from verinet.faithfulness.config import FaithfulnessConfig, problems_for

    # only seed and tasks are read: no models are needed to draw the problems
    drawn = FaithfulnessConfig.model_construct(seed=seed, tasks=[t.model_copy(update={"n": n}) for t in tasks])
    return [p for _, ps in problems_for(drawn) for p in ps]


def training_problems(mixes: Sequence[TaskMix], n: int, seed: int, *, exclude: Sequence[Problem] = (),
                      salt: str = "train") -> list[Problem]:
    """``n`` training problems drawn from the mixture (family by weight, then knobs uniformly), none
    whose question is one of ``exclude``'s (the evaluation problems), no question twice."""
    banned = {p.question for p in exclude}
    rng = random.Random(f"probe-{salt}:{seed}")
    out: list[Problem] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ProbeError(f"cannot draw {n} distinct training problems outside the evaluation set from the "
                             "tasks given; lower the number of training problems or widen the tasks")
        mix = rng.choices(list(mixes), weights=[m.weight for m in mixes])[0]
        p = get_family(mix.family).generate(rng.getrandbits(31), rng.choice(mix.params))
        if p.question in banned or p.question in seen:
            continue
        seen.add(p.question)
        out.append(p)
    return out


def problem_ref(p: Problem) -> dict[str, Any]:
    return {"id": p.id, "family": p.family, "question": p.question, "gold": p.answer}


# ---- sampling and labels ----------------------------------------------------------------------
def sample_seed(seed: int, problem_id: str, sample: int) -> int:
    """The seed of one sampled chain: a function of (seed, problem, sample index) only, so the samples of a
    problem do not depend on the batch or chunk it is drawn in (a resumed run draws what a whole one does)."""
    return int(hashlib.sha1(f"probe-sample:{seed}:{problem_id}:{sample}".encode()).hexdigest()[:15], 16)


class _GumbelSampler:
    """A logits processor that makes greedy decoding draw from softmax(logits / temperature): Gumbel noise
    from each row's own generator is added to the scaled logits, and argmax of the sum is an exact sample
    (the Gumbel-max trick). Row r's t-th token uses the t-th draw of generator r, whatever the batch."""

    def __init__(self, seeds: Sequence[int], temperature: float) -> None:
        self.temperature = temperature
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.generators):
            raise RuntimeError(f"sampler seeded for {len(self.generators)} rows, got {scores.shape[0]}")
        u = torch.stack([torch.rand(scores.shape[1], generator=g, dtype=torch.float64) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(min=1e-300)))
        return scores.float() / self.temperature + gumbel.to(device=scores.device, dtype=torch.float32)


@torch.inference_mode()
def sample_chains(model, tok, problems: Sequence[Problem], *, k: int, temperature: float, greedy_first: bool,
                  seed: int, batch_size: int = 64) -> list[list[str]]:
    """``k`` chains per problem in the solve format: the first greedy when ``greedy_first``, the rest
    sampled at ``temperature`` (plain ancestral sampling: no top-k, no top-p). Sample j of problem p is
    seeded by ``sample_seed(seed, p.id, j)``: the same whichever problems share its call or batch, up to
    the float noise of another batch shape (padding, matmul blocking), which can flip a token at a near tie,
    as batched decoding does in any engine."""
    from transformers import LogitsProcessorList

    prompts = [formats.solve_prompt(p.question) for p in problems]
    limit = chain_budget(problems)  # as the verification run allows
    device = next(model.parameters()).device
    out: list[list[str]] = [[] for _ in problems]
    n_sampled = k - 1 if greedy_first else k
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i:i + batch_size], add_special_tokens=False, padding=True, return_tensors="pt").to(device)
        width = enc["input_ids"].shape[1]
        common = {"max_new_tokens": limit, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
                  "do_sample": False}
        if greedy_first:
            gen = model.generate(**enc, **common)
            for j, text in enumerate(tok.batch_decode(gen[:, width:], skip_special_tokens=True)):
                out[i + j].append(text)
        if n_sampled:
            # each prompt n_sampled times in a row: row r is problem r // n_sampled, sample r % n_sampled
            rows = {key: v.repeat_interleave(n_sampled, dim=0) for key, v in enc.items()}
            seeds = [sample_seed(seed, p.id, j) for p in problems[i:i + batch_size] for j in range(n_sampled)]
            sampler = LogitsProcessorList([_GumbelSampler(seeds, temperature)])
            gen = model.generate(**rows, logits_processor=sampler, **common)
            texts = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
            for j, text in enumerate(texts):
                out[i + j // n_sampled].append(text)
    return out


def label_chain(problem: Problem, text: str) -> dict[str, Any]:
    """A written chain as a record: its canonical text (everything after the answer line dropped) and
    its exact labels from the family's checker."""
    fam = get_family(problem.family)
    sc = split_chain(text)
    canonical = fam.format_chain(sc.steps, sc.answer)
    chk = fam.check(problem, canonical)
    return {
        "text": canonical, "steps": list(sc.steps), "answer": sc.answer,
        "unparsed": sum(not s.parsed for s in chk.steps), "valid": [s.valid for s in chk.steps],
        "answer_valid": chk.answer.valid, "first_error": chk.first_error,
        "answer_correct": chk.answer_correct, "correct": chk.first_error == -1 and chk.answer_correct,
    }


# ---- supervised fine-tuning on a fixed set of chains ------------------------------------------
class ChainBuilder(ExampleBuilder):
    """Training batches drawn from a fixed list of (question, chain text): batch ``step`` is a pure
    function of (seed, step), so a resumed run stays on its trajectory. The target is the chain in
    the solve format (``<bos>QUESTION\\n`` -> ``CHAIN<eos>``)."""

    def __init__(self, config: ZooConfig, tokenizer, chains: Sequence[tuple[str, str]]) -> None:
        super().__init__(config, tokenizer)
        self.examples = [ex for q, text in chains
                         if len((ex := self.completion(formats.solve_prompt(q), formats.solve_target(text),
                                                       "solve")).ids) <= config.size.max_len]
        if not self.examples:
            raise ProbeError(f"{config.name}: no training chain fits (none given, or all longer than max_len "
                             f"{config.size.max_len})")

    def batch(self, step: int, *, seed: int | None = None, size: int | None = None) -> list[Example]:
        seed = self.config.training.seed if seed is None else seed
        rng = random.Random(f"probe-chains:{seed}:{step}")
        return [self.examples[rng.randrange(len(self.examples))]
                for _ in range(size or self.config.training.batch_size)]


def chain_builder(chains: Sequence[tuple[str, str]]):
    """A ``builder(config, tokenizer)`` factory for ``ProbeRun.train`` over fixed chains."""
    chains = list(chains)
    return lambda config, tok: ChainBuilder(config, tok, chains)


# ---- figures from faithfulness records -------------------------------------------------------
def format_figures(records: Sequence[Mapping[str, Any]], member: str, problems: Mapping[str, Problem], *,
                   n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Rigid-format failures of ``member``'s own greedy chains (the ones the faithfulness suite wrote),
    read by the family's checker: the share of steps that do not parse (per step, problems resampled),
    of chains with at least one unparsable step or no answer line, and of chains correct by ``check``."""
    rows = []
    for r in records:
        if r.get("member") != member or r.get("kind", "model") != "model" or r["problem_id"] not in problems:
            continue
        ch = r["chain"]
        p = problems[r["problem_id"]]
        lab = label_chain(p, get_family(p.family).format_chain(list(ch.get("steps") or []), ch.get("answer")))
        n = len(lab["steps"])
        rows.append((lab["unparsed"], n, float(lab["unparsed"] > 0 or lab["answer"] is None),
                     float(lab["answer"] is None), float(lab["correct"]), sum(lab["valid"])))
    kw = {"n_boot": n_boot, "seed": seed}
    return {
        "unparsed_step_rate": figure([r[0] for r in rows], [r[1] for r in rows], **kw),
        "malformed_chain_rate": figure([r[2] for r in rows], **kw),
        "no_answer_rate": figure([r[3] for r in rows], **kw),
        "step_validity": figure([r[5] for r in rows], [r[1] for r in rows], **kw),
        "chain_correct": figure([r[4] for r in rows], **kw),
    }


def per_problem_format(records: Sequence[Mapping[str, Any]], member: str, problems: Mapping[str, Problem]
                       ) -> dict[str, dict[str, float | None]]:
    """problem id -> {malformed, chain_correct, unparsed_share} of ``member``'s greedy chain (for pairing)."""
    out = {}
    for r in records:
        if r.get("member") != member or r.get("kind", "model") != "model" or r["problem_id"] not in problems:
            continue
        ch = r["chain"]
        p = problems[r["problem_id"]]
        lab = label_chain(p, get_family(p.family).format_chain(list(ch.get("steps") or []), ch.get("answer")))
        n = len(lab["steps"])
        out[r["problem_id"]] = {"malformed": float(lab["unparsed"] > 0 or lab["answer"] is None),
                                "chain_correct": float(lab["correct"]),
                                "unparsed_share": lab["unparsed"] / n if n else None}
    return out


# ---- a bar plot of figures with intervals ----------------------------------------------------
def plot_bars(panels: Mapping[str, Mapping[str, Mapping[str, Any] | None]], path: Path, *,
              chance: Mapping[str, float] | None = None, differences: Sequence[str] = ()) -> Path:
    """One panel per key; in each, one bar per label with its 95% interval; ``chance[panel]`` as a dashed line.
    Panels named in ``differences`` hold paired differences (a zero line); the others rates in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.3 * rows), squeeze=False)
    for ax, (title, bars) in zip(axes.flat, panels.items()):
        labels = list(bars)
        vals = [(b or {}).get("value") for b in bars.values()]
        ys = [v if v is not None else 0.0 for v in vals]
        lo = [max(0.0, y - ((b or {}).get("ci_low") if (b or {}).get("ci_low") is not None else y))
              for y, b in zip(ys, bars.values())]
        hi = [max(0.0, ((b or {}).get("ci_high") if (b or {}).get("ci_high") is not None else y) - y)
              for y, b in zip(ys, bars.values())]
        ax.bar(range(len(labels)), ys, yerr=[lo, hi], capsize=4, color=[f"C{i}" for i in range(len(labels))])
        for i, v in enumerate(vals):
            if v is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
        if chance and title in chance:
            ax.axhline(chance[title], ls="--", c="gray", lw=1, label="chance")
            ax.legend(fontsize=8)
        if title in differences:
            ax.axhline(0, c="black", lw=0.8)
        else:
            ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["EXACT_FAMILIES", "ChainBuilder", "chain_builder", "eval_problems", "format_figures", "label_chain",
           "per_problem_format", "plot_bars", "problem_ref", "sample_chains", "sample_seed",
           "training_problems"]
