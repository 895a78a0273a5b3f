"""Export: node-link JSON, GraphML, and a picture of one problem's graph.

Node ids become strings: ``problem:<id>``, ``step:<chain>:<i>``, ``answer:<chain>``,
``verifier:<name>`` (:func:`node_key`); every node keeps its ``kind`` attribute, so nothing has to
be parsed back out of an id. Non-finite floats become ``None`` (JSON) or are left out (GraphML).
GraphML only holds scalars, so lists and dicts (``premises``, ``p_valids``, ``warnings``, the
graph's ``chains``) are written as JSON strings.

The picture draws each chain as a row of boxes, one per step and one for the answer line,
coloured by posterior P(valid) from red (invalid) to green (valid), grey where there is none. A
thick red frame and a red triangle mark the predicted first error, a black triangle the labelled
one when the chain carries a label; arrows are premise edges (curved when they skip steps). The
small squares under a box are the individual verifiers' P(valid), in the order of the legend.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import networkx as nx

_SCALARS = (str, int, float, bool)


def node_key(node: Hashable) -> str:
    """String id of a node: its tuple parts joined with ':' (``("step", "c1", 3)`` -> ``"step:c1:3"``)."""
    return ":".join(str(x) for x in node) if isinstance(node, tuple) else str(node)


def _json_value(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, _SCALARS) or x is None:
        return x
    if isinstance(x, dict):
        return {str(k): _json_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        items = sorted(x, key=str) if isinstance(x, (set, frozenset)) else x
        return [_json_value(v) for v in items]
    if hasattr(x, "item"):  # numpy scalar
        return _json_value(x.item())
    if hasattr(x, "model_dump"):
        return _json_value(x.model_dump())
    return str(x)


def _stringified(graph: nx.DiGraph, convert) -> nx.DiGraph:
    g = nx.DiGraph()
    g.graph.update({k: v for k, v in ((k, convert(v)) for k, v in graph.graph.items()) if v is not None})
    g.add_nodes_from(
        (node_key(n), {k: v for k, v in ((k, convert(v)) for k, v in d.items()) if v is not None})
        for n, d in graph.nodes(data=True)
    )
    g.add_edges_from(
        (node_key(u), node_key(v),
         {k: x for k, x in ((k, convert(x)) for k, x in d.items()) if x is not None})
        for u, v, d in graph.edges(data=True)
    )
    return g


def to_node_link(graph: nx.DiGraph) -> dict[str, Any]:
    """Node-link data (``edges="links"``) with string node ids and JSON-serialisable attributes."""
    return nx.node_link_data(_stringified(graph, _json_value), edges="links")


def from_node_link(data: dict[str, Any]) -> nx.DiGraph:
    """Inverse of :func:`to_node_link` (node ids stay strings)."""
    return nx.node_link_graph(data, directed=True, multigraph=False, edges="links")


def _graphml_value(x: Any) -> Any:
    x = _json_value(x)
    if x is None or isinstance(x, _SCALARS):
        return x
    return json.dumps(x)


def write_graphml(graph: nx.DiGraph, path: str | Path) -> Path:
    """Write GraphML with string node ids and scalar attributes (lists/dicts as JSON strings)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nx.write_graphml(_stringified(graph, _graphml_value), path)
    return path


def read_graphml(path: str | Path) -> nx.DiGraph:
    return nx.read_graphml(path)


# ---- picture ---------------------------------------------------------------------------------
def draw_problem(graph: nx.DiGraph, path: str | Path, *, max_steps: int = 16, title: str | None = None,
                 dpi: int = 110) -> Path:
    """Save a PNG of one problem's graph (see the module docstring). Needs no display.

    Reads the node attributes ``p_valid``/``p_supported`` and the per-chain ``earliest_error``,
    ``score``, ``accepted`` and ``label_first_error`` that :func:`verinet.graph.pipeline.annotate_graph`
    writes; missing ones are simply not drawn. Chains longer than ``max_steps`` show their first
    steps, the steps round a later predicted error and the answer line, with the gaps labelled.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, Rectangle
    from matplotlib.path import Path as MplPath

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmap, norm = colormaps["RdYlGn"], Normalize(0.0, 1.0)
    chains: dict[str, dict[str, Any]] = graph.graph.get("chains", {})
    verifiers = sorted(d["name"] for _, d in graph.nodes(data=True) if d.get("kind") == "verifier")
    vpos = {v: i for i, v in enumerate(verifiers)}
    nodes_by_chain: dict[str, dict[int, Hashable]] = {}
    for n, d in graph.nodes(data=True):
        if d.get("kind") in ("step", "answer"):
            nodes_by_chain.setdefault(d["chain_id"], {})[d["index"]] = n
    layouts = {cid: _row_layout(info.get("n_steps", 0), info.get("answer") is not None,
                                info.get("earliest_error"), max_steps) for cid, info in chains.items()}
    longest = max((max(xs.values(), default=0.0) + 1.5 for xs, _ in layouts.values()), default=2.0)
    rows = max(len(chains), 1)
    label_w = 2.6
    fig = Figure(figsize=(label_w + 1.25 * longest + 0.6, 1.0 + 1.45 * rows), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.9))
    ax.set_xlim(-label_w - 0.3, longest - 0.2)
    ax.set_ylim(-rows + 0.35, 0.75)
    ax.axis("off")
    heading = title or f"problem {graph.graph.get('problem_id', '?')}"
    fig.text(0.01, 0.975, heading, fontsize=12, weight="bold", va="top")
    legend = ("box colour: posterior P(valid) (red invalid -> green valid, grey none)\n"
              "thick blue frame + red ▼: predicted first error;  dashed black frame + black ▼: labelled first "
              "error (exact checker)")
    if verifiers:
        legend += f"\nsquares under a box: each verifier's P(valid), left to right: {', '.join(verifiers)}"
    fig.text(0.01, 0.935, legend, fontsize=8, va="top", color="#333333")

    for r, (cid, info) in enumerate(chains.items()):
        y = -r
        items = nodes_by_chain.get(cid, {})
        n = info.get("n_steps", 0)
        err = info.get("earliest_error")
        lab = info.get("label_first_error")
        xs, gaps = layouts[cid]
        xs = {i: x for i, x in xs.items() if i in items}
        shown = list(xs)
        # row label
        lines = [cid if len(cid) <= 34 else "…" + cid[-33:], f"author: {info.get('author', '?')}"]
        if info.get("score") is not None:
            lines.append(f"score {info['score']:.2f}" + ("  ✓ accepted" if info.get("accepted") else ""))
        if err is not None:
            what = ("none" if err == -1 else f"step {err}" if err < n
                    else "answer" if n in items else "no answer line")
            lines.append("predicted error: " + what)
        if err is not None and err not in xs and err != -1 and n in items:
            lines[-1] += " (not drawn)"
        if lab is not None:
            lines.append("labelled error: " + ("none" if lab == -1 else f"step {lab}" if lab < n else "answer"))
        ax.text(-label_w - 0.2, y, "\n".join(lines), fontsize=8, va="center", ha="left", family="monospace")
        if not items:
            ax.text(0.0, y, "(empty chain)", fontsize=9, va="center", style="italic", color="grey")
            continue
        # premise edges
        for i in shown:
            node = items[i]
            for pred in graph.predecessors(node):
                if graph.edges[pred, node].get("kind") != "depends":
                    continue
                j = graph.nodes[pred]["index"]
                if j not in xs or i not in xs:
                    continue
                x0, x1 = xs[j], xs[i]
                if abs(x1 - x0) <= 1.0:  # neighbours: a short straight arrow between the boxes
                    arrow = FancyArrowPatch((x0 + 0.42 * (1 if x1 > x0 else -1), y),
                                            (x1 - 0.42 * (1 if x1 > x0 else -1), y), arrowstyle="-|>",
                                            mutation_scale=9, lw=0.9, color="#555555", zorder=1)
                else:  # skips steps: a low arc over the boxes, kept below the row above
                    h = 0.14 + 0.05 * min(abs(x1 - x0) - 1, 4)
                    a, b = (x0 + 0.12, y + 0.28), (x1 - 0.12, y + 0.28)
                    curve = MplPath([a, (a[0], a[1] + h), (b[0], b[1] + h), b],
                                    [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4])
                    arrow = FancyArrowPatch(path=curve, arrowstyle="-|>", mutation_scale=8, lw=0.8,
                                            color="#555555", zorder=1)
                ax.add_patch(arrow)
        for i in shown:
            d = graph.nodes[items[i]]
            x = xs[i]
            p = d.get("p_valid")
            face = cmap(norm(p)) if p is not None else (0.85, 0.85, 0.85, 1.0)
            is_err = err is not None and err == i
            ax.add_patch(Rectangle((x - 0.42, y - 0.28), 0.84, 0.56, facecolor=face,
                                   edgecolor="#1f3fbf" if is_err else "#333333", lw=3.0 if is_err else 0.8,
                                   zorder=2))
            head = "answer" if d.get("kind") == "answer" else f"step {i}"
            body = textwrap.shorten(str(d.get("text", "")), 40, placeholder="…")
            body = "\n".join(textwrap.wrap(body, 14)[:2])
            ink = "white" if p is not None and _luminance(face) < 0.45 else "black"
            ax.text(x, y + 0.2, head, fontsize=7, ha="center", va="center", weight="bold", zorder=3,
                    color=ink)
            ax.text(x, y + 0.03, body, fontsize=6.5, ha="center", va="center", family="monospace", zorder=3,
                    color=ink)
            if p is not None:
                ps = d.get("p_supported")
                nums = f"v {p:.2f}" + (f"  s {ps:.2f}" if ps is not None else "")
                ax.text(x, y - 0.19, nums, fontsize=6.5, ha="center", va="center", zorder=3, color=ink)
            # verifier squares
            marks = sorted(((vpos[graph.nodes[u]["name"]], e.get("p_valid")) for u, _, e in
                            graph.in_edges(items[i], data=True) if e.get("kind") == "verifies"))
            for k, (pos, pv) in enumerate(marks):
                xm = x - 0.4 + 0.8 * (pos + 0.5) / max(len(verifiers), 1)
                ax.add_patch(Rectangle((xm - 0.05, y - 0.41), 0.1, 0.09, facecolor=cmap(norm(pv)),
                                       edgecolor="#333333", lw=0.4, zorder=2))
            if is_err:
                ax.plot([x], [y + 0.37], marker="v", color="#c00000", markersize=8, zorder=4)
            if lab is not None and lab == i and lab != -1:
                ax.plot([x + 0.25], [y + 0.37], marker="v", color="black", markersize=8, zorder=4)
                ax.add_patch(Rectangle((x - 0.46, y - 0.32), 0.92, 0.64, facecolor="none", edgecolor="black",
                                       lw=1.4, linestyle=(0, (3, 2)), zorder=3))
        for gx, skipped in gaps:
            ax.text(gx, y, f"… {skipped} steps …", fontsize=7, ha="center", va="center", color="#333333")
    fig.savefig(path, dpi=dpi)
    return path


def _row_layout(n: int, has_answer: bool, err: int | None, max_steps: int
                ) -> tuple[dict[int, float], list[tuple[float, int]]]:
    """x position of each drawn item, and (x, how many skipped) for each gap.

    Short chains are drawn whole. A long one shows its first steps, a window round the predicted
    error when that lies further on, and the answer line, with gaps in between.
    """
    if n <= max_steps:
        keep = list(range(n))
    else:
        window = set(range(err - 1, min(err + 2, n))) if err is not None and max_steps <= err < n else set()
        keep = sorted(set(range(max(max_steps - len(window) - (1 if window else 0), 1))) | window)
    if has_answer:
        keep.append(n)
    xs: dict[int, float] = {}
    gaps: list[tuple[float, int]] = []
    x, prev = 0.0, -1
    for i in keep:
        skipped = min(i, n) - prev - 1
        if skipped > 0:
            gaps.append((x, skipped))
            x += 1.0
        xs[i] = x
        x += 1.0
        prev = i
    if not has_answer and prev < n - 1:
        gaps.append((x, n - 1 - prev))
    return xs, gaps


def _luminance(rgba: tuple) -> float:
    r, g, b = rgba[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


__all__ = ["draw_problem", "from_node_link", "node_key", "read_graphml", "to_node_link", "write_graphml"]
