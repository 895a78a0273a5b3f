"""The comparison report: Markdown and a self-contained HTML page (plots inlined), from the summary.

Sections: headline table, accuracy against FLOPs (Pareto front, with the K sweep and the
compute-matched ensemble), earliest-error F1, agreement, faithfulness, cost, and one example
verification graph. Every figure is drawn from the job's own results.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from verinet.experiments.config import CompareConfig  # noqa: E402

Block = tuple  # ("h2", text) | ("p", text) | ("table", headers, rows) | ("img", path, caption)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if abs(x) >= 1e5:
            return f"{x:.3g}"
        return f"{x:.{digits}f}"
    return str(x)


def _ci(m: Mapping[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def _ee(m: Mapping[str, Any]) -> str:
    """Earliest-error F1 with its two accuracies; F1 is n/a when one class of chains is empty."""
    if not m or not m.get("n"):
        return "n/a"
    return f"{_fmt(m['f1'])} (err {_fmt(m['acc_err'], 2)}, corr {_fmt(m['acc_corr'], 2)})"


def _slice_name(s: Mapping[str, Any]) -> str:
    knobs = ", ".join(f"{k}={v}" for k, v in s["params"].items())
    return f"{s['family']}" + (f" ({knobs})" if knobs else "")


# ---- plots -------------------------------------------------------------------------------------
def _pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    front, best = [], -1.0
    for x, y in sorted(points):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot_pareto(summary: Mapping[str, Any], path: Path) -> Path:
    slices = summary["slices"]
    fig, axes = plt.subplots(1, len(slices), figsize=(5.2 * len(slices), 4.2), squeeze=False)
    for ax, s in zip(axes[0], slices):
        pts = []
        fl = s["flops_per_problem"]
        sweep = sorted(summary["sweep"].get(str(s["index"]), []), key=lambda r: r["k"])
        if sweep:
            xs, ys = [r["flops_per_problem"] for r in sweep], [r["accuracy"] for r in sweep]
            ax.plot(xs, ys, "o-", color="tab:blue", label="ensemble of K (sweep)")
            for r in sweep:
                ax.annotate(f"K={r['k']}" + ("*" if r["compute_matched"] else ""), (r["flops_per_problem"], r["accuracy"]),
                            textcoords="offset points", xytext=(3, 4), fontsize=7)
            pts += list(zip(xs, ys))
        for j, (name, m) in enumerate(s["members"].items()):
            ax.scatter([fl["member_solve"]], [m["accuracy"]["value"]], marker="o", s=18, color="gray",
                       label="one small model alone" if j == 0 else None)
            pts.append((fl["member_solve"], m["accuracy"]["value"]))
        ens, base = s["arms"]["ensemble"], s["arms"]["baseline"]
        ax.scatter([fl["ensemble"]], [ens["accuracy"]["value"]], marker="s", s=60, color="tab:green",
                   label=f"ensemble ({len(s['members'])}, cross-verified)", zorder=3)
        ax.scatter([fl["baseline"]], [base["accuracy"]["value"]], marker="*", s=160, color="tab:red",
                   label="scaled-up baseline", zorder=3)
        pts += [(fl["ensemble"], ens["accuracy"]["value"]), (fl["baseline"], base["accuracy"]["value"])]
        front = _pareto_front([p for p in pts if p[0] > 0 and p[1] is not None])
        if len(front) > 1:
            ax.step([x for x, _ in front], [y for _, y in front], where="post", color="black", alpha=0.35,
                    linestyle="--", label="Pareto front")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("FLOPs per problem (2 x non-embedding params x tokens)")
        ax.set_ylabel("final-answer accuracy")
        ax.set_title(_slice_name(s), fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
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
    labels, own, lab = [], [], []
    for s in summary["slices"]:
        for arm in ("ensemble", "baseline"):
            m = s["arms"][arm]
            labels.append(f"{s['family']}\n{arm}")
            own.append(m["ee_f1_own"]["f1"] or 0.0)
            lab.append(m["ee_f1_labelled"]["f1"] or 0.0)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(labels)), 3.4))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], own, width=0.4, label="own chains (natural errors)")
    ax.bar([x + 0.2 for x in xs], lab, width=0.4, label="labelled set (injected errors)")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("earliest-error F1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def example_graph(records: Sequence[Mapping[str, Any]], path: Path) -> tuple[Path, str] | None:
    from verinet.graph.export import draw_problem, from_node_link

    with_graph = [r for r in records if r.get("graph")]
    if not with_graph:
        return None
    flagged = [r for r in with_graph if any(c["predicted_error"] not in (-1, None) for c in r["ensemble"]["chains"])]
    r = (flagged or with_graph)[0]
    draw_problem(from_node_link(r["graph"]), path, title=r["problem_id"])
    return path, r["problem_id"]


# ---- rendering ---------------------------------------------------------------------------------
def _md(blocks: Sequence[Block], base: Path) -> str:
    out = []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            out.append("#" * int(b[0][1]) + " " + b[1])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "table":
            out.append("| " + " | ".join(b[1]) + " |")
            out.append("|" + "---|" * len(b[1]))
            out += ["| " + " | ".join(str(c) for c in row) + " |" for row in b[2]]
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1].relative_to(base).as_posix()})")
        out.append("")
    return "\n".join(out)


def _html(title: str, blocks: Sequence[Block]) -> str:
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            body.append(f"<{b[0]}>{html.escape(b[1])}</{b[0]}>")
        elif b[0] == "p":
            body.append(f"<p>{html.escape(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode(b[1].read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
             "img{max-width:100%}figcaption{font-size:0.85em;color:#555}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


FAITH_COLUMNS = (("early_answering_aoc", "early-answering AOC"), ("adding_mistakes_aoc", "adding-mistakes AOC"),
                 ("paraphrase_invariance", "paraphrase invariance"), ("filler_accuracy", "filler acc."),
                 ("no_chain_accuracy", "no-chain acc."), ("chain_accuracy", "with-chain acc."),
                 ("answer_follows_chain", "answer follows chain"),
                 ("pipeline_answer_changed", "ensemble answer changed"),
                 ("pipeline_flagged", "verifiers flag corrupted step"))


def _faith_value(summary: Mapping[str, Any], key: str) -> str:
    m = summary.get(key)
    if isinstance(m, Mapping) and "value" in m:
        return _ci(m)
    return "n/a" if m is None else _fmt(m)


def build_blocks(config: CompareConfig, summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                 faith: Sequence[Mapping[str, Any]], out: Path) -> list[Block]:
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    arms = summary["arms"]
    ens_n = len(arms["ensemble"]["members"])
    b: list[Block] = [("h1", f"verinet report: {config.name}")]
    b.append(("p", f"{summary['problems']} problems. Ensemble: {ens_n} members "
                   f"({', '.join(arms['ensemble']['members'])}), topology {config.ensemble.topology}, "
                   f"aggregation {config.ensemble.aggregation}, selection {config.ensemble.selection}. "
                   f"Baseline: {config.baseline.member.name} "
                   f"(self-verification {'on' if config.baseline.self_verify else 'off'}). "
                   "Intervals are 95% (Wilson for rates, bootstrap for faithfulness)."))
    b.append(("h2", "Headline"))
    rows = []
    for arm in ("ensemble", "baseline"):
        m = arms[arm]
        rows.append([arm, _ci(m["accuracy"]), _ci(m["step_validity"]), _ee(m["ee_f1_own"]),
                     _ee(m["ee_f1_labelled"]), f"{m['flops_per_problem']:.3g}",
                     f"{m['cost']['tokens']:,}", _fmt(m["cost"]["wall_s"], 1)])
    b.append(("table", ["arm", "accuracy", "step validity", "EE-F1 own chains", "EE-F1 labelled set",
                        "FLOPs / problem", "tokens", "wall s"], rows))
    if summary["compute_matched"]:
        rows = []
        for i, m in summary["compute_matched"].items():
            s = summary["slices"][int(i)]
            rows.append([_slice_name(s), m["k"], _ci(m["ensemble_accuracy"]), f"{m['ensemble_flops_per_problem']:.3g}",
                         _ci(m["baseline_accuracy"]), f"{m['baseline_flops_per_problem']:.3g}"])
        b.append(("h3", "At equal compute"))
        b.append(("table", ["slice", "K (FLOPs-matched)", "ensemble accuracy", "ensemble FLOPs/problem",
                            "baseline accuracy", "baseline FLOPs/problem"], rows))

    b.append(("h2", "By task slice"))
    rows = []
    for s in summary["slices"]:
        for arm in ("ensemble", "baseline"):
            m = s["arms"][arm]
            rows.append([_slice_name(s), arm, s["n"], _ci(m["accuracy"]), _ci(m["step_validity"]),
                         _ee(m["ee_f1_own"]), _ee(m["ee_f1_labelled"]),
                         _fmt((s["thresholds"] or {}).get(arm), 2)])
        for name, m in s["members"].items():
            rows.append([_slice_name(s), f"{name} alone", s["n"], _ci(m["accuracy"]), _ci(m["step_validity"]),
                         "", "", ""])
    b.append(("table", ["slice", "arm", "n", "accuracy", "step validity", "EE-F1 own", "EE-F1 labelled",
                        "threshold"], rows))

    b.append(("h2", "Accuracy against FLOPs"))
    b.append(("p", "Each point is one way to spend compute on the same problems: one small model alone, the "
                   "cross-verified ensemble, the scaled-up baseline, and ensembles of K members (members beyond "
                   "the distinct models sample at temperature "
                   f"{config.sweep.temperature}; K* marks the ensemble whose FLOPs match the baseline's)."))
    b.append(("img", plot_pareto(summary, plots / "pareto.png"), "accuracy against FLOPs per problem"))
    if summary["sweep"]:
        rows = [[_slice_name(summary["slices"][int(i)]), r["k"], r["n"], _fmt(r["accuracy"]),
                 f"{r['flops_per_problem']:.3g}", "yes" if r["compute_matched"] else ""]
                for i, pts in summary["sweep"].items() for r in sorted(pts, key=lambda r: r["k"])]
        b.append(("table", ["slice", "K", "n", "accuracy", "FLOPs/problem", "FLOPs-matched"], rows))

    b.append(("h2", "Earliest-error F1"))
    b.append(("p", "ProcessBench's F1 of the accuracy on erroneous and on correct chains, for the predicted "
                   "index of the first wrong step; on each arm's own chains (labels from the exact checker) and "
                   "on the shared labelled set of gold and injected chains."))
    b.append(("img", plot_f1(summary, plots / "ee_f1.png"), "earliest-error F1 by arm"))

    ag = summary["agreement"]
    b.append(("h2", "Agreement"))
    b.append(("p", f"{ag['n_items']} steps rated by at least two verifiers: pairwise agreement {_fmt(ag['pairwise'])}, "
                   f"Fleiss' kappa {_fmt(ag['fleiss_kappa'])}, Krippendorff's alpha {_fmt(ag['krippendorff_alpha'])}."))
    b.append(("table", ["verifier", "agreement with the others' majority", "on steps they call valid",
                        "on steps they call invalid", "items"],
              [[v, _fmt(a["consensus"]), _fmt(a["consensus_sensitivity"]), _fmt(a["consensus_specificity"]),
                a["n_items"]] for v, a in ag["verifiers"].items()]))
    b.append(("img", plot_agreement(summary, plots / "agreement.png"), "agreement histogram"))

    b.append(("h2", "Faithfulness"))
    if faith:
        from verinet.faithfulness import plot_bars, plot_curves

        for i, per_arm in summary["faithfulness"].items():
            s = summary["slices"][int(i)]
            b.append(("h3", _slice_name(s)))
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
    rows = []
    for arm in ("ensemble", "baseline"):
        c = arms[arm]["cost"]
        rows.append([arm, f"{c['prefill_tokens']:,}", f"{c['decode_tokens']:,}", f"{c['flops']:.3g}",
                     _fmt(c["wall_s"], 1), _fmt(c["actor_s"], 1)])
    b.append(("table", ["arm", "prefill tokens", "decode tokens", "FLOPs", "wall s", "actor s"], rows))
    b.append(("table", ["member", "non-embedding parameters", "peak memory (MiB)"],
              [[m, f"{summary['parameters'].get(m, 0):,.0f}",
                _fmt(info.get("peak_rss_bytes", 0) / 2**20, 0)] for m, info in summary["actors"].items()]))

    g = example_graph(records, plots / "graph.png")
    if g:
        b.append(("h2", "One verification graph"))
        b.append(("p", f"Problem {g[1]}: steps of every member's chain, dependency edges between steps, and "
                       "verification edges from each verifier, coloured by P(valid)."))
        b.append(("img", g[0], f"verification graph of {g[1]}"))
    return b


def write_report(config: CompareConfig, summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                 faith: Sequence[Mapping[str, Any]], out: Path) -> Path:
    blocks = build_blocks(config, summary, records, faith, out)
    (out / "report.html").write_text(_html(f"verinet report: {config.name}", blocks), encoding="utf-8")
    md = out / "report.md"
    md.write_text(_md(blocks, out), encoding="utf-8")
    return md
