"""The verification graph of one problem: nodes and edges.

Nodes (ids are tuples; :mod:`verinet.graph.export` turns them into strings):

* ``("problem", problem_id)``;
* ``("step", chain_id, i)`` for every step of every chain, with attributes
  ``chain_id, author, index, text, premises, value, missing_premises`` (what the step uses that
  neither the question nor an earlier step states, from ``Step.missing_premises``; such a step is
  unsupported, see :mod:`verinet.graph.propagate`);
* ``("answer", chain_id)`` for every chain that has an answer. The answer line is
  verified like a step at index ``len(steps)``, so it also carries ``index``;
* ``("verifier", name)`` for every verifier with at least one verdict.

Every node has a ``kind`` attribute (``problem``, ``step``, ``answer``, ``verifier``).
Edges have a ``kind`` attribute too:

* ``poses``: problem -> every root item of a chain (a step, or the answer of an empty chain,
  with no dependency edge into it; step 0 is one unless forward references are kept);
* ``depends``: premise step -> step (from ``Step.premises``), and last step -> answer (Chain
  records carry no premises for the answer line; the family checkers read it against the last
  step that computed the queried value, which in canonical chains is the last step). A chain
  of two or more steps none of which lists any premise (free text) falls back to linear
  order ``i-1 -> i``; ``graph.graph["chains"][cid]["dependency"]`` says which was used;
* ``verifies``: verifier -> step/answer. The graph is a plain ``DiGraph``: repeated verdicts
  of one verifier on one item are kept, in arrival order, as the list ``p_valids``; the edge's
  ``p_valid`` is their mean, and that mean is what aggregation counts (one voice per verifier
  and item, however often it was asked).

Malformed input never raises, except for repeated chain ids (verdicts would be ambiguous):

* premises that cite the step itself or fall outside the chain are dropped;
* premises that cite a *later* step are dropped too (``forward_refs="ignore"``, the default),
  or kept with ``forward_refs="keep"``; kept ones can close cycles, which are found with
  networkx and broken deterministically (see :func:`break_cycles`);
* a ``Step.index`` that differs from the step's position is noted; positions are used;
* verdicts on unknown chains, on steps past the end, or on the answer line of a chain without
  one are ignored.

Each is recorded as a string in the node's ``warnings`` list (where there is a node) and in
``graph.graph["warnings"]``; broken cycles also in ``graph.graph["cycles_broken"]``.

Everything is O(steps + premises + verdicts): no quadratic loops and no recursion, so a chain
of 10,000 steps builds in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx

from verinet.schema import Chain, Verdict

StepKey = tuple[str, int]
"""(chain id, step index); index ``len(steps)`` is the answer line."""

ForwardRefs = Literal["ignore", "keep"]


# ---- node ids ------------------------------------------------------------------------------
def problem_node(problem_id: str) -> tuple[str, str]:
    return ("problem", problem_id)


def step_node(chain_id: str, index: int) -> tuple[str, str, int]:
    return ("step", chain_id, index)


def answer_node(chain_id: str) -> tuple[str, str]:
    return ("answer", chain_id)


def verifier_node(name: str) -> tuple[str, str]:
    return ("verifier", name)


def item_node(chain: Chain, index: int) -> tuple:
    """The node of step ``index`` of ``chain``, or of its answer line when ``index == len(steps)``."""
    return answer_node(chain.id) if index == len(chain.steps) else step_node(chain.id, index)


def chain_items(chain: Chain) -> list[StepKey]:
    """The verifiable items of a chain in chain order: its steps, then the answer line if any."""
    n = len(chain.steps)
    keys = [(chain.id, i) for i in range(n)]
    if chain.answer is not None:
        keys.append((chain.id, n))
    return keys


# ---- verdicts by item ----------------------------------------------------------------------
@dataclass
class Ratings:
    """Verdicts grouped by item and verifier, after dropping those that point nowhere."""

    by_item: dict[StepKey, dict[str, list[float]]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def means(self) -> dict[StepKey, dict[str, float]]:
        """One P(valid) per verifier and item: the mean of its repeated verdicts."""
        return {k: {v: sum(ps) / len(ps) for v, ps in per.items()} for k, per in self.by_item.items()}

    def counts(self) -> dict[StepKey, int]:
        """Raw number of verdicts per item (repeats included)."""
        return {k: sum(len(ps) for ps in per.values()) for k, per in self.by_item.items()}

    @property
    def verifiers(self) -> list[str]:
        """Verifiers in order of first appearance."""
        seen: dict[str, None] = {}
        for per in self.by_item.values():
            for v in per:
                seen.setdefault(v, None)
        return list(seen)


def collect_ratings(chains: Sequence[Chain], verdicts: Iterable[Verdict]) -> Ratings:
    """Group verdicts by (chain id, step index) and verifier; drop (and note) dangling ones."""
    sizes = {c.id: (len(c.steps), c.answer is not None) for c in chains}
    out = Ratings()
    for v in verdicts:
        if v.chain_id not in sizes:
            out.dropped.append(f"verdict by {v.verifier} on unknown chain {v.chain_id!r} ignored")
            continue
        n, has_answer = sizes[v.chain_id]
        if v.step_index > n or (v.step_index == n and not has_answer):
            what = "the answer line, which is missing" if v.step_index == n else "a step past the end"
            out.dropped.append(
                f"verdict by {v.verifier} on {v.chain_id}:{v.step_index} ({what}; "
                f"chain has {n} steps) ignored"
            )
            continue
        out.by_item.setdefault((v.chain_id, v.step_index), {}).setdefault(v.verifier, []).append(
            float(v.p_valid)
        )
    return out


# ---- dependency edges ----------------------------------------------------------------------
@dataclass
class Dependencies:
    """Dependency edges of one chain, as (premise position, step position) pairs."""

    edges: list[tuple[int, int]]
    mode: Literal["premises", "linear", "none"]
    warnings: dict[int, list[str]]  # position -> messages


def chain_dependencies(chain: Chain, forward_refs: ForwardRefs = "ignore",
                       linear_fallback: bool = True) -> Dependencies:
    """Premise edges of a chain's steps (the answer edge is added by :func:`build_graph`)."""
    steps = chain.steps
    n = len(steps)
    edges: list[tuple[int, int]] = []
    warns: dict[int, list[str]] = {}
    any_premise = False
    for i, step in enumerate(steps):
        idx = getattr(step, "index", i)
        if idx != i:
            warns.setdefault(i, []).append(f"step index {idx!r} differs from its position {i}; position used")
        seen: set[int] = set()
        for p in getattr(step, "premises", None) or []:
            any_premise = True
            if isinstance(p, bool) or not isinstance(p, int):
                warns.setdefault(i, []).append(f"premise {p!r} is not a step index; ignored")
            elif p == i:
                warns.setdefault(i, []).append(f"step {i} cites itself; ignored")
            elif p < 0 or p >= n:
                warns.setdefault(i, []).append(f"premise {p} is outside the chain (0..{n - 1}); ignored")
            elif p > i and forward_refs == "ignore":
                warns.setdefault(i, []).append(f"step {i} cites later step {p}; ignored")
            elif p not in seen:
                if p > i:
                    warns.setdefault(i, []).append(
                        f"step {i} cites later step {p}; kept (forward_refs='keep')")
                seen.add(p)
                edges.append((p, i))
    if n >= 2 and not any_premise and linear_fallback:
        return Dependencies([(i - 1, i) for i in range(1, n)], "linear", warns)
    return Dependencies(edges, "premises" if any_premise else "none", warns)


def break_cycles(graph: nx.DiGraph) -> list[dict[str, Any]]:
    """Remove ``depends`` edges until they form a DAG; return what was removed.

    Cycles are looked for in the strongly connected components of the ``depends`` edges, one
    component at a time in node insertion order; :func:`networkx.find_cycle` started at the
    component's first node finds one, which is broken at its edge that points most backwards in
    chain order (largest premise index minus step index; ties by position); every cycle has such
    an edge because indices cannot increase all the way round. Removed edges are appended to
    ``graph.graph["cycles_broken"]`` and to the warnings of the node that lost its premise.
    """
    dep = nx.DiGraph()
    dep.add_edges_from((u, v) for u, v, k in graph.edges(data="kind") if k == "depends")
    removed: list[dict[str, Any]] = []
    if nx.is_directed_acyclic_graph(dep):  # the usual case, O(n)
        graph.graph.setdefault("cycles_broken", [])
        return removed
    index = nx.get_node_attributes(graph, "index")

    def backwardness(e: tuple) -> tuple:
        u, v = e[0], e[1]
        return (index.get(u, 0) - index.get(v, 0), index.get(u, 0))

    # cycles live inside strongly connected components; a DFS from one node of a component finds
    # one in O(edges) (find_cycle without a source restarts from every node: quadratic on long chains)
    order = {n: k for k, n in enumerate(dep.nodes)}
    pending = [c for c in nx.strongly_connected_components(dep) if len(c) > 1]
    pending.sort(key=lambda c: min(order[n] for n in c), reverse=True)
    while pending:
        comp = pending.pop()
        sub = dep.subgraph(comp)
        cycle = nx.find_cycle(sub, source=min(comp, key=order.__getitem__))
        u, v = max(cycle, key=backwardness)[:2]
        dep.remove_edge(u, v)
        graph.remove_edge(u, v)
        rec = {
            "chain_id": graph.nodes[v].get("chain_id"),
            "removed": [index.get(u), index.get(v)],
            "cycle": [index.get(e[0]) for e in cycle],
        }
        removed.append(rec)
        msg = f"premise cycle {rec['cycle']} broken by dropping {rec['removed'][0]} -> {rec['removed'][1]}"
        graph.nodes[v].setdefault("warnings", []).append(msg)
        graph.graph.setdefault("warnings", []).append(f"{rec['chain_id']}: {msg}")
        rest = [c for c in nx.strongly_connected_components(dep.subgraph(comp)) if len(c) > 1]
        pending.extend(sorted(rest, key=lambda c: min(order[n] for n in c), reverse=True))
    graph.graph.setdefault("cycles_broken", []).extend(removed)
    return removed


# ---- the graph -----------------------------------------------------------------------------
def build_graph(problem_id: str, chains: Sequence[Chain], verdicts: Iterable[Verdict] = (), *,
                forward_refs: ForwardRefs = "ignore", linear_fallback: bool = True) -> nx.DiGraph:
    """The verification graph of one problem (see the module docstring for its shape)."""
    ids = [c.id for c in chains]
    dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise ValueError(f"chain ids must be unique within a problem; repeated: {dup}")
    g = nx.DiGraph(problem_id=problem_id, warnings=[], cycles_broken=[], chains={})
    root = problem_node(problem_id)
    g.add_node(root, kind="problem", problem_id=problem_id)
    for chain in chains:
        _add_chain(g, problem_id, chain, forward_refs, linear_fallback)
    break_cycles(g)  # only kept forward references can close one; O(n) when there is none
    items = [n for n, k in g.nodes(data="kind") if k in ("step", "answer")]
    g.add_edges_from(
        (root, it, {"kind": "poses"}) for it in items
        if not any(k == "depends" for _, _, k in g.in_edges(it, data="kind"))
    )
    ratings = collect_ratings(chains, verdicts)
    g.graph["warnings"].extend(ratings.dropped)
    by_id = {c.id: c for c in chains}
    for (cid, i), per in ratings.by_item.items():
        target = item_node(by_id[cid], i)
        for name, ps in per.items():
            vn = verifier_node(name)
            if vn not in g:
                g.add_node(vn, kind="verifier", name=name)
            g.add_edge(vn, target, kind="verifies", p_valid=sum(ps) / len(ps), p_valids=list(ps), n=len(ps))
    return g


def _add_chain(g: nx.DiGraph, problem_id: str, chain: Chain,
               forward_refs: ForwardRefs, linear_fallback: bool) -> None:
    cid, n = chain.id, len(chain.steps)
    if chain.problem_id != problem_id:
        g.graph["warnings"].append(f"{cid}: chain is for problem {chain.problem_id!r}, not {problem_id!r}")
    deps = chain_dependencies(chain, forward_refs, linear_fallback)
    premises: list[list[int]] = [[] for _ in range(n)]
    for p, i in deps.edges:
        premises[i].append(p)
    g.add_nodes_from(
        (step_node(cid, i), {
            "kind": "step", "chain_id": cid, "author": chain.author, "index": i,
            "text": getattr(s, "text", ""), "premises": premises[i], "value": getattr(s, "value", None),
            "missing_premises": list(getattr(s, "missing_premises", None) or []),
            **({"warnings": list(deps.warnings[i])} if i in deps.warnings else {}),
        })
        for i, s in enumerate(chain.steps)
    )
    for i, msgs in deps.warnings.items():
        g.graph["warnings"].extend(f"{cid}: {m}" for m in msgs)
    g.add_edges_from((step_node(cid, p), step_node(cid, i), {"kind": "depends"}) for p, i in deps.edges)
    if chain.answer is not None:
        a = answer_node(cid)
        g.add_node(a, kind="answer", chain_id=cid, author=chain.author, index=n, text=chain.answer,
                   premises=[n - 1] if n else [], value=chain.answer)
        if n:
            g.add_edge(step_node(cid, n - 1), a, kind="depends")
    info: dict[str, Any] = {"author": chain.author, "n_steps": n, "answer": chain.answer,
                            "dependency": deps.mode}
    g.graph["chains"][cid] = info
    if not n and chain.answer is None:
        g.graph["warnings"].append(f"{cid}: empty chain (no steps, no answer)")


__all__ = [
    "Dependencies",
    "Ratings",
    "StepKey",
    "answer_node",
    "break_cycles",
    "build_graph",
    "chain_dependencies",
    "chain_items",
    "collect_ratings",
    "item_node",
    "problem_node",
    "step_node",
    "verifier_node",
]
