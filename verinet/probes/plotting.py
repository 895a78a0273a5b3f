"""Probe figures: panels of lines with 95% interval error bars, drawn with matplotlib (Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Point = tuple[float, Mapping[str, Any] | None]  # (x, {"value", "ci_low", "ci_high"})


def plot_lines(panels: Mapping[str, Mapping[str, Sequence[Point]]], path: Path, *, xlabel: str,
               titles: Mapping[str, str] | None = None, logx: bool = True,
               chance: Mapping[str, float] | None = None, ylabel: str | None = None) -> Path:
    """One panel per key of ``panels``; in each, one line per series with its 95% intervals as error bars.
    ``chance[panel]`` draws a dashed chance line."""
    n = len(panels)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (key, series) in zip(axes.flat, panels.items()):
        for label, points in series.items():
            pts = sorted(((x, f) for x, f in points if f is not None and f.get("value") is not None),
                         key=lambda p: p[0])
            if not pts:
                continue
            xs = [x for x, _ in pts]
            ys = [f["value"] for _, f in pts]
            lo = [f["value"] - (f["ci_low"] if f.get("ci_low") is not None else f["value"]) for _, f in pts]
            hi = [(f["ci_high"] if f.get("ci_high") is not None else f["value"]) - f["value"] for _, f in pts]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
        if chance and key in chance:
            ax.axhline(chance[key], ls="--", c="gray", lw=1, label="chance")
        if logx:
            ax.set_xscale("log")
        ax.set_title((titles or {}).get(key, key), fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        if ylabel:
            ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["plot_lines"]
