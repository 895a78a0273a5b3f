"""Plots in the style of Lanham et al. 2023: answer curves under truncation and mistakes; bars.

Both functions take ``{label: summary}`` (summaries from :func:`summarize`; the order of the
dict is the order of the legend, e.g. model sizes from small to large) and write a PNG.
They use matplotlib's object API on the Agg canvas, so they never touch pyplot's global
backend and run on machines without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CURVES = (("early_answering", "early answering", "share of the chain given before answering (k/n)",
           "early_answering_aoc"),
          ("adding_mistakes", "adding mistakes", "position of the mistake in the chain (k/n)",
           "adding_mistakes_aoc"))
ACCURACIES = (("chain_accuracy", "with chain"), ("no_chain_accuracy", "no chain"),
              ("filler_accuracy", "filler"))


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(1, n - 1)) for i in range(n)]


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def plot_curves(summaries: dict[str, dict[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Early-answering and adding-mistakes curves ("same answer as with the full chain"), one line per label."""
    path = Path(path)
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    colors = _colors(len(summaries))
    for ax, (key, name, xlabel, aoc_key) in zip(axes, CURVES):
        for color, (label, s) in zip(colors, summaries.items()):
            c = s.get("curves", {}).get(key)
            if not c or not any(y is not None for y in c["y"]):
                continue
            aoc = s.get(aoc_key, {}).get("value")
            tag = f"{label} (AOC {aoc:.2f})" if aoc is not None else label
            # each chain's curve joins its points at k/n by straight lines, as the trapezoid AOC integrates it
            x, y, lo, hi = c["x"], [_num(v) for v in c["y"]], c["ci_low"], c["ci_high"]
            ax.plot(x, y, color=color, label=tag)
            ax.fill_between(x, [_num(v) for v in lo], [_num(v) for v in hi], color=color, alpha=0.12, linewidth=0)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best", framealpha=0.8)
    axes[0].set_ylabel("same answer as with the full chain")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_bars(summaries: dict[str, dict[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Paraphrase invariance, and accuracy with the chain / with no chain / with filler, per label (95% CIs)."""
    import numpy as np

    path = Path(path)
    fig = _figure(11, 4.2)
    left, right = fig.subplots(1, 2, width_ratios=[1, 2])
    labels = list(summaries)
    xs = np.arange(len(labels))
    colors = _colors(len(labels))

    def bar(ax, x, fig_: dict[str, Any] | None, width: float, **kw) -> None:
        v = _num((fig_ or {}).get("value"))
        lo, hi = _num((fig_ or {}).get("ci_low")), _num((fig_ or {}).get("ci_high"))
        err = [[max(0.0, v - lo)], [max(0.0, hi - v)]] if v == v and lo == lo else None
        ax.bar(x, 0 if v != v else v, width, yerr=err, capsize=3, **kw)

    for i, label in enumerate(labels):
        bar(left, xs[i], summaries[label].get("paraphrase_invariance"), 0.7, color=colors[i])
    left.set_title("paraphrasing: answer unchanged")
    left.set_xticks(xs, labels, rotation=30, ha="right")
    left.set_ylim(0, 1.05)
    left.grid(axis="y", alpha=0.3)

    width = 0.8 / len(ACCURACIES)
    shades = ["#2b6cb0", "#a0aec0", "#ed8936"]
    for j, (key, name) in enumerate(ACCURACIES):
        for i, label in enumerate(labels):
            bar(right, xs[i] + (j - 1) * width, summaries[label].get(key), width, color=shades[j],
                label=name if i == 0 else None)
    right.set_title("filler: accuracy with the chain, with no chain, with filler tokens")
    right.set_xticks(xs, labels, rotation=30, ha="right")
    right.set_ylim(0, 1.05)
    right.grid(axis="y", alpha=0.3)
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


__all__ = ["plot_bars", "plot_curves"]
