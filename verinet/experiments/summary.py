"""From per-problem records to the job's summary: accuracy, step validity, earliest-error F1,
agreement, faithfulness, cost and the K sweep. Pure functions, no models, no Ray."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from verinet.experiments.config import CompareConfig
from verinet.experiments.cost import Cost, flops, total
from verinet.graph.agreement import agreement
from verinet.graph.propagate import earliest_error_f1

ARMS = ("ensemble", "baseline")


def rate(successes: int, n: int) -> dict[str, float | int | None]:
    """A proportion with its 95% Wilson interval."""
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    lo, hi = proportion_confint(successes, n, alpha=0.05, method="wilson")
    return {"value": successes / n, "ci_low": float(lo), "ci_high": float(hi), "n": n}


def _f1(preds: Sequence[int | None], labels: Sequence[int]) -> dict[str, float | None]:
    pairs = [(p, lab) for p, lab in zip(preds, labels) if p is not None]
    if not pairs:
        return {"f1": None, "acc_err": None, "acc_corr": None, "n": 0}
    out = earliest_error_f1([p for p, _ in pairs], [lab for _, lab in pairs])
    clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in out.items()}
    return {**clean, "n": len(pairs)}


def arm_metrics(records: Sequence[Mapping[str, Any]], arm: str) -> dict[str, Any]:
    chains = [c for r in records for c in r[arm]["chains"]]
    correct = sum(bool(r[arm]["correct"]) for r in records)
    steps = sum(c["n_steps"] for c in chains)
    valid = sum(c["n_valid"] for c in chains)
    out = {
        "accuracy": rate(correct, len(records)),
        "step_validity": rate(valid, steps),
        "chain_accuracy": rate(sum(c["correct"] for c in chains), len(chains)),
        "ee_f1_own": _f1([c["predicted_error"] for c in chains], [c["first_error"] for c in chains]),
        "ee_f1_labelled": _f1([x[arm] for r in records for x in r["labelled"]],
                              [x["label"] for r in records for x in r["labelled"]]),
    }
    if arm == "ensemble":
        acc = [c for r in records for c in r[arm]["chains"] if c["chain_id"] in r[arm]["accepted"]]
        out["accepted_step_validity"] = rate(sum(c["n_valid"] for c in acc), sum(c["n_steps"] for c in acc))
    return out


def member_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each ensemble member alone: its own chain's answer, before any verification."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        for c in r["ensemble"]["chains"]:
            by[c["author"]].append(c)
    return {m: {"accuracy": rate(sum(c["correct"] for c in cs), len(cs)),
                "step_validity": rate(sum(c["n_valid"] for c in cs), sum(c["n_steps"] for c in cs))}
            for m, cs in by.items()}


def chunk_costs(records: Sequence[Mapping[str, Any]], arm: str) -> Cost:
    return total(Cost.from_dict(r["chunk"][arm]) for r in records if arm in r["chunk"])


def _phase_tokens(records: Sequence[Mapping[str, Any]], arm: str) -> dict[str, dict[str, int]]:
    """member -> phase -> tokens, summed over chunks."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        for m, phases in r["chunk"].get("usage", {}).get(arm, {}).items():
            for ph, (pre, dec) in phases.items():
                out[m][ph] += pre + dec
    return out


def per_problem_flops(config: CompareConfig, records: Sequence[Mapping[str, Any]],
                      parameters: Mapping[str, float]) -> dict[str, float]:
    """FLOPs per problem: each arm answering (solve + verify, not the labelled set), one member
    solving alone, and one member of a sweep ensemble (solve + its share of verification)."""
    n = len(records)
    if n == 0:
        return {"baseline": 0.0, "ensemble": 0.0, "member_solve": 0.0, "sweep_member": 0.0}
    arm_flops = {}
    for arm in ARMS:
        toks = _phase_tokens(records, arm)
        arm_flops[arm] = sum(flops(parameters[m], t) for m, ph in toks.items()
                             for p, t in ph.items() if p in ("solve", "verify")) / n
    ens = _phase_tokens(records, "ensemble")
    members = list(ens)
    solve = np.mean([flops(parameters[m], ens[m].get("solve", 0)) for m in members]) / n
    size = len(members)
    per_pass = {"all_pairs": size - 1, "ring": 1, "k_random": config.ensemble.k}[config.ensemble.topology]
    verify_one = np.mean([flops(parameters[m], ens[m].get("verify", 0)) for m in members]) / n / max(per_pass, 1)
    sweep_per = {"ring": 1, "k_random": config.ensemble.k, "all_pairs": size - 1}[config.sweep.topology]
    return {"baseline": arm_flops["baseline"], "ensemble": arm_flops["ensemble"], "member_solve": float(solve),
            "sweep_member": float(solve + sweep_per * verify_one)}


def agreement_summary(records: Sequence[Mapping[str, Any]], bins: int = 10) -> dict[str, Any]:
    votes: dict[tuple[str, int], dict[str, float]] = {}
    for r in records:
        for chain_id, per in r["ensemble"]["verdicts"].items():
            for verifier, ps in per.items():
                for i, p in enumerate(ps):
                    votes.setdefault((chain_id, i), {})[verifier] = p
    rep = agreement(votes)
    shares = []
    for per in votes.values():
        if len(per) >= 2:
            yes = sum(p >= 0.5 for p in per.values())
            shares.append(max(yes, len(per) - yes) / len(per))
    counts, edges = np.histogram(shares, bins=bins, range=(0.5, 1.0)) if shares else (np.zeros(bins), np.linspace(0.5, 1, bins + 1))
    return {"n_items": rep.n_items, "pairwise": rep.pairwise, "fleiss_kappa": rep.fleiss_kappa,
            "krippendorff_alpha": rep.krippendorff_alpha,
            "majority_share": {"edges": [float(x) for x in edges], "counts": [int(x) for x in counts],
                               "values": shares},
            "verifiers": {v: {"consensus": a.consensus, "consensus_sensitivity": a.consensus_sensitivity,
                              "consensus_specificity": a.consensus_specificity, "n_items": a.n_items}
                          for v, a in rep.verifiers.items()}}


def summarize(config: CompareConfig, records: Sequence[Mapping[str, Any]], faith: Sequence[Mapping[str, Any]],
              sweep: Sequence[Mapping[str, Any]], infos: Mapping[str, Mapping[str, Any]],
              parameters: Mapping[str, float], thresholds: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    slices = []
    for i, spec in enumerate(config.tasks):
        rs = [r for r in records if r["slice"] == i]
        fl = per_problem_flops(config, rs, parameters)
        slices.append({
            "index": i, "family": spec.family, "params": spec.params, "n": len(rs),
            "thresholds": thresholds.get(str(i)), "flops_per_problem": fl,
            "arms": {arm: arm_metrics(rs, arm) for arm in ARMS},
            "members": member_metrics(rs),
        })
    arms = {arm: arm_metrics(records, arm) for arm in ARMS}
    cost = {arm: chunk_costs(records, arm) for arm in ARMS}
    for arm in ARMS:
        arms[arm]["cost"] = cost[arm].as_dict()
        arms[arm]["flops_per_problem"] = float(np.mean([s["flops_per_problem"][arm] for s in slices]))
    ens_names = [m for m in parameters if m != config.baseline.member.name]
    arms["ensemble"]["members"] = ens_names
    arms["baseline"]["members"] = [config.baseline.member.name]
    peak = {m: {k: v for k, v in info.items() if k.startswith("peak_") or k in ("pid", "node_id")}
            for m, info in infos.items()}

    faith_out: dict[str, dict[str, Any]] = defaultdict(dict)
    for u in faith:
        faith_out[str(u["slice"])][u["arm"]] = u["summary"]
    sweep_out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    matched = {}
    for p in sweep:
        row = {"k": p["k"], "accuracy": p["accuracy"], "n": p["n"], "flops_per_problem": p["flops_per_problem"],
               "compute_matched": p.get("compute_matched", False)}
        sweep_out[str(p["slice"])].append(row)
        if row["compute_matched"]:
            base_rs = [r for r in records if r["slice"] == p["slice"]][:p["n"]]
            matched[str(p["slice"])] = {
                "k": p["k"], "ensemble_accuracy": rate(sum(p["correct"]), p["n"]),
                "ensemble_flops_per_problem": p["flops_per_problem"],
                "baseline_accuracy": rate(sum(r["baseline"]["correct"] for r in base_rs), len(base_rs)),
                "baseline_flops_per_problem": slices[p["slice"]]["flops_per_problem"]["baseline"],
            }
    return {
        "name": config.name, "problems": len(records), "slices": slices, "arms": arms,
        "members": member_metrics(records), "parameters": dict(parameters), "actors": peak,
        "agreement": agreement_summary(records), "faithfulness": dict(faith_out),
        "sweep": dict(sweep_out), "compute_matched": matched,
        "missing": sorted({m for r in records for ms in r["chunk"].get("missing", {}).get("ensemble", {}).values()
                           for m in ms}),
    }
