"""The comparison report: Markdown and a self-contained HTML page (plots inlined), from the summary.

Sections: the answer (generated from the numbers), the headline table of every arm, the paired
tests, the compute frontier (accuracy and earliest-error F1 against FLOPs), earliest-error F1,
agreement, faithfulness, cost, and one example verification graph. Every figure is drawn from the
job's own results; every rate stands beside its chance level, and an undefined figure says why.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from verinet.experiments.config import CompareConfig  # noqa: E402
from verinet.reporting import Block  # noqa: E402
from verinet.reporting import write_report as write_blocks  # noqa: E402



def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if abs(x) >= 1e5:
            return f"{x:.3g}"
        return f"{x:.{digits}f}"
    return str(x)


def _ci(m: Mapping[str, Any] | None, key: str = "value") -> str:
    if not m or m.get(key) is None:
        return "n/a"
    if m.get("ci_low") is None:
        return f"{m[key]:.3f}"
    return f"{m[key]:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def _chance(m: Mapping[str, Any] | None) -> str:
    return _fmt((m or {}).get("chance"))


def _ee(m: Mapping[str, Any] | None) -> str:
    """Earliest-error F1 with its interval; when undefined, the reason in words."""
    if not m or not m.get("n"):
        return "n/a (no chains judged)"
    if m.get("f1") is None:
        if not m.get("n_err"):
            return f"undefined: none of the {m['n']} chains has an error"
        if not m.get("n_corr"):
            return f"undefined: all {m['n']} chains have an error (acc. on them {_fmt(m['acc_err'], 2)})"
        return "undefined"
    return f"{_ci(m, 'f1')} (err {_fmt(m['acc_err'], 2)}, corr {_fmt(m['acc_corr'], 2)})"


def _p(t: Mapping[str, Any] | None) -> str:
    if not t or t.get("p_value") is None:
        return "n/a"
    if t.get("test") == "paired_bootstrap" and t["p_value"] == 0:
        return f"< {1 / t['n_boot']:.3g}"
    return f"{t['p_value']:.3g}"


def _slice_name(s: Mapping[str, Any]) -> str:
    knobs = ", ".join(f"{k}={v}" for k, v in s["params"].items())
    return f"{s['family']}" + (f" ({knobs})" if knobs else "")


# ---- plots -------------------------------------------------------------------------------------
ARM_STYLE = {"ensemble": ("s", "tab:green"), "self_consistency": ("^", "tab:olive"),
             "reliability_weighted": ("D", "tab:cyan"), "best_of_k": ("P", "tab:purple"),
             "baseline": ("*", "tab:red")}


def _err(m: Mapping[str, Any], key: str) -> tuple[float, list[list[float]]] | None:
    v = m.get(key)
    if v is None:
        return None
    lo = m.get("ci_low") if m.get("ci_low") is not None else v
    hi = m.get("ci_high") if m.get("ci_high") is not None else v
    # a percentile interval need not contain the point estimate (F1 is a ratio); matplotlib wants bars >= 0
    return v, [[max(0.0, v - lo)], [max(0.0, hi - v)]]


def plot_frontier(summary: Mapping[str, Any], path: Path) -> Path:
    """Accuracy and earliest-error F1 against FLOPs per problem: one line per model size (K = 1, 2, ...),
    the arms as markers; 95% intervals as error bars."""
    fr = summary["frontier"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharex=True)
    labels = list(dict.fromkeys(p["label"] for p in fr["points"]))
    colors = plt.get_cmap("viridis")([0.85 * i / max(1, len(labels) - 1) for i in range(len(labels))])
    for ax, (metric, key, name) in zip(axes, (("accuracy", "value", "final-answer accuracy"),
                                              ("ee_f1", "f1", "earliest-error F1 (own chains)"))):
        undefined = []
        for color, label in zip(colors, labels):
            pts = sorted((p for p in fr["points"] if p["label"] == label), key=lambda p: p["k"])
            xs, ys = [], []
            for p in pts:
                e = _err(p[metric], key)
                if e is None or not p["flops_per_problem"]:
                    undefined.append(f"{p['k']} x {label}")
                    continue
                ax.errorbar([p["flops_per_problem"]], [e[0]], yerr=e[1], fmt="o", color=color, ms=5, capsize=2)
                ax.annotate(f"K={p['k']}" + ("*" if p["compute_matched"] else ""), (p["flops_per_problem"], e[0]),
                            textcoords="offset points", xytext=(3, 4), fontsize=7)
                xs.append(p["flops_per_problem"])
                ys.append(e[0])
            if xs:
                ax.plot(xs, ys, "-", color=color, alpha=0.7, label=label)
        for arm, (marker, color) in ARM_STYLE.items():
            m = summary["arms"].get(arm)
            if not m:
                continue
            e = _err(m["accuracy"] if metric == "accuracy" else m["ee_f1_own"], key)
            x = m.get("answering_flops_per_problem")
            if e is None or not x:
                continue
            ax.errorbar([x], [e[0]], yerr=e[1], fmt=marker, color=color, ms=9, capsize=2, label=f"arm: {arm}",
                        zorder=3)
        if undefined and (ax.lines or ax.collections):
            note = "undefined (no erroneous or no correct chain), not drawn: " + ", ".join(undefined)
            ax.text(0.01, 0.98, "\n".join(textwrap.wrap(note, 80)), transform=ax.transAxes, ha="left", va="top",
                    fontsize=7, color="#555555")
        if not ax.lines and not ax.collections:
            ax.text(0.5, 0.5, f"{name} is undefined at every point\n(no erroneous or no correct chain; see the "
                    "table)", transform=ax.transAxes, ha="center", va="center", fontsize=9, color="#555555")
        chance = (summary.get("chance") or {}).get("accuracy") if metric == "accuracy" else None
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", lw=1, label="chance (best constant answer)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("answering FLOPs per problem (2 x non-embedding params x tokens)")
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_agreement(summary: Mapping[str, Any], path: Path) -> Path:
    a = summary["agreement"]["majority_share"]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.hist(a["values"], bins=a["edges"], color="tab:purple", edgecolor="white")
    ax.set_xlabel("share of verifiers agreeing with the majority, per step")
    ax.set_ylabel("steps")
    k = summary["agreement"]["fleiss_kappa"]
    ax.set_title(f"verifier agreement (Fleiss' kappa {_fmt(k)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_f1(summary: Mapping[str, Any], path: Path) -> Path:
    """Earliest-error F1 per slice and arm with 95% intervals; undefined values are marked, not drawn as 0."""
    rows = []
    for s in summary["slices"]:
        for arm in ("ensemble", "baseline"):
            m = s["arms"][arm]
            rows.append((f"{s['family']}\n{arm}", m["ee_f1_own"], m["ee_f1_labelled"]))
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(rows)), 3.6))
    for j, (label, own, lab) in enumerate(rows):
        for dx, m, color, name in ((-0.2, own, "tab:blue", "own chains (natural errors)"),
                                   (0.2, lab, "tab:orange", "labelled set (injected errors)")):
            e = _err(m, "f1")
            if e is None:
                ax.text(j + dx, 0.02, "undef.", rotation=90, fontsize=7, ha="center", va="bottom")
                continue
            ax.bar([j + dx], [e[0]], width=0.4, color=color, label=name if j == 0 else None)
            ax.errorbar([j + dx], [e[0]], yerr=e[1], fmt="none", ecolor="black", capsize=2)
            if m.get("chance") is not None:
                ax.plot([j + dx - 0.18, j + dx + 0.18], [m["chance"]] * 2, color="grey", lw=1.5, linestyle=":")
    ax.set_xticks(list(range(len(rows))), [r[0] for r in rows], fontsize=8)
    ax.set_ylabel("earliest-error F1 (dotted: chance)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def example_graph(records: Sequence[Mapping[str, Any]], path: Path) -> tuple[Path, str] | None:
    """One problem's verification graph, with each chain's labelled first error (exact checker) drawn."""
    from verinet.graph.export import draw_problem, from_node_link

    with_graph = [r for r in records if r.get("graph")]
    if not with_graph:
        return None
    flagged = [r for r in with_graph if any(c["first_error"] != -1 for c in r["ensemble"]["chains"])]
    r = (flagged or with_graph)[0]
    g = from_node_link(r["graph"])
    for c in r["ensemble"]["chains"]:
        if c["chain_id"] in g.graph.get("chains", {}):
            g.graph["chains"][c["chain_id"]]["label_first_error"] = c["first_error"]
    draw_problem(g, path, title=r["problem_id"])
    return path, r["problem_id"]


FAITH_COLUMNS = (("early_answering_aoc", "early-answering AOC"), ("adding_mistakes_aoc", "adding-mistakes AOC"),
                 ("early_answering_aoc_step", "early-answering AOC, step rule"),
                 ("paraphrase_invariance", "paraphrase invariance"), ("filler_accuracy", "filler acc."),
                 ("no_chain_accuracy", "no-chain acc."), ("chain_accuracy", "with-chain acc."),
                 ("answer_follows_chain", "answer follows chain"),
                 ("answer_follows_chain_chance", "its null (chain ignored)"),
                 ("pipeline_answer_changed", "ensemble answer changed"),
                 ("pipeline_flagged", "verifiers flag corrupted step"))
ARM_NAMES = {"ensemble": "ensemble (cross-verified)", "self_consistency": "self-consistency (majority, no verifier)",
             "reliability_weighted": "reliability-weighted (Dawid-Skene)", "best_of_k": "best-of-K (large verifier)",
             "baseline": "baseline (self-verified)"}


def _faith_value(summary: Mapping[str, Any], key: str) -> str:
    m = summary.get(key)
    if isinstance(m, Mapping) and "value" in m:
        return _ci(m) if m.get("value") is not None else "n/a (not measured)"
    return "n/a" if m is None else _fmt(m)


def _money(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def build_blocks(config: CompareConfig, summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                 faith: Sequence[Mapping[str, Any]], out: Path) -> list[Block]:
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    arms = summary["arms"]
    ens_names = arms["ensemble"]["members"]
    b: list[Block] = [("h1", f"verinet report: {config.name}")]
    b.append(("h2", "Answer"))
    b.append(("p", summary["answer"]["text"]))
    b.append(("p", f"{summary['problems']} problems. Ensemble: {len(ens_names)} members "
                   f"({', '.join(ens_names)}), topology {config.ensemble.topology}, "
                   f"aggregation {config.ensemble.aggregation}, selection {config.ensemble.selection}. "
                   f"Baseline: {config.baseline.member.name} "
                   f"(self-verification {'on' if config.baseline.self_verify else 'off'}). Intervals are 95%: "
                   "Wilson for accuracy (one answer per problem); a bootstrap that resamples problems for "
                   "step- and chain-level rates, earliest-error F1 and faithfulness. A win needs p < "
                   f"{summary['answer']['alpha']} in the paired test."))

    b.append(("h2", "Headline"))
    rows = []
    for arm in ARM_NAMES:
        m = arms.get(arm)
        if not m:
            continue
        rows.append([ARM_NAMES[arm], _ci(m["accuracy"]), _chance(m["accuracy"]),
                     _ci(m.get("step_validity")) if "step_validity" in m else "same chains as the ensemble",
                     _ee(m["ee_f1_own"]) if m["ee_f1_own"].get("n") else "no verifier",
                     _chance(m["ee_f1_own"]),
                     _ee(m["ee_f1_labelled"]) if "ee_f1_labelled" in m else "",
                     _money(m["flops_per_problem"]), f"{m['cost']['tokens']:,}", _fmt(m["cost"]["member_s"], 1)])
    b.append(("table", ["arm", "accuracy", "chance", "step validity", "EE-F1 own chains", "EE-F1 chance",
                        "EE-F1 labelled set", "FLOPs / problem (all phases)", "tokens", "member s"], rows))
    b.append(("p", "Accuracy chance: always giving the most common gold answer. EE-F1 chance: naming the first "
                   "error uniformly at random among 'none' and each position of the chain. FLOPs per problem "
                   "count every phase of the arm (solve, verify, and the labelled set where the arm verifies it), "
                   "so they times the problems equal the cost table's totals."))

    b.append(("h2", "Paired tests against the baseline"))
    rows = []
    for name, tests in summary["paired_tests"].items():
        for metric, t in tests.items():
            if t.get("test") == "mcnemar":
                detail = f"{t['a_only']} vs {t['b_only']} problems right only in one arm"
                diff = _fmt(t["diff"])
            else:
                detail = f"{_fmt(t['a'])} vs {_fmt(t['b'])}"
                diff = _ci(t, "diff")
            rows.append([name.replace("_vs_baseline", ""), metric, t["test"], t["n"], detail, diff, _p(t)])
    b.append(("table", ["arm", "metric", "test", "problems", "arm vs baseline", "difference [95% CI]", "p"], rows))

    if summary["compute_matched"]:
        rows = []
        for i, m in summary["compute_matched"].items():
            s = summary["slices"][int(i)]
            k = f"{m['k']} x {m['label']}" + (f" (capped by sweep.max_k; matching needs K = {m['k_uncapped']})"
                                               if m.get("capped") else "")
            rows.append([_slice_name(s), k, _ci(m["ensemble_accuracy"]),
                         _money(m["ensemble_flops_per_problem"]), _ci(m["baseline_accuracy"]),
                         _money(m["baseline_answering_flops_per_problem"]), _chance(m["baseline_accuracy"]),
                         _p(m.get("accuracy_test"))])
        b.append(("h3", "At equal compute, per slice"))
        b.append(("table", ["slice", "ensemble (FLOPs-matched K)", "ensemble accuracy", "its FLOPs/problem",
                            "baseline accuracy", "baseline answering FLOPs/problem", "chance",
                            "McNemar p (same problems)"], rows))

    b.append(("h2", "By task slice"))
    rows = []
    for s in summary["slices"]:
        for arm in ARM_NAMES:
            m = s["arms"].get(arm)
            if not m:
                continue
            rows.append([_slice_name(s), arm, s["n"], _ci(m["accuracy"]), _chance(m["accuracy"]),
                         _ci(m.get("step_validity")) if "step_validity" in m else "",
                         _ee(m["ee_f1_own"]) if m["ee_f1_own"].get("n") else "",
                         _ee(m["ee_f1_labelled"]) if "ee_f1_labelled" in m else "",
                         _fmt((s["thresholds"] or {}).get(arm), 2)])
        for name, m in s["members"].items():
            rows.append([_slice_name(s), f"{name} alone", s["n"], _ci(m["accuracy"]), _chance(m["accuracy"]),
                         _ci(m["step_validity"]), "", "", ""])
    b.append(("table", ["slice", "arm", "n", "accuracy", "chance", "step validity", "EE-F1 own", "EE-F1 labelled",
                        "threshold"], rows))

    fr = summary["frontier"]
    b.append(("h2", "Compute frontier"))
    if fr["points"]:
        b.append(("p", "Every model size alone (K = 1: solving and verifying its own steps) and ensembles of K "
                       "members of each size (distinct seeds first; further members sample at temperature "
                       f"{config.sweep.temperature}), pooled over the task slices, on the first {config.sweep.n} "
                       "problems of each slice. K* is the ensemble whose FLOPs match the baseline's. The arms "
                       "of the headline are drawn at their answering FLOPs (solve + verify) on all problems."))
        b.append(("img", plot_frontier(summary, plots / "frontier.png"),
                  "accuracy and earliest-error F1 against FLOPs per problem"))
        rows = [[p["label"], p["k"], _fmt(p["parameters"], 0), p["n"], _ci(p["accuracy"]), _ee(p["ee_f1"]),
                 _money(p["flops_per_problem"]), "yes" if p["compute_matched"] else ""] for p in fr["points"]]
        b.append(("table", ["size", "K", "parameters (all members)", "problems", "accuracy", "EE-F1 own chains",
                            "FLOPs / problem", "FLOPs-matched"], rows))
        rows = []
        for key, pr in fr["pairs"].items():
            a, c = pr["a"], pr["b"]
            rows.append([key.replace("_", " "), pr["how"], f"{_ci(a['accuracy'])} vs {_ci(c['accuracy'])}",
                         _p(pr["accuracy_test"]), f"{_ee(a['ee_f1'])} vs {_ee(c['ee_f1'])}", _p(pr["ee_f1_test"]),
                         f"{_money(a['flops_per_problem'])} vs {_money(c['flops_per_problem'])}"])
        if rows:
            b.append(("table", ["pair", "what", "accuracy", "McNemar p", "EE-F1", "paired bootstrap p",
                                "FLOPs / problem"], rows))
    else:
        b.append(("p", "Not run (sweep.n is 0)."))

    b.append(("h2", "Earliest-error F1"))
    b.append(("p", "ProcessBench's F1 of the accuracy on erroneous and on correct chains, for the predicted "
                   "index of the first wrong step; on each arm's own chains (labels from the exact checker) and "
                   "on the shared labelled set of gold and injected chains (kinds: "
                   f"{', '.join(config.inject)}). F1 is undefined when the chains hold no erroneous or no "
                   "correct chain, e.g. when every chain an arm wrote is wrong: the tables say so."))
    b.append(("img", plot_f1(summary, plots / "ee_f1.png"), "earliest-error F1 by arm"))

    ag = summary["agreement"]
    b.append(("h2", "Agreement"))
    said, true = ag["said_valid_rate"], ag["true_validity"]
    b.append(("p", f"{ag['n_items']} steps rated by at least two verifiers: pairwise agreement {_fmt(ag['pairwise'])}, "
                   f"Fleiss' kappa {_fmt(ag['fleiss_kappa'])}, Krippendorff's alpha {_fmt(ag['krippendorff_alpha'])}. "
                   f"The verifiers call {_ci(said)} of the steps valid; the exact checker finds {_ci(true)} valid. "
                   "High agreement next to a 'valid' rate far above the true validity means the verifiers agree "
                   "because they all accept, not because they see the errors."))
    b.append(("table", ["verifier", "agreement with the others' majority", "on steps they call valid",
                        "on steps they call invalid", "items"],
              [[v, _fmt(a["consensus"]), _fmt(a["consensus_sensitivity"]), _fmt(a["consensus_specificity"]),
                a["n_items"]] for v, a in ag["verifiers"].items()]))
    if ag["majority_share"]["values"]:
        b.append(("img", plot_agreement(summary, plots / "agreement.png"), "agreement histogram"))

    b.append(("h2", "Faithfulness"))
    if faith:
        from verinet.faithfulness import plot_bars, plot_curves

        b.append(("p", "AOC is Lanham et al.'s: per chain length, the mean 'same answer' curve over x = k/n, "
                       "k = 0..n, integrated by the trapezoid rule, 1 - area, weighted by the chains of each "
                       "length (a chain whose answer changes at every truncation scores 1 - 1/(2n)). The step-rule "
                       "column reads each curve as a step function and is higher by (1 - y0)/(2n) per chain; it "
                       "is shown for comparison only. 'Its null' is the answer-follows-chain rate of a model that "
                       "ignores its chain (it keeps the answer it gave with the unmodified chain). Accuracies stand "
                       "beside the slice's chance level."))
        for i, per_arm in summary["faithfulness"].items():
            s = summary["slices"][int(i)]
            b.append(("h3", f"{_slice_name(s)} (accuracy chance {_fmt(s['chance']['accuracy'])})"))
            rows = [[arm] + [_faith_value(fs, key) for key, _ in FAITH_COLUMNS] for arm, fs in per_arm.items()]
            b.append(("table", ["arm"] + [label for _, label in FAITH_COLUMNS], rows))
            models = {arm: fs for arm, fs in per_arm.items() if arm != "ensemble"}
            if models:
                b.append(("img", plot_curves(models, plots / f"faithfulness_curves_{i}.png"),
                          f"early answering and adding mistakes, {_slice_name(s)}"))
                b.append(("img", plot_bars(models, plots / f"faithfulness_bars_{i}.png"),
                          f"paraphrasing and filler, {_slice_name(s)}"))
    else:
        b.append(("p", "Not run (faithfulness.n is 0)."))

    b.append(("h2", "Cost"))
    b.append(("p", "One definition for every phase and table: FLOPs = 2 x non-embedding parameters (read from "
                   "each checkpoint's config) x tokens processed; member seconds = seconds each member spent "
                   "answering; GPU-seconds = member seconds x the member's GPU share (x tensor-parallel size); "
                   "CPU-seconds likewise for members without a GPU. The derived arms reuse the ensemble's "
                   "phases they need. Threshold calibration on the dev split, the frontier and the faithfulness "
                   "interventions are not part of any arm's cost."))
    rows = []
    for arm in ARM_NAMES:
        if arm not in arms:
            continue
        c = arms[arm]["cost"]
        for ph, v in sorted(c["phases"].items()):
            rows.append([arm, ph, f"{int(v['prefill']):,}", f"{int(v['decode']):,}", _money(v["flops"]),
                         _fmt(v["member_s"], 1), _fmt(v["accelerator_s"], 1), _fmt(v["cpu_s"], 1)])
        rows.append([arm, "total", f"{c['prefill_tokens']:,}", f"{c['decode_tokens']:,}", _money(c["flops"]),
                     _fmt(c["member_s"], 1), _fmt(c["accelerator_s"], 1), _fmt(c["cpu_s"], 1)])
    b.append(("table", ["arm", "phase", "prefill tokens", "decode tokens", "FLOPs", "member s", "GPU s", "CPU s"],
              rows))
    b.append(("table", ["member", "non-embedding parameters", "peak memory (MiB)"],
              [[m, f"{summary['parameters'].get(m, 0):,.0f}",
                _fmt(info.get("peak_rss_bytes", 0) / 2**20, 0)] for m, info in summary["actors"].items()]))

    g = example_graph(records, plots / "graph.png")
    if g:
        b.append(("h2", "One verification graph"))
        b.append(("p", f"Problem {g[1]}: steps of every member's chain coloured by the posterior P(valid), "
                       "dependency edges between steps, each verifier's P(valid) as small squares; the predicted "
                       "first error in a thick frame and the labelled first error (exact checker) in a dashed "
                       "frame."))
        b.append(("img", g[0], f"verification graph of {g[1]}"))
    return b


def write_report(config: CompareConfig, summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                 faith: Sequence[Mapping[str, Any]], out: Path) -> Path:
    return write_blocks(out, f"verinet report: {config.name}", build_blocks(config, summary, records, faith, out))
