"""The verification arms, scored against the exact checker; one module for ``verinet verify``
(:func:`score_arm`) and ``verinet compare`` (:func:`run_chunk`, one chunk of problems through
every arm, as per-problem records).

The ensemble arm: its members solve, peers cross-verify, the graph aggregates, propagates and
selects an answer. The baseline arm: the single model solves and (optionally) verifies its
own steps. Both arms also verify the shared labelled set (gold chains + the config's injected
error kinds). Three more arms reuse the ensemble's chains: self-consistency, reliability-weighted
(Dawid-Skene) voting, and best-of-K with the large model as verifier.
Ray-free: the callers are in-process backends or a Ray ensemble (verinet.orchestration).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from verinet.backends.formats import PromptFormat
from verinet.experiments.config import CompareConfig
from verinet.experiments.cost import usage_cost
from verinet.graph.aggregate import ReliabilityTable, dawid_skene, fit_cutoffs
from verinet.graph.build import collect_ratings
from verinet.graph.pipeline import gold_labels, verify_batch
from verinet.graph.select import select_answer
from verinet.orchestration.protocol import Caller
from verinet.orchestration.verify import VerifyRun, cross_verify, run_verification, solve
from verinet.processbench import choose_threshold, earliest_error_f1
from verinet.schema import Chain, Problem, VerificationReport
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




def _chain_row(problem: Problem, chain: Chain, predicted: int | None) -> dict[str, Any]:
    fam = get_family(problem.family)
    check = fam.check(problem, chain.text)
    correct = chain.answer is not None and fam.normalize_answer(chain.answer) == fam.normalize_answer(problem.answer)
    return {"chain_id": chain.id, "author": chain.author, "text": chain.text, "answer": chain.answer,
            "correct": bool(correct), "first_error": check.first_error, "predicted_error": predicted,
            "n_steps": len(check.steps), "n_valid": check.n_valid}


def _verdicts(report: VerificationReport) -> dict[str, dict[str, list[float]]]:
    """chain id -> verifier -> P(valid) per step (answer line last)."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for v in report.verdicts:
        out.setdefault(v.chain_id, {}).setdefault(v.verifier, {})[v.step_index] = round(v.p_valid, 6)
    return {c: {v: [s[i] for i in sorted(s)] for v, s in per.items()} for c, per in out.items()}


def _posteriors(report: VerificationReport) -> dict[str, list[list[float]]]:
    """chain id -> [P(valid), P(supported)] per step (answer line last)."""
    out: dict[str, dict[int, list[float]]] = {}
    for p in report.posteriors:
        out.setdefault(p.chain_id, {})[p.step_index] = [round(p.p_valid, 6), round(p.p_supported, 6)]
    return {c: [s[i] for i in sorted(s)] for c, s in out.items()}


def _correct(problem: Problem, answer: str | None) -> bool:
    fam = get_family(problem.family)
    return answer is not None and fam.normalize_answer(answer) == fam.normalize_answer(problem.answer)


def labelled_run(caller: Caller, formats: Mapping[str, PromptFormat], problems: Sequence[Problem], *,
                 kinds: Sequence[str] | None, aggregation: str, threshold: float, selection: str, seed: int,
                 reliabilities: ReliabilityTable | None = None):
    """Every member of ``caller`` verifies the shared labelled chains (gold + the ``kinds`` of injected
    errors; every kind the family supports when ``kinds`` is None).

    Returns (per-problem (id, chains, verdicts), batch result, usage member -> {"labelled": Usage},
    seconds member -> {"labelled": s})."""
    sets = labelled_set(problems, seed=seed, kinds=kinds)
    flat_problems = [p for p, cs in zip(problems, sets) for _ in cs]
    verdicts, res = cross_verify(caller, formats, flat_problems, {INJECTED: [c for cs in sets for c in cs]},
                                 {INJECTED: list(caller.members)})
    by_problem = []
    for p, cs in zip(problems, sets):
        ids = {c.id for c in cs}
        by_problem.append((p.id, cs, [v for v in verdicts if v.chain_id in ids]))
    batch = verify_batch(by_problem, aggregation=aggregation, threshold=threshold, selection=selection,
                         family=get_family(problems[0].family), include_graph=False,
                         reliabilities=reliabilities)
    usage = {m: {"labelled": u} for m, u in res.usage.items()}
    seconds = {m: {"labelled": s} for m, s in res.wall_s.items()}
    return by_problem, batch, usage, seconds


@dataclass
class Calibration:
    """What a labelled dev split teaches an arm: its earliest-error threshold, and its members'
    reliabilities (Dawid-Skene with every labelled item clamped to the exact checker's label, each
    member voting "valid" above its own fitted cutoff)."""

    threshold: float
    reliabilities: ReliabilityTable
    by_aggregation: dict[str, float] = field(default_factory=dict)  # thresholds of other aggregations asked for


def calibrate(caller: Caller, formats: Mapping[str, PromptFormat], dev: Sequence[Problem], *,
              aggregation: str = "mean", seed: int = 0, kinds: Sequence[str] | None = None,
              also: Sequence[str] = ()) -> Calibration:
    """Fit reliabilities and the F1-best earliest-error threshold (ProcessBench's recipe) on a labelled dev
    split. With ``dawid_skene``/``one_coin`` aggregation the threshold is chosen on the posteriors of the
    fitted table, as the arm will then use it. ``also``: other aggregations whose thresholds are chosen on
    the same verdicts (``by_aggregation``), for arms that pool them differently."""
    if not dev:
        raise ValueError("calibration needs labelled dev problems")
    by_problem, batch, _, _ = labelled_run(caller, formats, dev, kinds=kinds, aggregation="mean",
                                           threshold=0.5, selection="weighted", seed=seed)
    gold: dict = {}
    ratings: dict = {}
    for p, (_, cs, vs) in zip(dev, by_problem):
        gold.update(gold_labels(p, cs, p.family))
        ratings.update(collect_ratings(cs, vs).means())
    labelled = {k: ratings.get(k, {}) for k in gold}
    table = dawid_skene(labelled, gold=gold, one_coin=aggregation == "one_coin",
                        cutoffs=fit_cutoffs(labelled, gold)).table
    mean_batch = batch

    def best(agg: str) -> float:
        b = mean_batch if agg == "mean" else verify_batch(
            by_problem, aggregation=agg, threshold=0.5, selection="weighted", family=get_family(dev[0].family),
            include_graph=False, reliabilities=table)
        items = []
        for rep, (_, cs, _) in zip(b.reports, by_problem):
            post = {(p.chain_id, p.step_index): p.p_valid for p in rep.posteriors}
            for c in cs:
                if c.id in rep.unverified:  # no verifier answered for it: nothing to calibrate on
                    continue
                n = len(c.steps) + (c.answer is not None)
                items.append(([post.get((c.id, i), 0.5) for i in range(n)], c.first_error))
        return choose_threshold(items)

    return Calibration(best(aggregation), table, {agg: best(agg) for agg in also})


def calibrate_threshold(caller: Caller, formats: Mapping[str, PromptFormat], dev: Sequence[Problem], *,
                        aggregation: str = "mean", seed: int = 0, kinds: Sequence[str] | None = None) -> float:
    """The earliest-error threshold that maximises F1 on a labelled dev split."""
    return calibrate(caller, formats, dev, aggregation=aggregation, seed=seed, kinds=kinds).threshold


def score_arm(arm: str, caller: Caller, formats: Mapping[str, PromptFormat], problems: Sequence[Problem], *,
              topology: str, aggregation: str = "mean", threshold: float | None = None, selection: str = "weighted",
              dev: Sequence[Problem] = (), seed: int = 0) -> ArmResult:
    """Score one arm. With ``threshold=None`` it is calibrated on the labelled ``dev`` problems first, and
    the reliabilities learned there are used wherever the aggregation is Dawid-Skene or one-coin."""
    fam = get_family(problems[0].family)
    table = None
    if threshold is None:
        if not dev:
            raise ValueError("threshold=None needs dev problems to calibrate it on")
        cal = calibrate(caller, formats, dev, aggregation=aggregation, seed=seed + 1)
        threshold, table = cal.threshold, cal.reliabilities
    run = run_verification(caller, formats, problems, topology=topology, aggregation=aggregation,
                           threshold=threshold, selection=selection, seed=seed, include_graph=False,
                           reliabilities=table)
    preds, labels, valid, steps = [], [], 0, 0
    correct = 0
    for i, (p, rep) in enumerate(zip(problems, run.batch.reports)):
        correct += rep.final_answer is not None and fam.normalize_answer(rep.final_answer) == \
            fam.normalize_answer(p.answer)
        for author in run.chains:
            c = run.chains[author][i]
            check = fam.check(p, c.text)
            if c.id in rep.earliest_error:  # an unverified chain predicts nothing
                labels.append(check.first_error)
                preds.append(rep.earliest_error[c.id])
            valid += check.n_valid
            steps += len(check.steps)
    by_problem, injected, usage, _ = labelled_run(caller, formats, problems, kinds=None, aggregation=aggregation,
                                                  threshold=threshold, selection=selection, seed=seed,
                                                  reliabilities=table)
    judged = [(r.earliest_error[c.id], c.first_error) for r, (_, cs, _) in zip(injected.reports, by_problem)
              for c in cs if c.id in r.earliest_error]
    inj_preds, inj_labels = [p for p, _ in judged], [y for _, y in judged]
    tokens = sum(u.total for phases in run.usage.values() for u in phases.values())
    tokens += sum(u.total for phases in usage.values() for u in phases.values())
    return ArmResult(arm, list(caller.members), correct / len(problems), earliest_error_f1(preds, labels),
                     earliest_error_f1(inj_preds, inj_labels), valid / steps if steps else 0.0, tokens, threshold)


def _merge(*parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """member -> phase -> x, merged over parts (phases of one member never collide)."""
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        for m, phases in part.items():
            out.setdefault(m, {}).update(phases)
    return out


def _only(d: Mapping[str, Mapping[str, Any]], phases: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {m: {ph: v for ph, v in per.items() if ph in phases} for m, per in d.items()}


def _answers(problems: Sequence[Problem], reports: Sequence[VerificationReport] | None,
             answers: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
    out = []
    for i, p in enumerate(problems):
        a = reports[i].final_answer if reports is not None else answers[i]
        row = {"final_answer": a, "correct": _correct(p, a)}
        if reports is not None:
            row["predicted"] = dict(reports[i].earliest_error)
        out.append(row)
    return out


def run_chunk(config: CompareConfig, caller: Caller, ens: Caller, base: Caller, formats: Mapping[str, PromptFormat],
              problems: Sequence[Problem], *, thresholds: Mapping[str, float], parameters: Mapping[str, float],
              member_shares: Mapping[str, tuple[float, float]], chunk_id: str,
              reliabilities: ReliabilityTable | None = None) -> list[dict[str, Any]]:
    """Records for ``problems`` (one task slice): every arm, the labelled set, the chunk's cost per arm.

    Arms: ``ensemble`` (cross-verification as configured), ``baseline`` (the large model solving and
    verifying itself), ``self_consistency`` (majority vote over the ensemble's K chains, no verifier),
    ``reliability_weighted`` (the same chains and verdicts, Dawid-Skene posteriors and weighted
    selection) and ``best_of_k`` (the ensemble's K chains, the large model as verifier, the best
    chain's answer). Derived arms reuse the ensemble's chains, so their cost is the phases they use.
    ``reliabilities`` (learned on the labelled dev split) replace a fit over the chunk wherever the
    aggregation is Dawid-Skene or one-coin.
    """
    e, b, s = config.ensemble, config.baseline, config.sampling
    seed = config.seed
    kinds = list(config.inject)
    fam = get_family(problems[0].family)
    cost = lambda usage, secs, wall: usage_cost(usage, parameters, wall_s=wall, member_s=secs,  # noqa: E731
                                                member_shares=member_shares).as_dict()
    ens_run = run_verification(ens, formats, problems, topology=e.topology, k=e.k, aggregation=e.aggregation,
                               threshold=thresholds["ensemble"], selection=e.selection,
                               max_tokens=s.max_tokens, temperature=s.temperature, seed=seed, include_graph=True,
                               reliabilities=reliabilities)
    t0 = time.perf_counter()
    ens_lab, ens_lab_batch, ens_lab_usage, ens_lab_s = labelled_run(
        ens, formats, problems, kinds=kinds, aggregation=e.aggregation, threshold=thresholds["ensemble"],
        selection=e.selection, seed=seed, reliabilities=reliabilities)
    ens_lab_wall = time.perf_counter() - t0
    ens_usage = _merge(ens_run.usage, ens_lab_usage)
    ens_s = _merge(ens_run.member_s, ens_lab_s)
    answer_wall = ens_run.wall_s.get("solve", 0.0) + ens_run.wall_s.get("verify", 0.0) + \
        ens_run.wall_s.get("aggregate", 0.0)

    authors = list(ens_run.chains)
    batch_in = [(p.id, [ens_run.chains[a][i] for a in authors],
                 [v for v in ens_run.batch.reports[i].verdicts]) for i, p in enumerate(problems)]
    # self-consistency: majority vote over the K chains, no verifier
    sc = [select_answer([ens_run.chains[a][i] for a in authors], rule="majority", family=fam).answer
          for i in range(len(problems))]
    # reliability-weighted voting: Dawid-Skene weights over the same verdicts
    rw_threshold = thresholds.get("reliability_weighted", thresholds["ensemble"])  # runs begun before it was fitted
    rw = verify_batch(batch_in, aggregation="dawid_skene", threshold=rw_threshold, selection="weighted",
                      family=fam, include_graph=False, reliabilities=reliabilities)
    # best-of-K: the large model verifies the K chains; the best-scored chain's answer
    name = b.member.name
    t0 = time.perf_counter()
    bv, bres = cross_verify(base, formats, problems, ens_run.chains, {a: [name] for a in authors})
    bok_wall = time.perf_counter() - t0
    by_chain: dict[str, list] = {}
    for v in bv:
        by_chain.setdefault(v.chain_id, []).append(v)
    bok = verify_batch([(pid, cs, [v for c in cs for v in by_chain.get(c.id, [])]) for pid, cs, _ in batch_in],
                       aggregation="mean", threshold=thresholds["baseline"], selection="best", family=fam,
                       include_graph=False)
    bok_usage = {name: {"verify": u} for m, u in bres.usage.items() if m == name}
    bok_s = {name: {"verify": sec} for m, sec in bres.wall_s.items() if m == name}

    t0 = time.perf_counter()
    base_run: VerifyRun | None = None
    base_lab_batch = None
    if b.self_verify:
        base_run = run_verification(base, formats, problems, topology="self", aggregation="mean",
                                    threshold=thresholds["baseline"], selection="weighted",
                                    max_tokens=s.max_tokens, temperature=s.temperature, seed=seed,
                                    include_graph=False)
        base_chains = base_run.chains[name]
        base_usage, base_s = dict(base_run.usage), dict(base_run.member_s)
        _, base_lab_batch, lab_usage, lab_s = labelled_run(
            base, formats, problems, kinds=kinds, aggregation="mean", threshold=thresholds["baseline"],
            selection="weighted", seed=seed)
        base_usage, base_s = _merge(base_usage, lab_usage), _merge(base_s, lab_s)
    else:
        chains, res = solve(base, formats, problems, max_tokens=s.max_tokens, temperature=s.temperature, seed=seed)
        base_chains = chains[name]
        base_usage = {m: {"solve": u} for m, u in res.usage.items()}
        base_s = {m: {"solve": sec} for m, sec in res.wall_s.items()}
    base_wall = time.perf_counter() - t0

    n = len(problems)
    answering = ("solve", "verify")
    costs = {
        "ensemble": cost(ens_usage, ens_s, answer_wall + ens_lab_wall),
        "baseline": cost(base_usage, base_s, base_wall),
        "self_consistency": cost(_only(ens_run.usage, ["solve"]), _only(ens_run.member_s, ["solve"]),
                                 ens_run.wall_s.get("solve", 0.0)),
        "reliability_weighted": cost(_only(ens_run.usage, answering), _only(ens_run.member_s, answering),
                                     answer_wall),
        "best_of_k": cost(_merge(_only(ens_run.usage, ["solve"]), bok_usage),
                          _merge(_only(ens_run.member_s, ["solve"]), bok_s),
                          ens_run.wall_s.get("solve", 0.0) + bok_wall),
    }
    chunk = {
        "id": chunk_id, "size": n, "cost": costs,
        "usage": {arm: {m: {ph: [u.prefill, u.decode] for ph, u in phases.items()} for m, phases in use.items()}
                  for arm, use in (("ensemble", ens_usage), ("baseline", base_usage))},
        "missing": {"ensemble": ens_run.missing, "baseline": base_run.missing if base_run else {}},
    }
    derived = {"self_consistency": _answers(problems, None, sc),
               "reliability_weighted": _answers(problems, rw.reports),
               "best_of_k": _answers(problems, bok.reports)}

    records = []
    for i, p in enumerate(problems):
        rep = ens_run.batch.reports[i]
        ens_chains = [ens_run.chains[a][i] for a in authors]
        bc = base_chains[i]
        b_pred = base_run.batch.reports[i].earliest_error.get(bc.id) if base_run else None
        labelled = []
        for c in ens_lab[i][1]:
            labelled.append({"chain_id": c.id, "kind": c.error_kind, "label": c.first_error,
                             "n_items": len(c.steps) + (c.answer is not None),
                             "ensemble": ens_lab_batch.reports[i].earliest_error.get(c.id),
                             "baseline": base_lab_batch.reports[i].earliest_error.get(c.id)
                             if base_lab_batch else None})
        records.append({
            "problem_id": p.id, "family": p.family, "question": p.question, "answer": p.answer,
            "ensemble": {
                "final_answer": rep.final_answer, "correct": _correct(p, rep.final_answer),
                "accepted": rep.accepted,
                "chains": [_chain_row(p, c, rep.earliest_error.get(c.id)) for c in ens_chains],
                "verdicts": _verdicts(rep), "agreement": rep.agreement,
                "posteriors": _posteriors(rep),
            },
            "baseline": {
                "final_answer": bc.answer, "correct": _correct(p, bc.answer),
                "chains": [_chain_row(p, bc, b_pred)],
                "verdicts": _verdicts(base_run.batch.reports[i]) if base_run else {},
            },
            "arms": {arm: rows[i] for arm, rows in derived.items()},
            "labelled": labelled,
            "graph": rep.graph if i == 0 else None,
            "chunk": chunk if i == 0 else {"id": chunk_id},
        })
    return records


__all__ = ["INJECTED", "ArmResult", "Calibration", "calibrate", "calibrate_threshold", "labelled_run", "labelled_set", "run_chunk",
           "score_arm"]
