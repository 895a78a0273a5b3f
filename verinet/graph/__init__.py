"""The verification graph: who checks whom, what the verdicts add up to, and which answer wins.

Read top-down: :mod:`~verinet.graph.topology` (who verifies whom), :mod:`~verinet.graph.build`
(nodes and edges), :mod:`~verinet.graph.aggregate` (verdicts -> P(valid), incl. Dawid-Skene),
:mod:`~verinet.graph.propagate` (support, earliest error, F1), :mod:`~verinet.graph.select`
(answer selection), :mod:`~verinet.graph.agreement` (kappa, alpha, per-verifier reliability),
:mod:`~verinet.graph.export` (JSON, GraphML, PNG) and :mod:`~verinet.graph.pipeline`
(``verify_problem``/``verify_batch``). Pure Python: no Ray, no models.
"""

from verinet.graph.aggregate import ReliabilityTable, aggregate, dawid_skene
from verinet.graph.agreement import agreement
from verinet.graph.build import build_graph
from verinet.graph.export import draw_problem, to_node_link, write_graphml
from verinet.graph.pipeline import verify_batch, verify_problem
from verinet.graph.propagate import choose_threshold, earliest_error, earliest_error_f1, propagate
from verinet.graph.select import select_answer
from verinet.graph.topology import assign_verifiers

__all__ = [
    "ReliabilityTable",
    "aggregate",
    "agreement",
    "assign_verifiers",
    "build_graph",
    "choose_threshold",
    "dawid_skene",
    "draw_problem",
    "earliest_error",
    "earliest_error_f1",
    "propagate",
    "select_answer",
    "to_node_link",
    "verify_batch",
    "verify_problem",
    "write_graphml",
]
