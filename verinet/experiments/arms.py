"""One chunk of problems through both arms, as per-problem records (JSON-able dicts).

The ensemble arm: its members solve, peers cross-verify, the graph aggregates, propagates and
selects an answer. The baseline arm: the single model solves and (optionally) verifies its
own steps. Both arms also verify the shared labelled set (gold chains + injected errors).
Ray-free: the callers are in-process backends or a Ray ensemble (verinet.experiments.callers).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from verinet.backends.formats import PromptFormat
from verinet.experiments.config import CompareConfig
from verinet.experiments.cost import usage_cost
from verinet.graph.arms import verify_labelled
from verinet.graph.orchestrate import Caller, VerifyRun, run_verification, solve
from verinet.schema import Chain, Problem, VerificationReport
from verinet.tasks import get_family


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


def _member_s(run: VerifyRun) -> dict[str, float]:
    """Seconds each member spent answering (solve and verify), summed over phases."""
    return {m: sum(ph.values()) for m, ph in run.member_s.items()}


def run_chunk(config: CompareConfig, caller: Caller, ens: Caller, base: Caller, formats: Mapping[str, PromptFormat],
              problems: Sequence[Problem], *, thresholds: Mapping[str, float], parameters: Mapping[str, float],
              chunk_id: str) -> list[dict[str, Any]]:
    """Records for ``problems`` (one task slice): both arms, the labelled set, the chunk's cost."""
    e, b, s = config.ensemble, config.baseline, config.sampling
    seed = config.seed
    t0 = time.perf_counter()
    ens_run = run_verification(ens, formats, problems, topology=e.topology, k=e.k, aggregation=e.aggregation,
                               threshold=thresholds["ensemble"], selection=e.selection,
                               max_tokens=s.max_tokens, temperature=s.temperature, seed=seed, include_graph=True)
    ens_lab, ens_lab_batch, ens_lab_usage = verify_labelled(ens, formats, problems, aggregation=e.aggregation,
                                                            threshold=thresholds["ensemble"],
                                                            selection=e.selection, seed=seed)
    ens_wall = time.perf_counter() - t0

    t0 = time.perf_counter()
    name = b.member.name
    base_run: VerifyRun | None = None
    base_lab_batch = None
    base_solve_s: dict[str, float] = {}
    base_usage: dict[str, dict[str, Any]] = {name: {}}
    if b.self_verify:
        base_run = run_verification(base, formats, problems, topology="self", aggregation="mean",
                                    threshold=thresholds["baseline"], selection="weighted",
                                    max_tokens=s.max_tokens, temperature=s.temperature, seed=seed,
                                    include_graph=False)
        base_chains = base_run.chains[name]
        base_usage = {name: dict(base_run.usage.get(name, {}))}
        _, base_lab_batch, lab_usage = verify_labelled(base, formats, problems, aggregation="mean",
                                                       threshold=thresholds["baseline"], selection="weighted",
                                                       seed=seed)
        if name in lab_usage:
            base_usage[name]["labelled"] = lab_usage[name]
    else:
        chains, res = solve(base, formats, problems, max_tokens=s.max_tokens, temperature=s.temperature, seed=seed)
        base_chains = chains[name]
        base_usage = {name: {"solve": res.usage[name]}} if name in res.usage else base_usage
        base_solve_s = dict(getattr(res, "wall_s", {}))
    base_wall = time.perf_counter() - t0

    ens_usage = {m: dict(ph) for m, ph in ens_run.usage.items()}
    for m, u in ens_lab_usage.items():
        ens_usage.setdefault(m, {})["labelled"] = u
    n = len(problems)
    chunk = {
        "id": chunk_id, "size": n,
        "ensemble": usage_cost(ens_usage, parameters, wall_s=ens_wall, actor_s=_member_s(ens_run)).as_dict(),
        "baseline": usage_cost(base_usage, parameters, wall_s=base_wall,
                               actor_s=_member_s(base_run) if base_run else base_solve_s).as_dict(),
        "usage": {arm: {m: {ph: [u.prefill, u.decode] for ph, u in phases.items()} for m, phases in use.items()}
                  for arm, use in (("ensemble", ens_usage), ("baseline", base_usage))},
        "missing": {"ensemble": ens_run.missing, "baseline": base_run.missing if base_run else {}},
    }

    records = []
    for i, p in enumerate(problems):
        rep = ens_run.batch.reports[i]
        ens_chains = [ens_run.chains[a][i] for a in ens_run.chains]
        bc = base_chains[i]
        b_pred = base_run.batch.reports[i].earliest_error.get(bc.id) if base_run else None
        labelled = []
        for j, c in enumerate(ens_lab[i][1]):
            labelled.append({"chain_id": c.id, "kind": c.error_kind, "label": c.first_error,
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
            "labelled": labelled,
            "graph": rep.graph if i == 0 else None,
            "chunk": chunk if i == 0 else {"id": chunk_id},
        })
    return records
