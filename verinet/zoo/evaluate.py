"""Held-out evaluation of a zoo model: solving accuracy, step validity, verifier quality."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from verinet.tasks import chain_budget
from verinet.tasks import get_family
from verinet.zoo import formats
from verinet.zoo.config import TaskMix
from verinet.zoo.inference import generate_greedy, score_tagged

EVAL_SEED = 9_000_000  # held-out problems come from seeds the training stream never uses


def held_out(family: str, params: dict[str, Any], n: int, seed: int = EVAL_SEED):
    return get_family(family).sample(n, seed=seed, params=params)


#: how :func:`token_chain_budget` sizes a chain's room, as records state it
BUDGET_RULE = "1.5 x the slice's longest gold chain + 16"


def token_chain_budget(tok, problems) -> int:
    """New tokens a greedy chain may take on these problems (:func:`verinet.tasks.chain_budget` in ``tok``'s
    tokens)."""
    return chain_budget(problems, length=lambda text: len(tok(text, add_special_tokens=False)["input_ids"]))


def solve_held_out(model, tok, family: str, params: dict[str, Any], n: int, *, seed: int = EVAL_SEED):
    """(problems, checks): greedy chains for ``n`` held-out problems of one slice, checked exactly."""
    fam = get_family(family)
    problems = held_out(family, params, n, seed)
    outs = generate_greedy(model, tok, [formats.solve_prompt(p.question) for p in problems],
                           max_new_tokens=token_chain_budget(tok, problems))
    return problems, [fam.check(p, o) for p, o in zip(problems, outs)]


def evaluate_slice(model, tok, family: str, params: dict[str, Any], n: int, *,
                   seed: int = EVAL_SEED) -> dict[str, Any]:
    """One family at one difficulty: solve n held-out problems and verify labelled chains."""
    fam = get_family(family)
    problems, checks = solve_held_out(model, tok, family, params, n, seed=seed)
    n_steps = sum(len(c.steps) for c in checks)
    # verifier: gold and every injectable error, verdict at each step and at the answer line
    rng = random.Random(seed)
    texts, labels = [], []
    for p in problems:
        chains = [fam.gold_chain(p)] + [fam.inject(p, k, seed=rng.randrange(1 << 30))
                                        for k in fam.injectable_kinds(p)]
        for ch in chains:
            c = fam.check(p, ch.text)
            texts.append(formats.verify_text(p.question, [s.text for s in ch.steps], ch.answer))
            labels.append([s.valid for s in c.steps] + [c.answer.valid])
    scores = score_tagged(model, tok, texts)
    y = np.array([v for vs in labels for v in vs], dtype=bool)
    s = np.array([x for xs in scores for x in xs])
    if len(s) != len(y):
        raise RuntimeError(f"verdict slots ({len(s)}) and labels ({len(y)}) differ; tokenizer mismatch?")
    auroc = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None
    return {
        "family": family,
        "params": params,
        "n": n,
        "accuracy": sum(c.answer_correct for c in checks) / n,
        "chain_valid": sum(c.first_error == -1 for c in checks) / n,
        "step_validity": (sum(c.n_valid for c in checks) / n_steps) if n_steps else 0.0,
        "verifier_accuracy": float(((s >= 0.5) == y).mean()),
        "verifier_auroc": auroc,
        "verifier_items": int(len(y)),
    }


def evaluate(model, tok, tasks: list[TaskMix], n: int, *, seed: int = EVAL_SEED) -> dict[str, Any]:
    """Every family and difficulty of ``tasks``; plus per-family and overall means."""
    slices = [evaluate_slice(model, tok, t.family, p, n, seed=seed) for t in tasks for p in t.params]
    by_family: dict[str, dict[str, float]] = {}
    for fam in dict.fromkeys(s["family"] for s in slices):
        rows = [s for s in slices if s["family"] == fam]
        by_family[fam] = {k: float(np.mean([r[k] for r in rows if r[k] is not None]))
                          for k in ("accuracy", "step_validity", "verifier_accuracy", "verifier_auroc")}
    overall = {k: float(np.mean([f[k] for f in by_family.values()])) for k in
               ("accuracy", "step_validity", "verifier_accuracy", "verifier_auroc")}
    return {"n_per_slice": n, "seed": seed, "overall": overall, "by_family": by_family, "slices": slices}
