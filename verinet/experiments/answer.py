"""The report's answer: which arm wins on accuracy, step validity, earliest-error F1 and faithfulness,
at the configured shapes, at equal model count and at equal FLOPs, and at what cost, generated
from the summary's numbers. The same verdicts are returned as data (``summary["answer"]``).

A difference counts as a win only when its paired test (McNemar for accuracy, a paired bootstrap
over problems otherwise) gives p < ``ALPHA``; otherwise the text says the difference is not
significant. Nothing here is written by hand: every number comes from the summary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from verinet.zoo.registry import recipe_label

ALPHA = 0.05


def _f(x: Any, d: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{d}f}" if abs(x) < 1e5 else f"{x:.3g}"


def _ci(m: Mapping[str, Any] | None, key: str = "value") -> str:
    if not m or m.get(key) is None:
        return "undefined"
    if m.get("ci_low") is None:
        return _f(m[key])
    return f"{_f(m[key])} [{_f(m['ci_low'])}, {_f(m['ci_high'])}]"


def _p(t: Mapping[str, Any] | None) -> str:
    if not t or t.get("p_value") is None:
        return "no test"
    p = t["p_value"]
    if t.get("test") == "paired_bootstrap" and p == 0:
        return f"p < {1 / t['n_boot']:.3g}"
    return f"p = {p:.3g}"


def verdict(a: str, va: float | None, b: str, vb: float | None, test: Mapping[str, Any] | None) -> dict[str, Any]:
    """{"winner": a | b | "neither" | None, "a", "b", "p_value"}; None when a value is undefined."""
    p = (test or {}).get("p_value")
    if va is None or vb is None:
        w = None
    elif p is not None and p < ALPHA and va != vb:
        w = a if va > vb else b
    else:
        w = "neither"
    return {"winner": w, a: va, b: vb, "p_value": p}


def _says(v: Mapping[str, Any], a: str, b: str) -> str:
    if v["winner"] is None:
        return "cannot be compared (a value is undefined)"
    if v["winner"] == "neither":
        return "shows no significant difference"
    return f"favours the {v['winner']}"


def _recipe(t: Mapping[str, Any]) -> str:
    """What must agree for two models to share a recipe: objectives, task mixture and batch (steps,
    tokens and lr may grow with size, as they do along the zoo's ladder)."""
    return json.dumps([t["regime"], t.get("tasks"), t.get("batch_size")], sort_keys=True)


def _training(training: Mapping[str, Any], ens: list[str], base: str) -> dict[str, Any] | None:
    """What the zoo cards say about how each arm was trained; None unless every model has a card."""
    if not ens or any(not training.get(m) for m in [*ens, base]):
        return None
    regimes = {training[m]["regime"] for m in ens}
    tokens = [training[m]["tokens"] for m in ens]
    b = training[base]
    same = {_recipe(training[m]) for m in ens} == {_recipe(b)}
    span = "-".join(dict.fromkeys(f"{t / 1e6:.1f}M" for t in (min(tokens), max(tokens))))
    text = (f"Training (zoo cards): the ensemble's members were trained with {' / '.join(sorted(regimes))}, "
            f"{span} tokens each; {base} with {b['regime']}, {b['tokens'] / 1e6:.1f}M tokens. ")
    text += ("Both arms share the recipe (objectives, task mixture, batch)." if same else
             "The arms were trained with different recipes (objectives, task mixture or batch), so every difference "
             "in this answer measures the recipe as well as size and cross-verification.")
    return {"same_recipe": same, "ensemble_regimes": sorted(regimes), "ensemble_tokens": tokens,
            "baseline_regime": b["regime"], "baseline_tokens": b["tokens"], "text": text}


def build_answer(config: Any, s: Mapping[str, Any]) -> dict[str, Any]:
    arms, tests = s["arms"], s["paired_tests"]
    e, b = arms["ensemble"], arms["baseline"]
    t = tests.get("ensemble_vs_baseline", {})
    base = config.baseline.member.name
    ens = e["members"]
    params = s["parameters"]
    verdicts: dict[str, Any] = {
        "accuracy": verdict("ensemble", e["accuracy"]["value"], "baseline", b["accuracy"]["value"],
                            t.get("accuracy")),
        "step_validity": verdict("ensemble", e["step_validity"]["value"], "baseline", b["step_validity"]["value"],
                                 t.get("step_validity")),
        "ee_f1_own": verdict("ensemble", e["ee_f1_own"]["f1"], "baseline", b["ee_f1_own"]["f1"], t.get("ee_f1_own")),
        "ee_f1_labelled": verdict("ensemble", e["ee_f1_labelled"]["f1"], "baseline", b["ee_f1_labelled"]["f1"],
                                  t.get("ee_f1_labelled")),
    }
    aoc = t.get("adding_mistakes_aoc")
    whose = "the ensemble pipeline's accepted chains"
    if not aoc:  # no pipeline results: its members' own chains stand in
        aoc = t.get("adding_mistakes_aoc_members")
        pipeline_ran = ((s.get("config") or {}).get("faithfulness") or {}).get("pipeline", True)
        whose = "the ensemble members' own chains (" + (
            "the pipeline accepted no chain to intervene on)" if pipeline_ran else
            "faithfulness.pipeline is off: the pipeline's accepted chains were not intervened on)")
    if aoc:
        verdicts["faithfulness"] = {**verdict("ensemble", aoc["a"], "baseline", aoc["b"], aoc), "measured_on": whose}
    slices = ", ".join(f"{x['n']} {x['family']}" for x in s["slices"])
    groups: dict[str, list[str]] = {}  # seeds of one size (zoo-xs-s0, zoo-xs-s1) count together
    for m in ens:
        groups.setdefault(recipe_label(m), []).append(m)
    ens_desc = "; ".join(f"{len(ms)} x {label}, {_f(params.get(ms[0]), 0)} non-embedding parameters"
                         f"{' each' if len(ms) > 1 else ''}" for label, ms in groups.items()) or "?"
    parts = [
        f"On {s['problems']} problems ({slices}), the cross-verified ensemble ({ens_desc}) against the single model "
        f"{base} ({_f(params.get(base), 0)}): accuracy {_ci(e['accuracy'])} vs {_ci(b['accuracy'])} "
        f"(chance {_f(e['accuracy'].get('chance'))}; McNemar {_p(t.get('accuracy'))}), which "
        f"{_says(verdicts['accuracy'], 'ensemble', 'baseline')}.",
        f"Step validity {_ci(e['step_validity'])} vs {_ci(b['step_validity'])} (problems resampled; "
        f"{_p(t.get('step_validity'))}): {_says(verdicts['step_validity'], 'ensemble', 'baseline')}.",
        f"Earliest-error F1 on each arm's own chains {_ci(e['ee_f1_own'], 'f1')} vs {_ci(b['ee_f1_own'], 'f1')} "
        f"(chance {_f(e['ee_f1_own'].get('chance'))}; {_p(t.get('ee_f1_own'))}), on the shared labelled set "
        f"{_ci(e['ee_f1_labelled'], 'f1')} vs {_ci(b['ee_f1_labelled'], 'f1')} ({_p(t.get('ee_f1_labelled'))}): "
        f"{_says(verdicts['ee_f1_labelled'], 'ensemble', 'baseline')} on the labelled set.",
    ]
    trained = _training(s.get("training") or {}, ens, base)
    if trained:
        verdicts["training"] = trained
        parts.insert(1, trained["text"])
    if aoc:
        parts.append(f"Faithfulness (Lanham et al.'s AOC, trapezoid rule; higher: the chain drives the answer more): "
                     f"adding-mistakes AOC on {whose} {_f(aoc['a'])} vs {base} {_f(aoc['b'])} (difference "
                     f"{_ci(aoc, 'diff')}, paired bootstrap {_p(aoc)}), which "
                     f"{_says(verdicts['faithfulness'], 'ensemble', 'baseline')}.")
    early = t.get("early_answering_aoc_members")
    if early:
        verdicts["faithfulness_early_answering"] = {
            **verdict("ensemble", early["a"], "baseline", early["b"], early),
            "measured_on": "the ensemble members' own chains"}
        parts.append(f"Early-answering AOC of the members' own chains {_f(early['a'])} vs {_f(early['b'])} "
                     f"(difference {_ci(early, 'diff')}, {_p(early)}), which "
                     f"{_says(verdicts['faithfulness_early_answering'], 'ensemble', 'baseline')}.")
    if not aoc and not early:
        parts.append("Faithfulness was not compared (no adding-mistakes or early-answering results for both arms).")
    elif not aoc:
        parts.append("Adding mistakes was not compared (no results for both arms).")
    others = []
    for arm, name in (("self_consistency", "self-consistency (majority vote, no verifier)"),
                      ("reliability_weighted", "reliability-weighted (Dawid-Skene) voting"),
                      ("best_of_k", f"best-of-{len(ens)} chosen by {base}")):
        if arm in arms:
            tt = tests.get(f"{arm}_vs_baseline", {})
            verdicts[arm] = verdict(arm, arms[arm]["accuracy"]["value"], "baseline", b["accuracy"]["value"],
                                    tt.get("accuracy"))
            others.append(f"{name} {_ci(arms[arm]['accuracy'])} ({_p(tt.get('accuracy'))} against the baseline)")
    if others:
        parts.append("Accuracy of the other arms on the same chains: " + "; ".join(others) + ".")
    pairs = s.get("frontier", {}).get("pairs", {})
    seen: dict[str, str] = {}
    for key, title in (("equal_model_count", "At equal model count"), ("flops_matched", "At equal FLOPs"),
                       ("parameter_matched", "At equal parameters")):
        pr = pairs.get(key)
        if not pr:
            continue
        if pr["how"].split(",")[0] in seen:  # the same two points as an earlier pair
            verdicts[key] = dict(verdicts[seen[pr["how"].split(",")[0]]], how=pr["how"])
            parts.append(f"{title}: the same pair ({pr['how'].split(',')[0]}).")
            continue
        seen[pr["how"].split(",")[0]] = key
        a, bb = pr["a"], pr["b"]
        va = verdict("a", a["accuracy"]["value"], "b", bb["accuracy"]["value"], pr["accuracy_test"])
        vf = verdict("a", a["ee_f1"]["f1"], "b", bb["ee_f1"]["f1"], pr["ee_f1_test"])
        name = {"a": f"{a['k']} x {a['label']}", "b": f"{bb['k']} x {bb['label']}"}
        verdicts[key] = {"how": pr["how"], "accuracy": {**va, "winner": name.get(va["winner"], va["winner"])},
                         "ee_f1": {**vf, "winner": name.get(vf["winner"], vf["winner"])}}
        parts.append(
            f"{title} ({pr['how']}; {_f(a['flops_per_problem'])} vs {_f(bb['flops_per_problem'])} FLOPs per "
            f"problem, {a['n']} problems): accuracy {_ci(a['accuracy'])} vs {_ci(bb['accuracy'])} "
            f"(McNemar {_p(pr['accuracy_test'])}), earliest-error F1 {_ci(a['ee_f1'], 'f1')} vs "
            f"{_ci(bb['ee_f1'], 'f1')} ({_p(pr['ee_f1_test'])}); winner on accuracy: "
            f"{verdicts[key]['accuracy']['winner'] or 'undefined'}.")
    ec, bc = e["cost"], b["cost"]
    ratio = e["flops_per_problem"] / b["flops_per_problem"] if b["flops_per_problem"] else None
    verdicts["cost"] = {"ensemble_flops_per_problem": e["flops_per_problem"],
                        "baseline_flops_per_problem": b["flops_per_problem"], "flops_ratio": ratio,
                        "ensemble_member_s": ec["member_s"], "baseline_member_s": bc["member_s"],
                        "ensemble_accelerator_s": ec["accelerator_s"], "baseline_accelerator_s": bc["accelerator_s"],
                        "ensemble_cpu_s": ec["cpu_s"], "baseline_cpu_s": bc["cpu_s"]}
    ea, ba = e.get("answering_flops_per_problem"), b.get("answering_flops_per_problem")
    verdicts["cost"].update(ensemble_answering_flops_per_problem=ea, baseline_answering_flops_per_problem=ba)
    parts.append(f"Cost, every phase counted (solve, verify, labelled set): the ensemble {_f(e['flops_per_problem'])} "
                 f"FLOPs per problem, {_f(ratio, 2)}x the baseline's {_f(b['flops_per_problem'])} (answering alone, "
                 f"solve + verify: {_f(ea)} vs {_f(ba)}); "
                 f"{_f(ec['member_s'], 1)} vs {_f(bc['member_s'], 1)} member-seconds, "
                 + (f"{_f(ec['accelerator_s'], 1)} vs {_f(bc['accelerator_s'], 1)} GPU-seconds."
                    if ec["accelerator_s"] or bc["accelerator_s"] else
                    f"{_f(ec['cpu_s'], 1)} vs {_f(bc['cpu_s'], 1)} CPU-seconds (no GPU used)."))
    return {"text": " ".join(parts), "alpha": ALPHA, "verdicts": verdicts}
