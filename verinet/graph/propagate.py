"""Propagation of support through premises, chain scores and the earliest error.

``p_supported(item) = prod(p_own(a) for a in {item} | ancestors(item))``, where
``p_own(a) = p_valid(a) * missing_premise ** len(a.missing_premises)`` and the ancestors are the
items reached through premises, each counted once; for an item with one premise this is
``p_own(item) * p_supported(premise)``.

A *missing* premise (``Step.missing_premises``) is something the step uses that neither the
question nor an earlier step states, e.g. a number that a changed result left without a source.
It is a premise nobody established, so its support is ``missing_premise``: 0 by default, the
checkers' reading (such a step is unsupported). It is never the absence of a premise: a step whose
only link was cut does not become a root resting on its own P(valid), so changing a result cannot
raise the support of the steps after it.

This treats the validity of different steps as independent events given the verdicts, so
the probability that a step and everything it rests on are valid is a product. It is an
approximation: errors in one chain are correlated (a confused author tends to err again). A premise
shared by two routes (step 2 uses steps 0 and 1, step 1 uses step 0) is one event, counted once.
It is exact for 0/1 beliefs, where it
reproduces the checker's *supported* (valid and every premise supported).

Items are visited in topological order of the ``depends`` edges (iteratively, so a chain of
10,000 steps needs no recursion and takes milliseconds). The answer line depends on the last
step (see :mod:`verinet.graph.build`).

The *chain score* is ``p_supported`` of the answer line when the chain has one, else of its last
step; an empty chain without answer scores 0. The *earliest error* of a chain is the first item in
chain order (steps, then the answer line at index ``len(steps)``) whose ``p_valid`` is below the
threshold, or -1. A chain with no answer line is an error at ``len(steps)`` when nothing earlier
is (``missing_answer_is_error``), as the exact checkers label it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import networkx as nx

from verinet.graph.build import StepKey, break_cycles
from verinet.processbench import (  # noqa: F401  (re-exported: the graph's public names)
    DEFAULT_GRID, DevItem, choose_threshold, earliest_error_f1, first_below, threshold_curve,
)
from verinet.schema import Chain, StepPosterior



def support(graph: nx.DiGraph, p_valid: Mapping[StepKey, float],
            missing: float = 0.5, missing_premise: float = 0.0, *, weakest: bool = False) -> dict[StepKey, float]:
    """p_supported for every step and answer node of ``graph``; ``missing`` for items without p_valid,
    ``missing_premise`` for each of a step's missing premises (see the module docstring). ``weakest``
    combines an item with what it rests on by ``min`` instead of the product: its weakest link, which
    does not fall with the length of the chain (what acceptance reads; equal for 0/1 beliefs).

    Breaks any cycle of ``depends`` edges first (in place, recorded; see :func:`break_cycles`).
    """
    dep = _dependency_graph(graph)
    if not nx.is_directed_acyclic_graph(dep):
        break_cycles(graph)
        dep = _dependency_graph(graph)
    own: dict = {}
    out_by_node: dict = {}
    for node in nx.topological_sort(dep):
        attrs = graph.nodes[node]
        p = p_valid.get((attrs["chain_id"], attrs["index"]), missing)
        n_missing = len(attrs.get("missing_premises") or ())
        if n_missing:
            p *= missing_premise ** n_missing
        own[node] = p
        preds = list(dep.predecessors(node))
        if weakest:  # min is idempotent: a shared ancestor counted twice changes nothing
            p = min([p, *(out_by_node[a] for a in preds)])
        elif len(preds) == 1:  # exact and linear-time along a chain
            p *= out_by_node[preds[0]]
        elif preds:  # premises that share ancestors: each ancestor once
            for a in nx.ancestors(dep, node):
                p *= own[a]
        out_by_node[node] = p
    nodes = graph.nodes
    return {(nodes[n]["chain_id"], nodes[n]["index"]): p for n, p in out_by_node.items()}


def propagate(graph: nx.DiGraph, posteriors: Sequence[StepPosterior],
              missing_premise: float = 0.0) -> list[StepPosterior]:
    """Copies of ``posteriors`` with ``p_supported`` filled in from the graph's premises."""
    sup = support(graph, {(p.chain_id, p.step_index): p.p_valid for p in posteriors},
                  missing_premise=missing_premise)
    out = []
    for p in posteriors:
        s = sup.get((p.chain_id, p.step_index), p.p_valid)
        out.append(p.model_copy(update={"p_supported": min(max(s, 0.0), 1.0)}))
    return out


def chain_score(chain: Chain, p_supported: Mapping[StepKey, float]) -> float:
    """p_supported of the answer line if the chain has one, else of the last step; 0 if empty."""
    n = len(chain.steps)
    if chain.answer is not None:
        return float(p_supported.get((chain.id, n), 0.0))
    return float(p_supported.get((chain.id, n - 1), 0.0)) if n else 0.0


def earliest_error(chain: Chain, p_valid: Mapping[StepKey, float], threshold: float = 0.5, *,
                   missing: float = 0.5, missing_answer_is_error: bool = True) -> int:
    """Predicted first error of ``chain`` (see the module docstring); -1 when none."""
    n = len(chain.steps)
    ps = [p_valid.get((chain.id, i), missing) for i in range(n + (chain.answer is not None))]
    first = first_below(ps, threshold)
    if first == -1 and chain.answer is None and missing_answer_is_error:
        return n
    return first


def _dependency_graph(graph: nx.DiGraph) -> nx.DiGraph:
    dep = nx.DiGraph()
    dep.add_nodes_from(n for n, k in graph.nodes(data="kind") if k in ("step", "answer"))
    dep.add_edges_from((u, v) for u, v, k in graph.edges(data="kind") if k == "depends")
    return dep


__all__ = [
    "DEFAULT_GRID",
    "DevItem",
    "chain_score",
    "choose_threshold",
    "earliest_error",
    "earliest_error_f1",
    "first_below",
    "propagate",
    "support",
    "threshold_curve",
]
