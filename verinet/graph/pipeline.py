"""The whole verification of one problem (or of a batch) as one pure function.

``verify_problem``: graph -> aggregation -> propagation -> earliest errors -> answer selection ->
agreement -> node-link JSON, returned as a :class:`~verinet.schema.VerificationReport`.
``verify_batch``: the same for many problems, fitting Dawid-Skene (or one-coin) over all their
items first, since those models need the batch. No Ray, no models: verdicts come in as records.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx

from verinet.graph.aggregate import ITEM_METHODS, METHODS, Method, ReliabilityTable, aggregate, dawid_skene
from verinet.graph.agreement import AgreementReport, agreement, agreement_from_verdicts
from verinet.graph.build import StepKey, build_graph, chain_items, collect_ratings, item_node
from verinet.graph.export import to_node_link
from verinet.graph.propagate import chain_score, earliest_error, propagate, support
from verinet.graph.select import Rule, Selection, select_answer
from verinet.schema import Chain, Problem, StepPosterior, Verdict, VerificationReport


def annotate_graph(graph: nx.DiGraph, chains: Sequence[Chain], posteriors: Sequence[StepPosterior],
                   errors: Mapping[str, int], scores: Mapping[str, float],
                   selection: Selection | None) -> None:
    """Write posteriors onto item nodes and per-chain results into ``graph.graph["chains"]``."""
    by_id = {c.id: c for c in chains}
    for p in posteriors:
        c = by_id.get(p.chain_id)
        if c is None:
            continue
        node = item_node(c, p.step_index)
        if node in graph:
            graph.nodes[node].update(p_valid=p.p_valid, p_supported=p.p_supported, n_verdicts=p.n_verdicts)
    accepted = set(selection.accepted) if selection else set()
    for cid, info in graph.graph.get("chains", {}).items():
        info["earliest_error"] = errors.get(cid)
        info["score"] = scores.get(cid)
        info["accepted"] = cid in accepted
        c = by_id[cid]
        if c.first_error != -1 or c.error_kind is not None:
            info["label_first_error"] = c.first_error
    if selection is not None:
        graph.graph["selection"] = {"rule": selection.rule, "answer": selection.answer,
                                    "accepted": selection.accepted, "table": selection.table}


def verify_problem(
    problem_id: str,
    chains: Sequence[Chain],
    verdicts: Sequence[Verdict],
    *,
    aggregation: Method = "mean",
    threshold: float = 0.5,
    selection: Rule = "weighted",
    reliabilities: ReliabilityTable | None = None,
    family: Any = None,
    accept_threshold: float | None = None,
    p_valid: Mapping[StepKey, float] | None = None,
    include_graph: bool = True,
    graph: nx.DiGraph | None = None,
    missing_answer_is_error: bool = True,
    linear_fallback: bool | None = None,
) -> VerificationReport:
    """Verify one problem's chains from the verdicts on them.

    * ``aggregation``: ``mean``/``vote``/``logodds`` per item; ``dawid_skene``/``one_coin`` need the
      batch-fitted ``reliabilities`` (or use :func:`verify_batch`);
    * ``threshold``: an item with posterior P(valid) below it is an error (earliest error);
    * ``selection``: ``majority``/``weighted``/``best``. Under ``weighted``/``best`` a chain of the
      selected answer is accepted when it has no earliest error and everything its answer rests on is
      supported (each item's P(valid) at or above ``threshold``, no missing premise: the weakest link,
      :func:`support` with ``weakest``), or, given ``accept_threshold``, when its chain score (the
      answer line's p_supported, a product over the chain, so lower for longer chains) reaches that;
      under ``majority`` every chain of the selected answer is;
    * ``reliabilities`` also adds DS sensitivity/specificity to the agreement;
    * ``family`` (TaskFamily or name) normalises answers;
    * ``p_valid``: precomputed posteriors per (chain id, index) that replace aggregation (items
      absent from it fall back to ``aggregation``); :func:`verify_batch` passes its DS posteriors;
    * ``missing_answer_is_error``: a chain without an answer line whose steps all pass has its earliest
      error at index n (as the exact checkers label it); False where a chain may leave the answer out
      on purpose (the endpoint verifies steps only), so the earliest error is always a scored item or -1;
    * ``linear_fallback``: a chain whose steps list no premise depends step by step (free text); False
      where an empty premise list is itself read from the step (a family format: it uses only givens).
      By default, True only without a ``family`` (the job, the probes and the endpoint read alike).

    A chain that no verdict names (every verifier assigned to it failed, or, under a fixed table, none
    has a row in it) is listed in ``unverified``: it gets no earliest error and no chain score, is never
    accepted (under ``majority`` its answer still votes), and error metrics leave it out instead of
    reading its default posteriors as a prediction.
    """
    if aggregation not in METHODS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {list(METHODS)}")
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = now - t
        t = now

    chains, verdicts = list(chains), list(verdicts)
    if linear_fallback is None:
        linear_fallback = family is None
    g = graph if graph is not None else build_graph(problem_id, chains, verdicts, linear_fallback=linear_fallback)
    lap("build")
    if p_valid is not None:
        fallback = aggregation if aggregation in ITEM_METHODS or reliabilities is not None else "mean"
        local = aggregate(chains, verdicts, fallback, reliabilities=reliabilities)
        local = [p.model_copy(update={"p_valid": p_valid[(p.chain_id, p.step_index)],
                                      "p_supported": p_valid[(p.chain_id, p.step_index)],
                                      "method": aggregation})
                 if (p.chain_id, p.step_index) in p_valid else p for p in local]
    else:
        local = aggregate(chains, verdicts, aggregation, reliabilities=reliabilities)
    lap("aggregate")
    posteriors = propagate(g, local)
    pv = {(p.chain_id, p.step_index): p.p_valid for p in posteriors}
    ps = {(p.chain_id, p.step_index): p.p_supported for p in posteriors}
    table_rules = aggregation in ("dawid_skene", "one_coin") and reliabilities is not None
    # a verdict counts when the rule reads it: a fixed table ignores verifiers it has no row for
    named = {v.chain_id for v in verdicts if not table_rules or v.verifier in reliabilities.verifiers}
    # an empty chain has nothing to verify: its error is structural
    unverified = [c.id for c in chains if c.id not in named and (c.steps or c.answer is not None)]
    judged = {c.id for c in chains} - set(unverified)
    errors = {c.id: earliest_error(c, pv, threshold, missing_answer_is_error=missing_answer_is_error)
              for c in chains if c.id in judged}
    scores = {c.id: chain_score(c, ps) for c in chains if c.id in judged}  # unverified: weight 0, never accepted
    lap("propagate")
    sel = select_answer(chains, scores, selection, threshold=0.0 if accept_threshold is None else accept_threshold,
                        family=family)
    if accept_threshold is None and selection != "majority":
        # accepted: no item below the threshold, and none of what its answer rests on (a missing premise
        # counts 0); the weakest link, not the product, so a long chain of passing steps is accepted
        weak = support(g, pv, weakest=True)
        by_id = {c.id: c for c in chains}
        sel = replace(sel, accepted=[cid for cid in sel.accepted if errors.get(cid, 0) == -1
                                     and chain_score(by_id[cid], weak) >= threshold
                                     and chain_score(by_id[cid], weak) > 0])  # a missing premise, even at 0
    if unverified:  # its answer still votes under "majority"; acceptance needs verification under every rule
        sel = replace(sel, accepted=[cid for cid in sel.accepted if cid not in unverified])
    lap("select")
    agree = agreement_from_verdicts(chains, verdicts, reliabilities).flat()
    lap("agreement")
    node_link = None
    if include_graph:
        annotate_graph(g, chains, posteriors, errors, scores, sel)
        node_link = to_node_link(g)
    lap("export")
    return VerificationReport(
        problem_id=problem_id, chains=chains, verdicts=verdicts, posteriors=posteriors,
        earliest_error=errors, unverified=unverified, accepted=sel.accepted, final_answer=sel.answer, agreement=agree,
        graph=node_link, timings_s=timings,
    )


@dataclass
class BatchResult:
    reports: list[VerificationReport]
    reliabilities: ReliabilityTable | None
    agreement: AgreementReport


def verify_batch(
    problems: Iterable[tuple[str, Sequence[Chain], Sequence[Verdict]]],
    *,
    aggregation: Method = "dawid_skene",
    gold: Mapping[StepKey, bool] | None = None,
    soft: bool = False,
    smoothing: float = 0.5,
    threshold: float = 0.5,
    selection: Rule = "weighted",
    family: Any = None,
    accept_threshold: float | None = None,
    include_graph: bool = True,
    reliabilities: ReliabilityTable | None = None,
    missing_answer_is_error: bool = True,
    linear_fallback: bool | None = None,
) -> BatchResult:
    """Verify many problems; ``problems`` yields ``(problem_id, chains, verdicts)``.

    With ``dawid_skene``/``one_coin`` the model is fitted over every step and answer line of every
    chain in the batch (items keyed by (chain id, index), so chain ids must be unique across the
    batch); ``gold`` (item -> valid) warm-starts it. A fitted ``reliabilities`` table (one learned
    on labelled data, or over recent traffic) is used as it is instead: nothing is fitted on the
    batch. Per-item rules just run per problem.
    """
    problems = [(pid, list(cs), list(vs)) for pid, cs, vs in problems]
    all_chains = [c for _, cs, _ in problems for c in cs]
    ids = [c.id for c in all_chains]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"chain ids must be unique across the batch; repeated: {dup[:10]}")
    ratings: dict[StepKey, dict[str, float]] = {}
    for _, cs, vs in problems:
        ratings.update(collect_ratings(cs, vs).means())
    table = None
    post: dict[StepKey, float] | None = None
    if aggregation in ("dawid_skene", "one_coin") and reliabilities is not None:
        table = reliabilities
        post = {k: table.posterior(ratings.get(k, {})) for c in all_chains for k in chain_items(c)}
    elif aggregation in ("dawid_skene", "one_coin"):
        items = {k: ratings.get(k, {}) for c in all_chains for k in chain_items(c)}
        fit = dawid_skene(items, one_coin=aggregation == "one_coin", gold=gold, soft=soft,
                          smoothing=smoothing)
        table = fit.table
        post = {k: v for k, v in fit.posteriors.items() if isinstance(k, tuple)}
    reports = [
        verify_problem(pid, cs, vs, aggregation=aggregation, threshold=threshold, selection=selection,
                       reliabilities=table, family=family, accept_threshold=accept_threshold,
                       p_valid=post, include_graph=include_graph, missing_answer_is_error=missing_answer_is_error,
                       linear_fallback=linear_fallback)
        for pid, cs, vs in problems
    ]
    return BatchResult(reports, table, agreement(ratings, table))


def gold_labels(problem: Problem, chains: Sequence[Chain], family: Any) -> dict[StepKey, bool]:
    """Exact validity of every step and answer line of ``chains`` from the family's checker."""
    if isinstance(family, str):
        from verinet.tasks import get_family

        family = get_family(family)
    out: dict[StepKey, bool] = {}
    for c in chains:
        check = family.check(problem, c.text)
        for s in check.steps:
            out[(c.id, s.index)] = s.valid
        if c.answer is not None:
            out[(c.id, len(c.steps))] = check.answer.valid
    return out


__all__ = ["BatchResult", "annotate_graph", "gold_labels", "verify_batch", "verify_problem"]
