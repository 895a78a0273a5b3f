"""Verifier quality of a zoo checkpoint, by verifier kind and error kind.

Two verifier kinds read the same weights, and a third, when the checkpoint has one, a model
fine-tuned from them:

* ``likelihood`` — the model as a solver, teacher-forced over question and chain in one
  pass (the solve format); a step scores the probability of its least likely token;
* ``verdict`` — the trained verdict: P(``<+>``) against P(``<->``) at the ``<v>`` after each
  step, in one tagged pass;
* ``prm`` — when the checkpoint has one (``NAME/prm``, verinet.zoo.token_prm): a token-level
  process reward model fine-tuned from it, read at every token of the solve layout; a step
  scores its least valid token.

Two measures (docs/metrics.md, "Verifier quality"):

* on injected errors: per error kind, AUROC of P(valid) at the first wrong line of each
  injected chain against every line of the gold chains (chance 0.5);
* on real errors: chains that models wrote themselves, labelled by the exact checker and
  balanced between correct and erroneous chains; the verifier's earliest error (the first line
  scored below a threshold chosen on a dev half, by problem) against the label on the other
  half, as ProcessBench's acc_err, acc_corr and F1.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from verinet.processbench import choose_threshold, earliest_error_f1, first_below
from verinet.schema import ERROR_KINDS
from verinet.tasks import InjectionUnsupported, get_family
from verinet.zoo import formats
from verinet.zoo.evaluate import BUDGET_RULE, token_chain_budget
from verinet.zoo.inference import generate_greedy, pool_min, score_tagged, token_logprobs

METHODS: tuple[str, ...] = ("likelihood", "verdict")
#: the held-out slice per family on which verifier quality is reported
VERIFIER_SLICES: dict[str, dict[str, Any]] = {
    "arith": {"steps": 3, "distractors": 0},
    "logic": {"hops": 3, "distractors": 1},
}
#: the slices whose model-written chains form the real-error set: ones where the ladder's sizes write both
#: correct and erroneous chains (its xs solve 1-4 plain arith steps without error, so arith starts at 4 and
#: goes on to the graded slices, 6 steps and 4 steps among 2 distractors, where only the larger sizes succeed)
OWN_ERROR_SLICES: dict[str, list[dict[str, Any]]] = {
    "arith": [{"steps": 4, "distractors": 0}, {"steps": 6, "distractors": 0}, {"steps": 4, "distractors": 2}],
    "logic": [{"hops": h, "distractors": 1} for h in (1, 2, 3)],
}
OWN_ERROR_SEED = 100_000  # offset of the real-error problems from the held-out seed
Item = tuple[str, list[str], "str | None"]  # (question, steps, answer)


def step_scores(model, tok, method: str, items: list[Item], *, batch_size: int = 32) -> list[list[float]]:
    """P(valid) of every step (and the answer line, when present) of each item."""
    if method == "likelihood":
        layouts = [formats.likelihood_text(q, steps, a) for q, steps, a in items]
        toks = token_logprobs(model, tok, [t for t, _ in layouts], batch_size=batch_size)
        return [pool_min(t, tk, spans) for (t, spans), tk in zip(layouts, toks, strict=True)]
    if method == "verdict":
        return score_tagged(model, tok, [formats.verify_text(q, steps, a) for q, steps, a in items],
                            batch_size=batch_size)
    if method == "prm":  # a token-level PRM (verinet.zoo.token_prm): model is its token classifier
        from verinet.zoo import token_prm

        return token_prm.score_steps(model, tok, [formats.likelihood_text(q, steps, a) for q, steps, a in items],
                                     batch_size=batch_size)
    raise ValueError(f"unknown verifier method {method!r}; choose one of {list(METHODS)}")


def _auroc(pos: list[float], neg: list[float]) -> float | None:
    if not pos or not neg:
        return None
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), list(pos) + list(neg)))


AUROC_BOOT = 1000  # bootstrap resamples of the problems behind each AUROC's interval


def auroc_interval(gold: list[list[float]], at_error: list[tuple[int, float]], *, n_boot: int = AUROC_BOOT,
                   seed: int = 0) -> list[float] | None:
    """95% percentile interval of the AUROC of gold lines (``gold[i]``: problem i's) against the scores
    at the error (``(problem index, score)``), resampling problems: a problem's lines are not independent."""
    from verinet.experiments.stats import _interval, resamples

    if not at_error or not any(gold):
        return None
    g = np.array([x for row in gold for x in row])
    e = np.array([x for _, x in at_error])
    wins = (g[:, None] > e[None, :]) + 0.5 * (g[:, None] == e[None, :])  # Mann-Whitney: gold line above the error
    w = resamples(len(gold), n_boot, seed)
    wg = w[:, [i for i, row in enumerate(gold) for _ in row]]
    we = w[:, [i for i, _ in at_error]]
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = ((wg @ wins) * we).sum(axis=1) / (wg.sum(axis=1) * we.sum(axis=1))
    lo, hi = _interval(vals)
    return None if lo is None else [round(lo, 4), round(hi, 4)]


def injected_auroc(model, tok, family: str, params: dict[str, Any], n: int, *, seed: int,
                   methods: tuple[str, ...] = METHODS, prm: tuple[Any, Any] | None = None) -> dict[str, dict[str, Any]]:
    """{method: {kind: AUROC, ..., "p_gold": mean P(valid) of gold lines, "p_error": {kind: mean at the error},
    "ci": {kind: its 95% interval, resampling problems}}}."""
    fam = get_family(family)
    problems = fam.sample(n, seed=seed, params=params)
    gold_items = [(p.question, [s.text for s in p.gold_steps], p.answer) for p in problems]
    injected: dict[str, list[tuple[Item, int, int]]] = {}  # (item, first error, problem index)
    for i, p in enumerate(problems):
        for kind in fam.error_kinds:
            try:
                ch = fam.inject(p, kind, seed=seed + i)
            except InjectionUnsupported:
                continue
            injected.setdefault(kind, []).append(((p.question, [s.text for s in ch.steps], ch.answer),
                                                  ch.first_error, i))
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        mm, mt = prm if m == "prm" and prm is not None else (model, tok)
        gold_rows = step_scores(mm, mt, m, gold_items)
        gold = [x for row in gold_rows for x in row]
        res: dict[str, Any] = {"p_gold": float(np.mean(gold)), "p_error": {}, "ci": {}, "n_gold_lines": len(gold)}
        for kind in ERROR_KINDS:
            pairs = injected.get(kind, [])
            if not pairs:
                res[kind] = None
                continue
            scores = step_scores(mm, mt, m, [it for it, _, _ in pairs])
            at_error = [row[fe] for row, (_, fe, _) in zip(scores, pairs, strict=True)]
            res[kind] = _auroc(gold, at_error)
            res["p_error"][kind] = float(np.mean(at_error))
            res["ci"][kind] = auroc_interval(gold_rows, [(i, x) for (_, _, i), x in zip(pairs, at_error)],
                                             seed=seed)
        out[m] = res
    return out


# ---- real errors: chains the models wrote ----------------------------------------------------
def written_chains(writers: list[tuple[str, Any, Any]], family: str, slices: list[dict[str, Any]], n: int, *,
                   seed: int, seed_stride: int = 1, max_new_tokens: int | None = None):
    """Yield ``(writer, params, problem, check)`` for the chain each ``(name, model, tok)`` writer wrote
    greedily on ``n`` problems of each slice (slice ``j`` samples with ``seed + seed_stride * j``), with room
    for ``max_new_tokens`` new tokens (default: :func:`~verinet.zoo.evaluate.token_chain_budget` of the slice, as
    held-out solving allows, so no chain is labelled wrong only because it was cut short)."""
    fam = get_family(family)
    for j, params in enumerate(slices):
        problems = fam.sample(n, seed=seed + seed_stride * j, params=params)
        prompts = [formats.solve_prompt(p.question) for p in problems]
        for name, model, tok in writers:
            budget = token_chain_budget(tok, problems) if max_new_tokens is None else max_new_tokens
            outs = generate_greedy(model, tok, prompts, max_new_tokens=budget)
            for p, text in zip(problems, outs, strict=True):
                yield name, params, p, fam.check(p, text)


def written_answer(check) -> str:
    """The answer a checked chain gave ('' when its answer line is missing)."""
    return check.answer.text[len("####"):].strip() if check.answer.text else ""


def own_error_set(writers: list[tuple[str, Any, Any]], family: str, n: int, *, seed: int,
                  slices: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Chains written greedily by each ``(name, model, tok)`` writer on held-out problems of the
    family's :data:`OWN_ERROR_SLICES` (or ``slices``), labelled by the exact checker (``label`` = first
    wrong line, or -1), balanced between correct and erroneous chains by dropping a random surplus."""
    records: list[dict[str, Any]] = []
    slices = OWN_ERROR_SLICES[family] if slices is None else slices
    for name, params, p, sc in written_chains(writers, family, slices, n, seed=seed):
        if not sc.steps and sc.answer.text == "":
            continue  # nothing readable was written
        wrong = None if sc.first_error == -1 else \
            (sc.steps[sc.first_error] if sc.first_error < len(sc.steps) else sc.answer)
        records.append({"problem_id": p.id, "question": p.question, "steps": [s.text for s in sc.steps],
                        "answer": written_answer(sc), "label": sc.first_error, "writer": name, "params": params,
                        "reason": None if wrong is None else wrong.reason})
    rng = random.Random(f"own-errors:{family}:{seed}")
    correct = [r for r in records if r["label"] == -1]
    wrong = [r for r in records if r["label"] != -1]
    k = min(len(correct), len(wrong))
    return sorted(rng.sample(correct, k) + rng.sample(wrong, k), key=lambda r: (r["problem_id"], r["writer"]))


def own_error_f1(model, tok, method: str, chains: list[dict[str, Any]], *,
                 per_chain: bool = False) -> dict[str, Any]:
    """Earliest-error F1 of ``method`` on model-written chains: threshold fitted on the problems of
    even rank, reported on the others (so no chain is scored with a threshold chosen on it), with a
    95% bootstrap interval resampling those problems and the F1 of a uniform guesser (``chance``).
    ``per_chain`` adds ``predicted``: {index in ``chains``: first line below the threshold (-1: none)}
    for the reported half."""
    from verinet.experiments.stats import ee_f1

    if not chains:
        return {"f1": None, "acc_err": None, "acc_corr": None, "n_err": 0, "n_corr": 0, "threshold": None,
                "ci_low": None, "ci_high": None, "chance": None,
                "note": "no labelled chains (the writers wrote no correct or no erroneous chain, or nothing readable)"}
    scores = step_scores(model, tok, method, [(c["question"], c["steps"], c["answer"]) for c in chains])
    pids = sorted({c["problem_id"] for c in chains})
    dev_ids = set(pids[::2])
    dev = [(scores[i], c["label"]) for i, c in enumerate(chains) if c["problem_id"] in dev_ids]
    test = [(scores[i], c["label"]) for i, c in enumerate(chains) if c["problem_id"] not in dev_ids]
    try:
        t = choose_threshold(dev)
    except ValueError as e:  # the dev half lacks correct or erroneous chains
        return {"f1": None, "acc_err": None, "acc_corr": None, "n_err": 0, "n_corr": 0, "threshold": None,
                "ci_low": None, "ci_high": None, "chance": None,
                "note": str(e)}
    res = earliest_error_f1([first_below(s, t) for s, _ in test], [y for _, y in test])
    predicted = {i: first_below(scores[i], t) for i, c in enumerate(chains) if c["problem_id"] not in dev_ids}
    by_problem: dict[str, list[tuple[int, int, int]]] = {}  # the interval resamples problems, not chains
    for i, first in predicted.items():
        by_problem.setdefault(chains[i]["problem_id"], []).append((first, chains[i]["label"], len(scores[i])))
    boot = ee_f1(list(by_problem.values()), n_boot=AUROC_BOOT)
    out = {**{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in res.items()},
           "threshold": t, "n_chains": len(test), "ci_low": boot["ci_low"], "ci_high": boot["ci_high"],
           "chance": boot["chance"]}
    if per_chain:
        out["predicted"] = predicted
    return out


def evaluate_verifiers(model, tok, n: int, *, seed: int, writers: list[tuple[str, Any, Any]] | None = None,
                       own_errors: dict[str, list[dict[str, Any]]] | None = None,
                       families: tuple[str, ...] = tuple(VERIFIER_SLICES),
                       prm: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Verifier quality of one model: AUROC by method, family and error kind on injected errors,
    the best method per family and kind, and earliest-error F1 on chains ``writers`` wrote (or on a
    given ``own_errors`` set per family). ``prm=(model, tok)``, the checkpoint's token-level PRM,
    adds the method ``prm``."""
    methods = METHODS + (("prm",) if prm is not None else ())
    detail = {fam: injected_auroc(model, tok, fam, VERIFIER_SLICES[fam], n, seed=seed, methods=methods, prm=prm)
              for fam in families}
    by_method = {m: {fam: {k: detail[fam][m][k] for k in ERROR_KINDS} for fam in families} for m in methods}
    by_kind = {fam: {k: max((by_method[m][fam][k] for m in methods if by_method[m][fam][k] is not None),
                            default=None) for k in ERROR_KINDS} for fam in families}
    out: dict[str, Any] = {
        "verifier_slices": {fam: VERIFIER_SLICES[fam] for fam in families},
        "verifier_auroc_by_method": by_method,
        "verifier_auroc_by_kind": by_kind,
        "verifier_auroc_ci_by_method": {m: {fam: {k: detail[fam][m]["ci"].get(k) for k in ERROR_KINDS}
                                            for fam in families} for m in methods},
        "verifier_detail": detail,
    }
    if own_errors is None and writers:
        own_errors = {fam: own_error_set(writers, fam, n, seed=seed + OWN_ERROR_SEED) for fam in families}
    if own_errors is not None:
        own = {fam: {m: own_error_f1(*(prm if m == "prm" else (model, tok)), m, own_errors[fam]) for m in methods}
               for fam in families}
        out["own_error_f1"] = {fam: {m: own[fam][m]["f1"] for m in methods} for fam in families}
        out["own_error_detail"] = {
            "writers": sorted({c["writer"] for fam in families for c in own_errors[fam]}),
            "slices": {fam: OWN_ERROR_SLICES[fam] for fam in families},
            "max_new_tokens": BUDGET_RULE,
            "chains": {fam: len(own_errors[fam]) for fam in families},
            "by_family": own,
        }
    return out


def fit_threshold(members: list[tuple[Any, Any]], n: int, *, seed: int, method: str = "likelihood"
                  ) -> dict[str, Any]:
    """The earliest-error threshold for the mean of ``members``' scores (the endpoint's ``mean``
    aggregation), fitted on labelled chains of both families: per family ``n`` held-out problems of
    :data:`VERIFIER_SLICES`, every other one gold and the rest with one injected error of a random
    kind. Half of the problems fit the threshold, the other half report earliest-error F1."""
    dev, test = [], []
    for fam_name, params in VERIFIER_SLICES.items():
        fam = get_family(fam_name)
        rng = random.Random(f"threshold:{fam_name}:{seed}")
        items, labels = [], []
        for i, p in enumerate(fam.sample(n, seed=seed, params=params)):
            ch = fam.gold_chain(p) if i % 2 else fam.inject(p, rng.choice(fam.injectable_kinds(p)), seed=i)
            items.append((p.question, [s.text for s in ch.steps], ch.answer))
            labels.append(-1 if i % 2 else ch.first_error)
        per_member = [step_scores(m, t, method, items) for m, t in members]
        for i, y in enumerate(labels):
            mean = np.mean([rows[i] for rows in per_member], axis=0).tolist()
            (dev if i % 4 < 2 else test).append((mean, y))
    t = choose_threshold(dev)

    def f1_at(items: list, threshold: float) -> dict[str, Any]:
        return earliest_error_f1([first_below(s, threshold) for s, _ in items], [y for _, y in items])

    return {"threshold": t, "dev": f1_at(dev, t), "test": f1_at(test, t), "test_at_0.5": f1_at(test, 0.5)}
