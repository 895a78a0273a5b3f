"""Faithfulness of single models, each continuing its own chains, batched through a caller.

For every (member, problem) the member first solves the problem; then every intervention
of the requested tests is built from that chain and sent back to the same member. The
work runs in five rounds, each one ``generate`` call per member (all members in the same
``call_each``): solve; model-written edits (only for steps the family cannot edit);
forced answers (early answering, the full-chain reference, filler, no chain);
continuations after a mistake or a paraphrase; and forced answers for continuations that
stopped without one. One JSON-able record per chain comes out; :func:`summarize` turns
records into figures.

A record (``kind: "model"``, ``id: "<member>/<problem id>"``) holds the chain (``steps``,
``answer``, the checker's ``first_error``, ``correct``), ``with_chain`` (the answer forced
right after the full chain: the *reference* every intervention is compared with),
``follows`` (the implied answer of the chain and whether the final answer equals it),
and one entry per test: ``early_answering`` (``answers``/``same`` for k = 0..n),
``adding_mistakes`` and ``paraphrasing`` (a row per k: the edited text, ``how`` it was
edited, what the model wrote after it, its answer and ``changed``/``same``; rows with
``applied: false`` could not be edited), ``filler`` and ``no_chain`` (answer, correct).
Answers are compared in the family's normal form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from verinet.backends.base import Usage
from verinet.backends.formats import PromptFormat
from verinet.faithfulness.calls import Round
from verinet.faithfulness.interventions import (
    TESTS, StepEdit, family_edits, forced_answer, paraphrased_prefix, truncations, with_mistake,
)
from verinet.faithfulness.summary import FaithfulnessResult, summarize
from verinet.schema import FORMAT_VERSION, Problem
from verinet.tasks import TaskFamily, get_family


def check_tests(tests: Sequence[str]) -> tuple[str, ...]:
    """The tests in canonical order; raises ValueError naming an unknown one."""
    tests = tuple(tests)
    bad = [t for t in tests if t not in TESTS]
    if bad:
        raise ValueError(f"unknown faithfulness tests {bad}; choose from {list(TESTS)}")
    return tuple(t for t in TESTS if t in tests)


def solve_tokens(problem: Problem, fmt: PromptFormat | None = None) -> int:
    """Generation budget for a chain (or the rest of one): 1.5 x the gold chain, plus slack.

    Counted in the format's tokens (characters for the zoo; a chat model's own tokens, about four
    characters each, plus a "Step k:" mark per step), so a real model that never stops writing steps
    is cut at a length like the gold chain's rather than at four times it."""
    gold = get_family(problem.family).gold_chain(problem).text
    if fmt is None or fmt.name == "zoo":  # one zoo token is one character
        return int(len(gold) * 1.5) + 16
    return int((fmt.count_tokens(gold) + 4 * len(problem.gold_steps)) * 1.5) + 16


@dataclass
class _Cont:
    """One continuation: the prefix the model was given, what it wrote, its answer."""

    prefix: list[str]
    rest: list[str] = field(default_factory=list)
    answer: str | None = None
    forced: bool = False


@dataclass
class _Work:
    """Everything measured for one member on one problem."""

    member: str
    fmt: PromptFormat
    problem: Problem
    fam: TaskFamily
    steps: list[str] = field(default_factory=list)
    stated: str | None = None
    n_written: int = 0  # steps the member wrote (``steps`` keeps at most ``max_steps`` of them)
    text: str = ""
    reference: str = ""
    early: dict[int, str] = field(default_factory=dict)
    mistakes: list[StepEdit] = field(default_factory=list)
    paraphrases: list[StepEdit] = field(default_factory=list)
    mistake_runs: dict[int, _Cont] = field(default_factory=dict)
    paraphrase_runs: dict[int, _Cont] = field(default_factory=dict)
    filler: str | None = None
    no_chain: str | None = None

    @property
    def question(self) -> str:
        return self.problem.question

    def norm(self, answer: str | None) -> str | None:
        return self.fam.normalize_answer(answer)


def run_models(caller: Any, formats: Mapping[str, PromptFormat], work: Mapping[str, Sequence[Problem]], *,
               tests: Sequence[str] = TESTS, seed: int = 0, answer_tokens: int = 16,
               usage: dict[str, Usage] | None = None, max_steps: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Records (one per problem, in order) for every member of ``work`` ({member: problems}).

    ``max_steps`` keeps the first ``max_steps`` steps of a longer chain (a real model may repeat a line
    for its whole budget; every intervention costs model calls per step); records keep the count written.
    """
    tests = check_tests(tests)
    unknown = sorted(set(work) - set(caller.members))
    if unknown:
        raise ValueError(f"unknown members {unknown}; the caller has {list(caller.members)}")
    if answer_tokens < 1:
        raise ValueError(f"answer_tokens must be >= 1, got {answer_tokens}")
    items = [_Work(m, formats[m], p, get_family(p.family)) for m, ps in work.items() for p in ps]
    usage = usage if usage is not None else {}

    # 1. every member solves its problems
    rnd = Round(usage)
    for w in items:
        rnd.add(w.member, w.fmt.solve_prompt(w.question), solve_tokens(w.problem, w.fmt),
                lambda t, w=w: _solved(w, t, max_steps))
    rnd.run(caller, seed=seed)

    # 2. edits: the family's where it can, else the member rewrites the step (free text)
    rnd = Round(usage)
    for w in items:
        for test, what, attr in (("adding_mistakes", "mistake", "mistakes"),
                                 ("paraphrasing", "paraphrase", "paraphrases")):
            if test not in tests:
                continue
            edits = family_edits(w.fam, w.problem, w.steps, what, seed)
            setattr(w, attr, edits)
            for e in edits:
                prompt = w.fmt.edit_prompt(what, w.question, w.steps[e.k]) if e.text is None else None
                if prompt is not None:
                    rnd.add(w.member, prompt, 2 * w.fmt.count_tokens(w.steps[e.k]) + 32,
                            lambda t, w=w, e=e: _edited(w, e, t))
    rnd.run(caller, seed=seed)

    # 3. forced answers: after the full chain (the reference), truncations, filler, no chain
    rnd = Round(usage)
    for w in items:
        n = len(w.steps)
        rnd.add(w.member, w.fmt.force_prompt(w.question, w.steps), answer_tokens,
                lambda t, w=w: setattr(w, "reference", forced_answer(t)))
        if "early_answering" in tests:
            for k, prefix in enumerate(truncations(w.steps)[:n]):
                rnd.add(w.member, w.fmt.force_prompt(w.question, prefix), answer_tokens,
                        lambda t, w=w, k=k: w.early.__setitem__(k, forced_answer(t)))
        if "filler" in tests:
            rnd.add(w.member, w.fmt.filler_prompt(w.question, w.steps), answer_tokens,
                    lambda t, w=w: setattr(w, "filler", forced_answer(t)))
            rnd.add(w.member, w.fmt.force_prompt(w.question, []), answer_tokens,
                    lambda t, w=w: setattr(w, "no_chain", forced_answer(t)))
    rnd.run(caller, seed=seed)

    # 4. the member writes the rest of the chain after a mistake, or after reworded steps
    rnd = Round(usage)
    for w in items:
        budget = solve_tokens(w.problem, w.fmt)
        for e in w.mistakes:
            prefix = with_mistake(w.steps, e)
            if prefix is not None:
                c = w.mistake_runs[e.k] = _Cont(prefix)
                rnd.add(w.member, w.fmt.continue_prompt(w.question, prefix), budget,
                        lambda t, w=w, c=c: _continued(w, c, t))
        if w.paraphrases:
            for k in range(1, len(w.steps) + 1):
                prefix = paraphrased_prefix(w.steps, w.paraphrases, k)
                if prefix != w.steps[:k]:
                    c = w.paraphrase_runs[k] = _Cont(prefix)
                    rnd.add(w.member, w.fmt.continue_prompt(w.question, prefix), budget,
                            lambda t, w=w, c=c: _continued(w, c, t))
    rnd.run(caller, seed=seed)

    # 5. continuations that stopped without an answer line: force one
    rnd = Round(usage)
    for w in items:
        for c in [*w.mistake_runs.values(), *w.paraphrase_runs.values()]:
            if c.answer is None:
                c.forced = True
                rnd.add(w.member, w.fmt.force_prompt(w.question, c.prefix + c.rest), answer_tokens,
                        lambda t, c=c: setattr(c, "answer", forced_answer(t)))
    rnd.run(caller, seed=seed)

    out: dict[str, list[dict[str, Any]]] = {m: [] for m in work}
    for w in items:
        out[w.member].append(_record(w, tests))
    return out


def _solved(w: _Work, text: str, max_steps: int | None = None) -> None:
    w.steps, w.stated = w.fmt.parse(text)
    w.n_written = len(w.steps)
    if max_steps is not None:
        w.steps = w.steps[:max_steps]
    w.text = w.fmt.chain_text(w.steps, w.stated)


def _edited(w: _Work, e: StepEdit, text: str) -> None:
    new = w.fmt.parse_edit(text)
    if new:
        e.text, e.how = new, "model"


def _continued(w: _Work, c: _Cont, text: str) -> None:
    c.rest, c.answer = w.fmt.parse(text)


def _record(w: _Work, tests: tuple[str, ...]) -> dict[str, Any]:
    p, fam, n = w.problem, w.fam, len(w.steps)
    ref, gold = w.norm(w.reference), w.norm(p.answer)
    check = fam.check(p, w.text)
    final = w.stated if w.stated is not None else w.reference
    implied = fam.implied_answer(p, w.steps)
    rec: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "kind": "model", "id": f"{w.member}/{p.id}", "member": w.member,
        "problem_id": p.id, "family": p.family, "gold": p.answer, "n_steps": n, "n_steps_written": w.n_written,
        "chain": {"steps": w.steps, "answer": w.stated, "first_error": check.first_error,
                  "correct": check.answer_correct},
        "with_chain": {"answer": w.reference, "correct": ref == gold},
        "follows": {"implied": implied, "answer": final,
                    "follows": None if implied is None else w.norm(final) == implied},
    }
    if "early_answering" in tests:
        answers = [w.early[k] for k in range(n)] + [w.reference]
        rec["early_answering"] = {"answers": answers, "same": [w.norm(a) == ref for a in answers]}
    if "adding_mistakes" in tests:
        rows = []
        for e in w.mistakes:
            c = w.mistake_runs.get(e.k)
            if c is None:
                rows.append({"k": e.k, "how": e.how, "applied": False})
                continue
            steps = c.prefix + c.rest
            after = fam.check(p, fam.format_chain(steps, c.answer))
            implied_k = fam.implied_answer(p, steps)
            rows.append({
                "k": e.k, "how": e.how, "applied": True, "step": e.text, "rest": c.rest, "answer": c.answer,
                "forced": c.forced, "changed": w.norm(c.answer) != ref, "implied": implied_k,
                "follows": None if implied_k is None else w.norm(c.answer) == implied_k,
                "step_valid_before": _valid(check, e.k), "step_valid_after": _valid(after, e.k),
            })
        rec["adding_mistakes"] = rows
    if "paraphrasing" in tests:
        rows = []
        for k in range(1, n + 1):
            c = w.paraphrase_runs.get(k)
            if c is None:
                rows.append({"k": k, "applied": False})
                continue
            hows = sorted({e.how for e in w.paraphrases[:k] if e.how != "none"})
            rows.append({"k": k, "applied": True, "how": "+".join(hows), "steps": c.prefix, "rest": c.rest,
                         "answer": c.answer, "forced": c.forced, "same": w.norm(c.answer) == ref})
        rec["paraphrasing"] = rows
    if "filler" in tests:
        rec["filler"] = {"answer": w.filler, "correct": w.norm(w.filler) == gold,
                         "tokens": w.fmt.count_tokens("\n".join(w.steps))}
        rec["no_chain"] = {"answer": w.no_chain, "correct": w.norm(w.no_chain) == gold}
    return rec


def _valid(check: Any, k: int) -> bool | None:
    return check.steps[k].valid if k < len(check.steps) else None


def evaluate_models(caller: Any, formats: Mapping[str, PromptFormat], problems: Sequence[Problem], *,
                    tests: Sequence[str] = TESTS, seed: int = 0, n_boot: int = 1000, answer_tokens: int = 16
                    ) -> dict[str, FaithfulnessResult]:
    """:func:`evaluate_model` for every member of ``formats`` at once (one call per member per round)."""
    usage: dict[str, Usage] = {}
    records = run_models(caller, formats, {m: list(problems) for m in formats}, tests=tests, seed=seed,
                         answer_tokens=answer_tokens, usage=usage)
    out = {}
    for m, recs in records.items():
        summary = summarize(recs, n_boot=n_boot, seed=seed)
        u = usage.get(m, Usage())
        summary["info"]["usage"] = {"prefill": u.prefill, "decode": u.decode}
        out[m] = FaithfulnessResult(recs, summary)
    return out


def evaluate_model(caller: Any, member: str, fmt: PromptFormat, problems: list[Problem], *,
                   tests: Sequence[str] = TESTS, seed: int = 0, n_boot: int = 1000,
                   answer_tokens: int = 16) -> FaithfulnessResult:
    """Faithfulness of ``member`` (prompted through ``fmt``), continuing its own chains on ``problems``.

    ``tests``: any of early_answering, adding_mistakes, paraphrasing, filler. Returns one
    record per problem and a summary: metric -> {"value", "ci_low", "ci_high", "n"}, plus
    "curves", "by_family" and "info" (see :func:`verinet.faithfulness.summarize`).
    """
    return evaluate_models(caller, {member: fmt}, problems, tests=tests, seed=seed, n_boot=n_boot,
                           answer_tokens=answer_tokens)[member]


__all__ = ["check_tests", "evaluate_model", "evaluate_models", "run_models", "solve_tokens"]
