"""Cross-verification with real members: members solve, peers score each other's steps, then
the graph aggregates, propagates and selects.

The functions talk to a caller (:mod:`verinet.orchestration.protocol`), so the same code runs
in a test (``LocalMembers``), in a Ray job (``verinet.cluster.Ensemble``) and, for the scoring
half, behind the endpoint (:func:`verdicts_from_scores`).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from verinet.backends.base import Usage
from verinet.backends.formats import PromptFormat
from verinet.graph.aggregate import ReliabilityTable
from verinet.graph.pipeline import BatchResult, verify_batch
from verinet.graph.topology import assign_verifiers
from verinet.orchestration.protocol import CallResult, Caller
from verinet.schema import Chain, Problem, Verdict
from verinet.tasks import chain_budget, get_family


@dataclass
class VerifyRun:
    """Everything a verification run produced, for tables, reports and cost accounting."""

    problems: list[Problem]
    chains: dict[str, list[Chain]]  # author -> one chain per problem (in problem order)
    verdicts: list[Verdict]
    batch: BatchResult
    assignment: dict[str, list[str]]  # author -> its verifiers
    usage: dict[str, dict[str, Usage]] = field(default_factory=dict)  # member -> phase -> tokens
    wall_s: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    missing: dict[str, list[str]] = field(default_factory=dict)  # phase -> members that failed
    member_s: dict[str, dict[str, float]] = field(default_factory=dict)  # member -> phase -> seconds answering


def solve(caller: Caller, formats: Mapping[str, PromptFormat], problems: Sequence[Problem], *,
          solvers: Sequence[str] | None = None, max_tokens: int | None = None, temperature: float = 0.0,
          seed: int | None = None) -> tuple[dict[str, list[Chain]], CallResult]:
    """Each solver writes one chain per problem; chains are read in the family's format. By default
    every member that can write chains solves (process reward models only verify)."""
    solvers = list(solvers or [m for m in caller.members if formats[m].can_solve])
    max_tokens = max_tokens or chain_budget(problems)
    calls = {m: ("generate", ([formats[m].solve_prompt(p.question) for p in problems],),
                 {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}) for m in solvers}
    res = caller.call_each(calls)
    chains: dict[str, list[Chain]] = {}
    for m, gen in res.results.items():
        fam_chains = []
        for p, text in zip(problems, gen.texts):
            fam = get_family(p.family)
            steps, answer = formats[m].parse(text)
            canonical = formats[m].chain_text(steps, answer)
            fam_chains.append(fam.parse_chain(p, canonical, chain_id=f"{p.id}/{m}", author=m))
        chains[m] = fam_chains
    return chains, res


def cross_verify(caller: Caller, formats: Mapping[str, PromptFormat], problems: Sequence[Problem],
                 chains: Mapping[str, Sequence[Chain]], assignment: Mapping[str, Sequence[str]]
                 ) -> tuple[list[Verdict], CallResult]:
    """Every verifier scores, in one batched call, every chain whose author it is assigned to."""
    todo: dict[str, list[tuple[Problem, Chain]]] = defaultdict(list)
    for author, verifiers in assignment.items():
        for v in verifiers:
            todo[v] += [(p, c) for p, c in zip(problems, chains.get(author, []))]
    calls, decoders = {}, {}
    for v, items in todo.items():
        call = formats[v].verify_call([(p.question, [s.text for s in c.steps], c.answer) for p, c in items])
        calls[v] = (call.method, call.args, call.kwargs)
        decoders[v] = call.decode
    res = caller.call_each(calls) if calls else CallResult()
    verdicts = []
    for v, result in res.results.items():
        for (_, chain), probs in zip(todo[v], decoders[v](result)):
            verdicts += verdicts_from_scores(v, chain.id, probs)
    return verdicts, res


def verdicts_from_scores(verifier: str, chain_id: str, p_valid: Sequence[float]) -> list[Verdict]:
    """One verifier's P(valid) per line of one chain (steps, then the answer line) as verdicts, clipped
    to [0, 1]: the one place where member scores enter the graph, for the job and the endpoint alike."""
    out = []
    for i, p in enumerate(p_valid):
        p = float(p)
        if not math.isfinite(p):  # a broken score is no verdict, not a confident "invalid"
            raise ValueError(f"verifier {verifier!r} gave a non-finite P(valid) ({p}) for line {i} of {chain_id}")
        out.append(Verdict(verifier=verifier, chain_id=chain_id, step_index=i, p_valid=min(1.0, max(0.0, p))))
    return out


def run_verification(caller: Caller, formats: Mapping[str, PromptFormat], problems: Sequence[Problem], *,
                     topology: str = "all_pairs", k: int = 2, aggregation: str = "mean", threshold: float = 0.5,
                     selection: str = "weighted", solvers: Sequence[str] | None = None,
                     verifiers: Sequence[str] | None = None, max_tokens: int | None = None,
                     temperature: float = 0.0, seed: int = 0, include_graph: bool = True,
                     reliabilities: ReliabilityTable | None = None) -> VerifyRun:
    """Solve, cross-verify and decide, for a batch of problems of one family (with a learned
    ``reliabilities`` table instead of a fit over the batch, when one is given)."""
    if not problems:
        raise ValueError("run_verification needs at least one problem")
    families = {p.family for p in problems}
    if len(families) != 1:
        raise ValueError(f"one family per batch, got {sorted(families)}")
    usage: dict[str, dict[str, Usage]] = defaultdict(dict)
    wall: dict[str, float] = {}
    missing: dict[str, list[str]] = {}

    t0 = time.perf_counter()
    chains, res = solve(caller, formats, problems, solvers=solvers, max_tokens=max_tokens,
                        temperature=temperature, seed=seed)
    wall["solve"] = time.perf_counter() - t0
    missing["solve"] = list(res.missing)
    member_s: dict[str, dict[str, float]] = defaultdict(dict)
    for m, u in res.usage.items():
        usage[m]["solve"] = u
    for m, s in res.wall_s.items():
        member_s[m]["solve"] = s

    authors = list(chains)
    checkers = list(verifiers or caller.members)
    assignment = assign_verifiers(authors, checkers, topology, k=k, seed=seed)
    t0 = time.perf_counter()
    verdicts, res = cross_verify(caller, formats, problems, chains, assignment)
    wall["verify"] = time.perf_counter() - t0
    missing["verify"] = list(res.missing)
    for m, u in res.usage.items():
        usage[m]["verify"] = u
    for m, s in res.wall_s.items():
        member_s[m]["verify"] = s

    t0 = time.perf_counter()
    by_chain: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        by_chain[v.chain_id].append(v)
    batch_in = []
    for i, p in enumerate(problems):
        cs = [chains[a][i] for a in authors]
        batch_in.append((p.id, cs, [v for c in cs for v in by_chain[c.id]]))
    batch = verify_batch(batch_in, aggregation=aggregation, threshold=threshold, selection=selection,
                         family=get_family(problems[0].family), include_graph=include_graph,
                         reliabilities=reliabilities)
    wall["aggregate"] = time.perf_counter() - t0
    return VerifyRun(list(problems), chains, verdicts, batch, dict(assignment), dict(usage), wall, missing,
                     {m: dict(ph) for m, ph in member_s.items()})


__all__ = ["VerifyRun", "cross_verify", "run_verification", "solve", "verdicts_from_scores"]
