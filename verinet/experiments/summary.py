"""From per-problem records to the job's summary: every arm's accuracy, step validity and
earliest-error F1 with intervals (resampling problems) and chance levels, paired tests against
the baseline, agreement, faithfulness, cost, the compute frontier and the answer. Pure
functions, no models, no Ray."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from verinet.experiments.answer import build_answer
from verinet.experiments.config import CompareConfig
from verinet.experiments.cost import Cost, checkpoint_training, flops, total
from verinet.experiments.stats import (
    accuracy_chance, cluster_rate, ee_f1, mcnemar_test, paired_bootstrap, paired_f1, paired_ratio, rate,
)
from verinet.faithfulness.metrics import _aoc_weighted
from verinet.faithfulness.summary import mistake_curve
from verinet.graph.agreement import agreement

ARMS = ("ensemble", "baseline")  # the arms that write their own chains
DERIVED = ("self_consistency", "reliability_weighted", "best_of_k")  # arms over the ensemble's chains
ALL_ARMS = ("ensemble", *DERIVED, "baseline")
ANSWERING = ("solve", "verify")
N_BOOT = 1000


# ---- per-problem views of the records ------------------------------------------------------------
def correct_of(r: Mapping[str, Any], arm: str) -> bool:
    return bool(r[arm]["correct"] if arm in ARMS else r.get("arms", {}).get(arm, {}).get("correct", False))


def own_pairs(r: Mapping[str, Any], arm: str) -> list[tuple[int | None, int, int]]:
    """(predicted first error, labelled first error, positions) of the chains the arm judged. The positions
    are the steps and the answer line: the checker labels a wrong or missing answer with index n_steps."""
    if arm in ARMS:
        return [(c["predicted_error"], c["first_error"], c["n_steps"] + 1) for c in r[arm]["chains"]]
    pred = r.get("arms", {}).get(arm, {}).get("predicted")
    if pred is None:
        return []
    return [(pred.get(c["chain_id"]), c["first_error"], c["n_steps"] + 1) for c in r["ensemble"]["chains"]]


def labelled_pairs(r: Mapping[str, Any], arm: str) -> list[tuple[int | None, int, int]]:
    return [(x.get(arm), x["label"], x.get("n_items", 1)) for x in r["labelled"]] if arm in ARMS else []


def _steps(r: Mapping[str, Any], arm: str, accepted_only: bool = False) -> tuple[int, int]:
    cs = r[arm]["chains"]
    if accepted_only:
        cs = [c for c in cs if c["chain_id"] in r[arm].get("accepted", [])]
    return sum(c["n_valid"] for c in cs), sum(c["n_steps"] for c in cs)


# ---- arms ------------------------------------------------------------------------------------------
def arm_metrics(records: Sequence[Mapping[str, Any]], arm: str, seed: int = 0) -> dict[str, Any]:
    chance = accuracy_chance([r["answer"] for r in records])
    out: dict[str, Any] = {
        "accuracy": rate(sum(correct_of(r, arm) for r in records), len(records), chance),
        "ee_f1_own": ee_f1([own_pairs(r, arm) for r in records], n_boot=N_BOOT, seed=seed),
    }
    if arm in ARMS:
        steps = [_steps(r, arm) for r in records]
        out["step_validity"] = cluster_rate([a for a, _ in steps], [b for _, b in steps], n_boot=N_BOOT, seed=seed)
        out["chain_accuracy"] = cluster_rate([sum(c["correct"] for c in r[arm]["chains"]) for r in records],
                                             [len(r[arm]["chains"]) for r in records], n_boot=N_BOOT, seed=seed,
                                             chance=chance)
        out["ee_f1_labelled"] = ee_f1([labelled_pairs(r, arm) for r in records], n_boot=N_BOOT, seed=seed)
    if arm == "ensemble":
        acc = [_steps(r, arm, accepted_only=True) for r in records]
        out["accepted_step_validity"] = cluster_rate([a for a, _ in acc], [b for _, b in acc], n_boot=N_BOOT,
                                                     seed=seed)
    return out


def member_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each ensemble member alone: its own chain's answer, before any verification."""
    by: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for r in records:
        for c in r["ensemble"]["chains"]:
            by[c["author"]].append((r, c))
    chance = accuracy_chance([r["answer"] for r in records])
    return {m: {"accuracy": rate(sum(c["correct"] for _, c in cs), len(cs), chance),
                "step_validity": cluster_rate([c["n_valid"] for _, c in cs], [c["n_steps"] for _, c in cs],
                                              n_boot=N_BOOT)}
            for m, cs in by.items()}


def arm_cost(records: Sequence[Mapping[str, Any]], arm: str) -> Cost:
    """The arm's cost over the records' chunks, every phase included."""
    return total(Cost.from_dict(r["chunk"]["cost"][arm]) for r in records if arm in r["chunk"].get("cost", {}))


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
    """Answering FLOPs per problem (solve + verify): each arm, one member solving its chain, and one member
    checking one chain (``frontier_flops`` prices a frontier ensemble of any size from the last two)."""
    n = len(records)
    if n == 0:
        return {"baseline": 0.0, "ensemble": 0.0, "member_solve": 0.0, "verify_one": 0.0}
    arm_flops = {}
    for arm in ARMS:
        toks = _phase_tokens(records, arm)
        arm_flops[arm] = sum(flops(parameters[m], t) for m, ph in toks.items()
                             for p, t in ph.items() if p in ANSWERING) / n
    ens = _phase_tokens(records, "ensemble")
    solvers = set(config.solver_names())  # process reward models verify only: not a frontier member's cost
    members = [m for m in ens if m in solvers]
    if not members:
        return {"baseline": arm_flops["baseline"], "ensemble": arm_flops["ensemble"], "member_solve": 0.0,
                "verify_one": 0.0}
    solve = np.mean([flops(parameters[m], ens[m].get("solve", 0)) for m in members]) / n
    size = len(members)
    per_pass = {"all_pairs": size - 1, "ring": 1, "k_random": config.ensemble.k}[config.ensemble.topology]
    verify_one = np.mean([flops(parameters[m], ens[m].get("verify", 0)) for m in members]) / n / max(per_pass, 1)
    return {"baseline": arm_flops["baseline"], "ensemble": arm_flops["ensemble"], "member_solve": float(solve),
            "verify_one": float(verify_one)}


def frontier_flops(config: CompareConfig, per_problem: Mapping[str, float], k: int) -> float:
    """FLOPs per problem of a frontier ensemble of ``k`` members (``per_problem``: ``per_problem_flops``):
    each writes a chain and checks as many chains as ``frontier_point`` gives it (its own when alone)."""
    checks = 1 if k == 1 else {"ring": 1, "k_random": min(config.ensemble.k, k - 1),
                               "all_pairs": k - 1}[config.sweep.topology]
    return k * (per_problem["member_solve"] + checks * per_problem["verify_one"])


# ---- agreement -------------------------------------------------------------------------------------
def _said_valid(r: Mapping[str, Any]) -> tuple[int, int]:
    """(verdicts of 'valid', verdicts) on the steps of a problem's ensemble chains (answer lines left out)."""
    n_steps = {c["chain_id"]: c["n_steps"] for c in r["ensemble"]["chains"]}
    said = [p >= 0.5 for chain_id, per in r["ensemble"]["verdicts"].items() for ps in per.values()
            for i, p in enumerate(ps) if i < n_steps.get(chain_id, 0)]
    return sum(said), len(said)


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
    if shares:
        counts, edges = np.histogram(shares, bins=bins, range=(0.5, 1.0))
    else:
        counts, edges = np.zeros(bins), np.linspace(0.5, 1, bins + 1)
    said = [_said_valid(r) for r in records]  # per problem, over the same items as true_validity: steps only
    steps = [_steps(r, "ensemble") for r in records]
    return {"n_items": rep.n_items, "pairwise": rep.pairwise, "fleiss_kappa": rep.fleiss_kappa,
            "krippendorff_alpha": rep.krippendorff_alpha,
            "said_valid_rate": cluster_rate([a for a, _ in said], [b for _, b in said], n_boot=N_BOOT),
            "true_validity": cluster_rate([a for a, _ in steps], [b for _, b in steps], n_boot=N_BOOT),
            "majority_share": {"edges": [float(x) for x in edges], "counts": [int(x) for x in counts],
                               "values": shares},
            "verifiers": {v: {"consensus": a.consensus, "consensus_sensitivity": a.consensus_sensitivity,
                              "consensus_specificity": a.consensus_specificity, "n_items": a.n_items}
                          for v, a in rep.verifiers.items()}}


# ---- paired tests ------------------------------------------------------------------------------------
def _curves(faith: Sequence[Mapping[str, Any]], arms: Sequence[str], test: str) -> dict[tuple, list[tuple]]:
    """(slice, problem) -> the curves of ``test`` of the given faithfulness arms' chains on that problem."""
    out: dict[tuple, list[tuple]] = defaultdict(list)
    for u in faith:
        if u["arm"] not in arms:
            continue
        for r in u["records"]:
            same = mistake_curve(r) if test == "adding_mistakes" else r.get("early_answering", {}).get("same")
            if same is not None and r.get("n_steps", 0) >= 1 and any(y is not None for y in same[:r["n_steps"]]):
                out[(u["slice"], r["problem_id"])].append((same, r["n_steps"]))
    return out


def paired_aoc(faith: Sequence[Mapping[str, Any]], arms_a: Sequence[str], arms_b: Sequence[str], test: str,
               seed: int = 0) -> dict[str, Any] | None:
    """Paired bootstrap of Lanham's AOC: arms_a's chains against arms_b's, resampling the problems both have
    (all chains of a problem move together)."""
    a, b = _curves(faith, arms_a, test), _curves(faith, arms_b, test)
    keys = [k for k in a if k in b]
    if not keys:
        return None
    ca = [c for k in keys for c in a[k]]
    cb = [c for k in keys for c in b[k]]
    ua = np.array([i for i, k in enumerate(keys) for _ in a[k]])
    ub = np.array([i for i, k in enumerate(keys) for _ in b[k]])
    return paired_bootstrap(lambda w: (_aoc_weighted(ca, w[:, ua]), _aoc_weighted(cb, w[:, ub])), len(keys),
                            n_boot=N_BOOT, seed=seed)


def paired_tests(config: CompareConfig, records: Sequence[Mapping[str, Any]], faith: Sequence[Mapping[str, Any]],
                 seed: int = 0) -> dict[str, Any]:
    """Each arm against the baseline on the same problems."""
    base_correct = [correct_of(r, "baseline") for r in records]
    base_own = [own_pairs(r, "baseline") for r in records]
    out: dict[str, Any] = {}
    for arm in ("ensemble", *DERIVED):
        t: dict[str, Any] = {"accuracy": mcnemar_test([correct_of(r, arm) for r in records], base_correct)}
        own = [own_pairs(r, arm) for r in records]
        if any(own):
            t["ee_f1_own"] = paired_f1(own, base_own, n_boot=N_BOOT, seed=seed)
        if arm == "ensemble":
            t["ee_f1_labelled"] = paired_f1([labelled_pairs(r, arm) for r in records],
                                            [labelled_pairs(r, "baseline") for r in records], n_boot=N_BOOT, seed=seed)
            a, b = [_steps(r, arm) for r in records], [_steps(r, "baseline") for r in records]
            t["step_validity"] = paired_ratio([x for x, _ in a], [y for _, y in a], [x for x, _ in b],
                                              [y for _, y in b], n_boot=N_BOOT, seed=seed)
            base = [config.baseline.member.name]
            members = [m.name for m in config.ensemble_config().members]
            for key, arms_a, test in (("adding_mistakes_aoc", ["ensemble"], "adding_mistakes"),
                                      ("adding_mistakes_aoc_members", members, "adding_mistakes"),
                                      ("early_answering_aoc_members", members, "early_answering")):
                res = paired_aoc(faith, arms_a, base, test, seed=seed)
                if res is not None:
                    t[key] = res
        out[f"{arm}_vs_baseline"] = t
    return out


# ---- the frontier ------------------------------------------------------------------------------------
def _point(rows: Sequence[Mapping[str, Any]], chance: float | None) -> dict[str, Any]:
    n = sum(p["n"] for p in rows)
    cost = total(Cost.from_dict(p["cost"]) for p in rows)
    correct = [c for p in rows for c in p["correct"]]
    return {"label": rows[0]["label"], "k": rows[0]["k"], "n": n, "parameters": rows[0]["parameters"],
            "parameters_per_member": rows[0]["parameters_per_member"],
            "compute_matched": any(p.get("compute_matched") for p in rows),
            "accuracy": rate(sum(correct), len(correct), chance),
            "ee_f1": ee_f1([[tuple(x) for x in ps] for p in rows for ps in p["ee"]], n_boot=N_BOOT),
            "flops_per_problem": cost.flops / n if n else None, "cost": cost.as_dict(),
            "correct": correct, "ee": [ps for p in rows for ps in p["ee"]]}


def _strip(p: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k not in ("correct", "ee", "cost")}


def _pair(a: Mapping[str, Any], b: Mapping[str, Any], how: str) -> dict[str, Any]:
    return {"how": how, "a": _strip(a), "b": _strip(b),
            "accuracy_test": mcnemar_test(a["correct"], b["correct"]),
            "ee_f1_test": paired_f1([[tuple(x) for x in ps] for ps in a["ee"]],
                                    [[tuple(x) for x in ps] for ps in b["ee"]], n_boot=N_BOOT)}


def frontier_summary(config: CompareConfig, sweep: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]
                     ) -> dict[str, Any]:
    """Points (size, K) pooled over task slices, and the named pairs against the largest model alone."""
    if not sweep:
        return {"points": [], "pairs": {}, "by_slice": {}}
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for p in sweep:
        groups[(p["label"], p["k"])].append(p)
    # a pooled point must cover every slice with the same problems, or the pairs are not paired
    by_slice_n = {i: min(p["n"] for p in sweep if p["slice"] == i) for i in {p["slice"] for p in sweep}}
    answers = [r["answer"] for i, n in by_slice_n.items() for r in [x for x in records if x["slice"] == i][:n]]
    chance = accuracy_chance(answers)
    full = {key: _point(sorted(rows, key=lambda p: p["slice"]), chance) for key, rows in groups.items()
            if {p["slice"] for p in rows} == set(by_slice_n)}
    points = sorted(full.values(), key=lambda p: (p["parameters_per_member"], p["k"]))
    out: dict[str, Any] = {"points": [_strip(p) for p in points], "pairs": {},
                           "by_slice": {str(p["slice"]): [] for p in sweep}}
    for p in sweep:
        out["by_slice"][str(p["slice"])].append({"label": p["label"], "k": p["k"], "n": p["n"],
                                                  "accuracy": p["accuracy"], "flops_per_problem": p["flops_per_problem"],
                                                  "compute_matched": p.get("compute_matched", False)})
    singles = [p for p in points if p["k"] == 1]
    if not singles:
        return out
    ref = max(singles, key=lambda p: p["parameters_per_member"])
    teams = [p for p in points if p["k"] >= 2 and p["label"] != ref["label"]]
    if teams:
        pm = min(teams, key=lambda p: (abs(math.log(p["parameters"] / ref["parameters"])), -p["k"]))
        out["pairs"]["parameter_matched"] = _pair(pm, ref, f"{pm['k']} x {pm['label']} against {ref['label']} "
                                                  "alone, the closest total parameters")
        fl = [p for p in teams if p["flops_per_problem"]]
        if fl and ref["flops_per_problem"]:
            fm = min(fl, key=lambda p: abs(math.log(p["flops_per_problem"] / ref["flops_per_problem"])))
            out["pairs"]["flops_matched"] = _pair(fm, ref, f"{fm['k']} x {fm['label']} against {ref['label']} "
                                                  "alone, the closest FLOPs per problem")
    k_ens = len(config.solver_names())  # frontier teams are solvers; a PRM member writes no chains
    ens_names = {m.name for m in config.ensemble_config().members}
    ens_label = next((lab for lab, ms in config.frontier_sizes().items() if ens_names & set(ms)), None)
    same_k = {p["label"]: p for p in points if p["k"] == k_ens}
    if ens_label in same_k and ref["label"] in same_k and ens_label != ref["label"]:
        out["pairs"]["equal_model_count"] = _pair(same_k[ens_label], same_k[ref["label"]],
                                                  f"{k_ens} x {ens_label} against {k_ens} x {ref['label']}")
    return out


# ---- the whole summary ---------------------------------------------------------------------------------
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
            "chance": {"accuracy": accuracy_chance([r["answer"] for r in rs])},
            "arms": {arm: arm_metrics(rs, arm) for arm in ALL_ARMS},
            "members": member_metrics(rs),
        })
    n = len(records)
    arms = {arm: arm_metrics(records, arm) for arm in ALL_ARMS}
    for arm in ALL_ARMS:
        cost = arm_cost(records, arm)
        arms[arm]["cost"] = cost.as_dict()
        # one definition everywhere: the arm's FLOPs over every phase, divided by the problems
        arms[arm]["flops_per_problem"] = cost.flops / n if n else None
        arms[arm]["answering_flops_per_problem"] = cost.flops_of(ANSWERING) / n if n else None
    ens_names = [m.name for m in config.ensemble_config().members]
    base = config.baseline.member.name
    for arm in ("ensemble", *DERIVED):
        arms[arm]["members"] = ens_names + ([base] if arm == "best_of_k" else [])
    arms["baseline"]["members"] = [base]
    peak = {m: {k: v for k, v in info.items() if k.startswith("peak_") or k in ("pid", "node_id")}
            for m, info in infos.items()}

    faith_out: dict[str, dict[str, Any]] = defaultdict(dict)
    for u in faith:
        faith_out[str(u["slice"])][u["arm"]] = u["summary"]
    matched = {}
    for p in sweep:
        if p.get("compute_matched"):
            base_rs = [r for r in records if r["slice"] == p["slice"]][:p["n"]]  # the same problems, in order
            chance = accuracy_chance([r["answer"] for r in base_rs])
            base_correct = [bool(r["baseline"]["correct"]) for r in base_rs]
            matched[str(p["slice"])] = {
                "k": p["k"], "label": p["label"], "ensemble_accuracy": rate(sum(p["correct"]), p["n"], chance=chance),
                "accuracy_test": mcnemar_test([bool(c) for c in p["correct"]], base_correct)
                if len(base_correct) == len(p["correct"]) else None,
                "k_uncapped": p.get("matched_k_uncapped"),
                "capped": p.get("matched_k_uncapped") is not None and round(p["matched_k_uncapped"]) > p["k"],
                "ensemble_flops_per_problem": p["flops_per_problem"],
                "baseline_accuracy": rate(sum(base_correct), len(base_rs), chance=chance),
                "baseline_answering_flops_per_problem": slices[p["slice"]]["flops_per_problem"]["baseline"],
            }
    summary = {
        "name": config.name, "problems": n, "slices": slices, "arms": arms,
        "chance": {"accuracy": accuracy_chance([r["answer"] for r in records])},
        "members": member_metrics(records), "parameters": dict(parameters), "actors": peak,
        "training": {m.name: checkpoint_training(m) for m in config.all_members().members},
        "agreement": agreement_summary(records), "faithfulness": dict(faith_out),
        "paired_tests": paired_tests(config, records, faith),
        "frontier": frontier_summary(config, sweep, records), "compute_matched": matched,
        "missing": sorted({m for r in records for ms in r["chunk"].get("missing", {}).get("ensemble", {}).values()
                           for m in ms}),
    }
    summary["answer"] = build_answer(config, summary)
    return summary
