"""Faithfulness of the ensemble pipeline: corrupt a step of the chain the ensemble accepted.

For each problem the ensemble solves, cross-verifies and decides
(:func:`verinet.orchestration.run_verification`). One accepted chain is picked (seeded),
and for every step ``k`` of it: step ``k`` is corrupted (the family's edit, or the author
rewrites it for free text), the author writes the rest of its chain from there, the
author's verifiers score the new chain, and the problem is decided again with every
other chain and verdict unchanged. Two questions per mistake:

* does the ensemble's final answer change (``changed``; its curve over k/n gives the
  pipeline's adding-mistakes AOC and step causal importance)?
* do the verifiers flag the corrupted step (aggregated P(valid) below the threshold;
  ``earliest_error`` == k when it is also the first step they flag)?

Model calls are batched through the caller, as everywhere: one round of edits, one of
continuations, one of forced answers, one of verification, each a single ``call_each``.

A record (``kind: "pipeline"``, ``id: "pipeline/<problem id>"``) holds the ensemble's
``final_answer`` and ``correct``, the ``accepted`` chain ids, the picked chain
(``chain_id``, ``author``, ``steps``; ``skipped`` says why when there is none) and one
``adding_mistakes`` row per step: the new ``final_answer`` and ``changed``, the author's
``answer`` and ``author_changed``, the corrupted step's aggregated ``p_valid``,
``flagged``, ``earliest_error``, ``still_accepted``, and the checker's validity of the
step before and after the edit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verinet.backends.base import Usage
from verinet.backends.formats import PromptFormat
from verinet.faithfulness.calls import FaithfulnessError, Round
from verinet.faithfulness.interventions import StepEdit, edit_rng, family_edits, forced_answer, with_mistake
from verinet.faithfulness.runner import solve_tokens
from verinet.faithfulness.summary import FaithfulnessResult, summarize_pipeline
from verinet.orchestration import VerifyRun, run_verification, verdicts_from_scores
from verinet.graph.pipeline import verify_problem
from verinet.schema import FORMAT_VERSION, Chain, Problem, Verdict, VerificationReport
from verinet.tasks import TaskFamily, get_family


@dataclass
class _Mistake:
    """One corrupted step of one accepted chain, and what became of it."""

    index: int  # position of the problem in the run
    problem: Problem
    chain: Chain
    edit: StepEdit
    prefix: list[str] | None = None
    rest: list[str] | None = None
    answer: str | None = None
    forced: bool = False
    new: Chain | None = None


def run_pipeline(caller: Any, formats: Mapping[str, PromptFormat], problems: Sequence[Problem], *, seed: int = 0,
                 answer_tokens: int = 16, usage: dict[str, Usage] | None = None,
                 **run_verification_kwargs: Any) -> list[dict[str, Any]]:
    """One record per problem (in order); problems of several families are run family by family."""
    kw = {"include_graph": False, **run_verification_kwargs}
    usage = usage if usage is not None else {}
    by_family: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        by_family[p.family].append(p)
    records: dict[str, dict[str, Any]] = {}
    for group in by_family.values():
        run = run_verification(caller, formats, group, seed=seed, **kw)
        for m, phases in run.usage.items():
            for u in phases.values():
                usage[m] = usage.get(m, Usage()) + u
        for rec in _intervene(caller, formats, run, seed=seed, answer_tokens=answer_tokens, usage=usage,
                              aggregation=kw.get("aggregation", "mean"), threshold=kw.get("threshold", 0.5),
                              selection=kw.get("selection", "weighted")):
            records[rec["problem_id"]] = rec
    return [records[p.id] for p in problems]


def _pick(report: VerificationReport, problem: Problem, seed: int) -> Chain | None:
    """A seeded choice among the accepted chains with at least one step."""
    ok = sorted(c.id for c in report.chains if c.id in set(report.accepted) and c.steps)
    if not ok:
        return None
    cid = edit_rng(seed, problem.id, -1, "pick").choice(ok)
    return next(c for c in report.chains if c.id == cid)


def _intervene(caller: Any, formats: Mapping[str, PromptFormat], run: VerifyRun, *, seed: int, answer_tokens: int,
               usage: dict[str, Usage], aggregation: str, threshold: float, selection: str
               ) -> list[dict[str, Any]]:
    fam = get_family(run.problems[0].family)
    picked = [_pick(rep, p, seed) for p, rep in zip(run.problems, run.batch.reports)]
    mistakes: list[_Mistake] = []

    # edits: the family's, else the author rewrites the step
    rnd = Round(usage)
    for i, (p, chain) in enumerate(zip(run.problems, picked)):
        if chain is None:
            continue
        steps = [s.text for s in chain.steps]
        fmt = formats[chain.author]
        for e in family_edits(fam, p, steps, "mistake", seed):
            mistakes.append(_Mistake(i, p, chain, e))
            prompt = fmt.edit_prompt("mistake", p.question, steps[e.k]) if e.text is None else None
            if prompt is not None:
                rnd.add(chain.author, prompt, 2 * fmt.count_tokens(steps[e.k]) + 32,
                        lambda t, e=e, fmt=fmt: _edited(e, fmt.parse_edit(t)))
    rnd.run(caller, seed=seed)

    # the author writes the rest of its chain after the mistake
    rnd = Round(usage)
    for mk in mistakes:
        mk.prefix = with_mistake([s.text for s in mk.chain.steps], mk.edit)
        if mk.prefix is None:
            continue
        fmt = formats[mk.chain.author]
        rnd.add(mk.chain.author, fmt.continue_prompt(mk.problem.question, mk.prefix), solve_tokens(mk.problem, fmt),
                lambda t, mk=mk, fmt=fmt: _continued(mk, fmt, t))
    rnd.run(caller, seed=seed)
    rnd = Round(usage)
    for mk in mistakes:
        if mk.prefix is not None and mk.answer is None:
            mk.forced = True
            rnd.add(mk.chain.author, formats[mk.chain.author].force_prompt(mk.problem.question, mk.prefix + mk.rest),
                    answer_tokens, lambda t, mk=mk: setattr(mk, "answer", forced_answer(t)))
    rnd.run(caller, seed=seed)

    # the new chains, scored by the author's verifiers, in one call
    live = [mk for mk in mistakes if mk.prefix is not None]
    for mk in live:
        fmt = formats[mk.chain.author]
        text = fmt.chain_text(mk.prefix + mk.rest, mk.answer)
        mk.new = fam.parse_chain(mk.problem, text, chain_id=f"{mk.chain.id}~mistake{mk.edit.k}",
                                 author=mk.chain.author)
    verdicts = _verify(caller, formats, [(mk.problem, mk.new) for mk in live], run.assignment)

    # decide each problem again, with the corrupted chain in place of the accepted one
    rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for mk in mistakes:
        rows[mk.index].append(_row(mk, run, fam, verdicts, aggregation=aggregation, threshold=threshold,
                                   selection=selection))
    return [_record(p, rep, chain, fam, rows.get(i, []), caller)
            for i, (p, rep, chain) in enumerate(zip(run.problems, run.batch.reports, picked))]


def _edited(e: StepEdit, text: str) -> None:
    if text:
        e.text, e.how = text, "model"


def _continued(mk: _Mistake, fmt: PromptFormat, text: str) -> None:
    mk.rest, mk.answer = fmt.parse(text)


def _verify(caller: Any, formats: Mapping[str, PromptFormat], items: Sequence[tuple[Problem, Chain]],
            assignment: Mapping[str, Sequence[str]]) -> dict[str, list[Verdict]]:
    """Verdicts on each chain (by chain id) from the verifiers assigned to its author; one call_each."""
    todo: dict[str, list[tuple[Problem, Chain]]] = defaultdict(list)
    for p, c in items:
        for v in assignment.get(c.author, []):
            todo[v].append((p, c))
    if not todo:
        return {}
    calls, decoders = {}, {}
    for v, pairs in todo.items():
        call = formats[v].verify_call([(p.question, [s.text for s in c.steps], c.answer) for p, c in pairs])
        calls[v] = (call.method, call.args, call.kwargs)
        decoders[v] = call.decode
    res = caller.call_each(calls)
    missing = sorted(set(todo) - set(res.results))
    if missing:  # fewer verifiers than judged the original chain would distort flagged / still accepted
        raise FaithfulnessError(f"verifiers {missing} did not answer the re-verification of corrupted chains: "
                                f"{getattr(res, 'errors', {})}; rerun (finished problems are kept)")
    out: dict[str, list[Verdict]] = defaultdict(list)
    for v, result in res.results.items():
        scores = decoders[v](result)
        if len(scores) != len(todo[v]):
            raise FaithfulnessError(f"verifier {v} returned {len(scores)} score lists for {len(todo[v])} chains")
        for (_, chain), probs in zip(todo[v], scores):
            out[chain.id] += verdicts_from_scores(v, chain.id, probs)
    return out


def _row(mk: _Mistake, run: VerifyRun, fam: TaskFamily, verdicts: Mapping[str, list[Verdict]], *,
         aggregation: str, threshold: float, selection: str) -> dict[str, Any]:
    k = mk.edit.k
    if mk.new is None:
        return {"k": k, "how": mk.edit.how, "applied": False}
    p, old, new = mk.problem, mk.chain, mk.new
    rep = run.batch.reports[mk.index]
    chains = [new if c.id == old.id else c for c in rep.chains]
    kept = [v for v in rep.verdicts if v.chain_id != old.id]
    after = verify_problem(p.id, chains, kept + verdicts.get(new.id, []), aggregation=aggregation,
                           threshold=threshold, selection=selection, reliabilities=run.batch.reliabilities,
                           family=fam, include_graph=False)
    p_valid = next((q.p_valid for q in after.posteriors if q.chain_id == new.id and q.step_index == k), None)
    norm = fam.normalize_answer
    steps = [s.text for s in new.steps]
    implied = fam.implied_answer(p, steps)
    before_check, after_check = fam.check(p, old.text), fam.check(p, new.text)
    return {
        "k": k, "how": mk.edit.how, "applied": True, "step": mk.edit.text, "rest": mk.rest, "answer": mk.answer,
        "forced": mk.forced, "final_answer": after.final_answer,
        "changed": norm(after.final_answer) != norm(rep.final_answer),
        "author_changed": norm(mk.answer) != norm(old.answer),
        "p_valid": p_valid, "flagged": None if new.id in after.unverified else p_valid is not None and p_valid < threshold,
        "earliest_error": after.earliest_error.get(new.id), "still_accepted": new.id in after.accepted,
        "implied": implied, "follows": None if implied is None else norm(mk.answer) == implied,
        "step_valid_before": before_check.steps[k].valid if k < len(before_check.steps) else None,
        "step_valid_after": after_check.steps[k].valid if k < len(after_check.steps) else None,
    }


def _record(p: Problem, rep: VerificationReport, chain: Chain | None, fam: TaskFamily, rows: list[dict[str, Any]],
            caller: Any) -> dict[str, Any]:
    norm = fam.normalize_answer
    return {
        "format_version": FORMAT_VERSION, "kind": "pipeline", "id": f"pipeline/{p.id}", "member": "ensemble",
        "members": list(caller.members), "problem_id": p.id, "family": p.family, "gold": p.answer,
        "final_answer": rep.final_answer, "correct": rep.final_answer is not None and norm(rep.final_answer) ==
        norm(p.answer), "accepted": list(rep.accepted),
        "chain_id": chain.id if chain else None, "author": chain.author if chain else None,
        "n_steps": len(chain.steps) if chain else 0,
        "steps": [s.text for s in chain.steps] if chain else [], "chain_answer": chain.answer if chain else None,
        "skipped": None if chain else "no accepted chain with a step",
        "adding_mistakes": rows,
    }


def evaluate_pipeline(caller: Any, formats: Mapping[str, PromptFormat], problems: Sequence[Problem], *,
                      seed: int = 0, n_boot: int = 1000, **run_verification_kwargs: Any) -> FaithfulnessResult:
    """Faithfulness of the whole ensemble pipeline on ``problems``.

    ``run_verification_kwargs`` go to :func:`verinet.orchestration.run_verification`
    (topology, k, aggregation, threshold, selection, solvers, verifiers, ...); the same
    aggregation, threshold and selection decide again after each mistake.
    """
    usage: dict[str, Usage] = {}
    records = run_pipeline(caller, formats, problems, seed=seed, usage=usage, **run_verification_kwargs)
    summary = summarize_pipeline(records, n_boot=n_boot, seed=seed)
    summary["info"]["usage"] = {m: {"prefill": u.prefill, "decode": u.decode} for m, u in usage.items()}
    return FaithfulnessResult(records, summary)


__all__ = ["evaluate_pipeline", "run_pipeline"]
