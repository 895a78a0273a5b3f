"""Score verification arms against the exact checker: the ensemble cross-verifying, each
model alone (self mode), on the models' own (natural) errors and on a shared labelled set
of injected errors. Ray-free: it drives any caller (see orchestrate.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verinet.backends.formats import PromptFormat
from verinet.graph.orchestrate import Caller, cross_verify, run_verification
from verinet.graph.pipeline import verify_batch
from verinet.graph.propagate import choose_threshold, earliest_error_f1
from verinet.schema import Chain, Problem
from verinet.tasks import InjectionUnsupported, get_family

INJECTED = "injected"  # pseudo-author of the shared labelled chains


@dataclass
class ArmResult:
    arm: str
    members: list[str]
    accuracy: float  # final answers (the ensemble's selected answer, or the model's own)
    natural: dict[str, float]  # earliest-error F1 on the arm's own chains, labels from the checker
    injected: dict[str, float]  # earliest-error F1 on the shared gold + injected chains
    step_validity: float  # share of the arm's own steps that the checker finds valid
    tokens: int
    threshold: float  # earliest-error threshold on P(valid) used

    def row(self) -> dict[str, Any]:
        return {"arm": self.arm, "members": self.members, "accuracy": self.accuracy,
                "ee_f1_natural": self.natural["f1"], "ee_f1_injected": self.injected["f1"],
                "step_validity": self.step_validity, "tokens": self.tokens, "threshold": self.threshold}


def labelled_set(problems: Sequence[Problem], seed: int = 0, kinds: Sequence[str] | None = None
                 ) -> list[list[Chain]]:
    """Per problem: the gold chain and one injected chain per error kind the family supports
    (only the ``kinds`` listed, when given)."""
    out = []
    for p in problems:
        fam = get_family(p.family)
        chains = [fam.gold_chain(p).model_copy(update={"id": f"{p.id}/{INJECTED}-gold", "author": INJECTED})]
        for kind in fam.error_kinds:
            if kinds is not None and kind not in kinds:
                continue
            try:
                c = fam.inject(p, kind, seed=seed)
            except InjectionUnsupported:
                continue
            chains.append(c.model_copy(update={"author": INJECTED}))
        out.append(chains)
    return out


def verify_labelled(caller: Caller, formats: Mapping[str, PromptFormat], problems: Sequence[Problem], *,
                    aggregation: str, threshold: float, selection: str, seed: int,
                    kinds: Sequence[str] | None = None):
    """Every member of ``caller`` verifies the shared labelled chains of ``problems`` (injected
    error ``kinds`` only, when given).

    Returns (per-problem (id, chains, verdicts), the batch result, usage per member)."""
    sets = labelled_set(problems, seed=seed, kinds=kinds)
    chains = {INJECTED: [c for cs in sets for c in cs]}
    flat_problems = [p for p, cs in zip(problems, sets) for _ in cs]
    verdicts, res = cross_verify(caller, formats, flat_problems, chains, {INJECTED: list(caller.members)})
    by_problem = []
    for p, cs in zip(problems, sets):
        ids = {c.id for c in cs}
        by_problem.append((p.id, cs, [v for v in verdicts if v.chain_id in ids]))
    batch = verify_batch(by_problem, aggregation=aggregation, threshold=threshold, selection=selection,
                         family=get_family(problems[0].family), include_graph=False)
    return by_problem, batch, res.usage


def calibrate_threshold(caller: Caller, formats: Mapping[str, PromptFormat], dev: Sequence[Problem], *,
                        aggregation: str = "mean", seed: int = 0, kinds: Sequence[str] | None = None) -> float:
    """The earliest-error threshold that maximises F1 on a labelled dev split (ProcessBench's recipe)."""
    by_problem, batch, _ = verify_labelled(caller, formats, dev, aggregation=aggregation, threshold=0.5,
                                           selection="weighted", seed=seed, kinds=kinds)
    items = []
    for rep, (_, cs, _) in zip(batch.reports, by_problem):
        post = {(p.chain_id, p.step_index): p.p_valid for p in rep.posteriors}
        for c in cs:
            n = len(c.steps) + (c.answer is not None)
            items.append(([post.get((c.id, i), 0.5) for i in range(n)], c.first_error))
    return choose_threshold(items)


def score_arm(arm: str, caller: Caller, formats: Mapping[str, PromptFormat], problems: Sequence[Problem], *,
              topology: str, aggregation: str = "mean", threshold: float | None = None, selection: str = "weighted",
              dev: Sequence[Problem] = (), seed: int = 0) -> ArmResult:
    """Score one arm. With ``threshold=None`` it is calibrated on the labelled ``dev`` problems first."""
    fam = get_family(problems[0].family)
    if threshold is None:
        if not dev:
            raise ValueError("threshold=None needs dev problems to calibrate it on")
        threshold = calibrate_threshold(caller, formats, dev, aggregation=aggregation, seed=seed + 1)
    run = run_verification(caller, formats, problems, topology=topology, aggregation=aggregation,
                           threshold=threshold, selection=selection, seed=seed, include_graph=False)
    preds, labels, valid, steps = [], [], 0, 0
    correct = 0
    for i, (p, rep) in enumerate(zip(problems, run.batch.reports)):
        correct += rep.final_answer is not None and fam.normalize_answer(rep.final_answer) == \
            fam.normalize_answer(p.answer)
        for author in run.chains:
            c = run.chains[author][i]
            check = fam.check(p, c.text)
            labels.append(check.first_error)
            preds.append(rep.earliest_error[c.id])
            valid += check.n_valid
            steps += len(check.steps)
    by_problem, injected, usage = verify_labelled(caller, formats, problems, aggregation=aggregation,
                                                  threshold=threshold, selection=selection, seed=seed)
    inj_preds = [r.earliest_error[c.id] for r, (_, cs, _) in zip(injected.reports, by_problem) for c in cs]
    inj_labels = [c.first_error for _, cs, _ in by_problem for c in cs]
    tokens = sum(u.total for phases in run.usage.values() for u in phases.values())
    tokens += sum(u.total for u in usage.values())
    return ArmResult(arm, list(caller.members), correct / len(problems), earliest_error_f1(preds, labels),
                     earliest_error_f1(inj_preds, inj_labels), valid / steps if steps else 0.0, tokens, threshold)


__all__ = ["ArmResult", "calibrate_threshold", "labelled_set", "score_arm", "verify_labelled"]
