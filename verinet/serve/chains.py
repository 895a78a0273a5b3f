"""A client's chain as verinet records: limits, the family reader, and the exact checker.

A request names a ``format``: ``text`` (free-text steps, the default; each step is read as
using the one before it, as the graph does for chains without premises) or a task family
(``arith``, ``logic``, ``gsm8k``). For a family the question is read back into the problem
record its checker needs (arith and logic questions state every rule and value), the chain
is read with the family's step reader (real premises, values) and checked exactly; a question
that is not in the family's format is a 422.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from verinet.schema import Chain, Problem, Step
from verinet.serve.api import LINE_BREAKS, CheckerReport, VerifyRequest
from verinet.serve.config import Limits
from verinet.tasks import ANSWER_CUE, TaskFamily, get_family, split_chain


class RequestError(ValueError):
    """A request the server refuses; ``status``, ``code`` and ``field`` go into the JSON error."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 limit: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.limit = status, code, message, field, limit


@dataclass
class ClientChain:
    problem_id: str
    question: str
    steps: list[str]
    answer: str | None
    chain: Chain
    problem: Problem | None  # for a family format
    family: TaskFamily | None

    @property
    def n_items(self) -> int:
        return len(self.steps) + (self.answer is not None)

    def item_text(self, i: int) -> str:
        return self.steps[i] if i < len(self.steps) else f"{ANSWER_CUE} {self.answer}"


# ---- questions of the generated families, read back into problems ---------------------------
_ARITH_GIVEN = re.compile(r"^([a-z])(\d{1,6})$")
_ARITH_DEF = re.compile(r"^([a-z]):([a-z])([-+*])([a-z])$")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def arith_problem(question: str, problem_id: str) -> Problem:
    """``%10;o3;g3;h:g-o;r:g-h;?r`` -> the Problem (with the meta the checker reads, and the answer)."""
    parts = question.strip().split(";")
    if len(parts) < 3 or not re.fullmatch(r"%\d{1,4}", parts[0]) or not re.fullmatch(r"\?[a-z]", parts[-1]):
        raise ValueError("expected '%MOD;NAME VALUE;...;NAME:A op B;...;?NAME', e.g. '%10;o3;g3;h:g-o;?h'")
    mod = int(parts[0][1:])
    if mod < 2:
        raise ValueError(f"modulus {mod} must be at least 2")
    givens: dict[str, int] = {}
    defs: dict[str, list[str]] = {}
    for part in parts[1:-1]:
        if m := _ARITH_GIVEN.match(part):
            name, value = m[1], int(m[2])
        elif m := _ARITH_DEF.match(part):
            name, value = m[1], None
        else:
            raise ValueError(f"cannot read {part[:40]!r}: a given is 'x3', a definition 'x:a+b'")
        if name in givens or name in defs:
            raise ValueError(f"{name} is stated twice")
        if value is not None:
            givens[name] = value
        else:
            if m[2] not in givens and m[2] not in defs or m[4] not in givens and m[4] not in defs:
                raise ValueError(f"{part}: uses a name that is not stated before it")
            defs[name] = [m[2], m[3], m[4]]
    query = parts[-1][1:]
    if query not in defs:
        raise ValueError(f"the query {query} is not a defined variable")
    values = dict(givens)
    for name, (a, op, b) in defs.items():
        values[name] = _OPS[op](values[a], values[b]) % mod
    needed: list[str] = []
    todo = [query]
    while todo:
        n = todo.pop()
        if n in defs and n not in needed:
            needed.append(n)
            todo += [defs[n][0], defs[n][2]]
    order = list(defs)
    return Problem(id=problem_id, family="arith", question=question, answer=str(values[query]),
                   meta={"modulus": mod, "givens": givens, "defs": defs, "order": order, "query": query,
                         "solution": [n for n in order if n in needed]})


_WORD = r"[^\W\d_][\w'-]*"
_LOGIC_RULE = re.compile(rf"^Every ({_WORD}) is (not )?an? ({_WORD})$")
_LOGIC_FACT = re.compile(rf"^({_WORD}) is an? ({_WORD})$")
_LOGIC_QUERY = re.compile(rf"^True or false: ({_WORD}) is an? ({_WORD})$")


def logic_problem(question: str, problem_id: str) -> Problem:
    """'Every A is (not) a B. ... Rex is a A. True or false: Rex is a C.' -> the Problem (answer unknown)."""
    sentences = [s.strip() for s in re.split(r"(?<=\.)\s+", question.strip()) if s.strip()]
    if len(sentences) < 2 or not all(s.endswith(".") for s in sentences):
        raise ValueError("expected sentences 'Every A is (not) a B.', then 'ENTITY is a A.', then "
                         "'True or false: ENTITY is a C.'")
    body = [s[:-1] for s in sentences]
    q = _LOGIC_QUERY.match(body[-1])
    f = _LOGIC_FACT.match(body[-2]) if len(body) >= 2 else None
    if q is None or f is None:
        raise ValueError("the question must end with 'ENTITY is a A. True or false: ENTITY is a C.'")
    if q[1] != f[1]:
        raise ValueError(f"the fact is about {f[1]} but the query about {q[1]}")
    rules = []
    for s in body[:-2]:
        m = _LOGIC_RULE.match(s)
        if m is None:
            raise ValueError(f"cannot read the rule {s[:60]!r}: expected 'Every A is (not) a B.'")
        rules.append([m[1].lower(), m[3].lower(), m[2] is not None])
    return Problem(id=problem_id, family="logic", question=question, answer="",
                   meta={"entity": f[1], "fact": f[2].lower(), "rules": rules, "query": q[2].lower()})


def family_problem(family: str, question: str, problem_id: str) -> Problem:
    try:
        if family == "arith":
            return arith_problem(question, problem_id)
        if family == "logic":
            return logic_problem(question, problem_id)
    except ValueError as e:
        raise RequestError(422, "bad_question", f"question: not in the {family} format: {e}",
                           field="question") from None
    return Problem(id=problem_id, family="gsm8k", question=question, answer="")


# ---- the request's chain --------------------------------------------------------------------
def _check_text(where: str, text: str, reserved: tuple[str, ...]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(422, "invalid_unicode", f"{where}: not valid Unicode (lone surrogate)",
                           field=where) from None
    for tok in reserved:
        if tok in text:
            raise RequestError(422, "reserved_token", f"{where}: contains {tok!r}, a control token of the "
                               "members' prompt format", field=where)


def _line_break(text: str) -> str | None:
    """The first character of ``text`` that would split it into lines, named ('U+2028'), or None."""
    c = next((c for c in text if c in LINE_BREAKS), None)
    return None if c is None else f"U+{ord(c):04X}"


def client_chain(req: VerifyRequest, limits: Limits, *, reserved: tuple[str, ...] = (),
                 where: str = "") -> ClientChain:
    """Read, limit-check and (for a family format) parse one request's chain."""
    if req.steps is not None:
        steps, answer = list(req.steps), req.answer
    else:
        sc = split_chain(req.chain or "")
        if sc.answer is not None and req.answer is not None:
            raise RequestError(422, "answer_twice", f"{where}answer: the chain text already has an answer "
                               f"line ('{ANSWER_CUE} ...'); give the answer once", field=f"{where}answer")
        steps, answer = sc.steps, sc.answer if sc.answer is not None else req.answer
    if len(steps) > limits.max_steps:
        raise RequestError(422, "too_many_steps", f"{where}steps: {len(steps)} steps, at most "
                           f"{limits.max_steps}", field=f"{where}steps", limit=limits.max_steps)
    n_chars = len(req.question) + sum(len(s) for s in steps) + len(answer or "")
    if n_chars > limits.max_chars:
        raise RequestError(422, "too_many_chars", f"{where}: {n_chars} characters in the question, steps "
                           f"and answer, at most {limits.max_chars}", field=f"{where}steps",
                           limit=limits.max_chars)
    if not steps and answer is None:
        raise RequestError(422, "empty_chain", f"{where}steps: no steps and no answer: nothing to verify",
                           field=f"{where}steps")
    if not req.question.strip():
        raise RequestError(422, "empty_question", f"{where}question: the question is blank",
                           field=f"{where}question")
    _check_text(f"{where}question", req.question, reserved)
    for i, s in enumerate(steps):
        if not s.strip():
            raise RequestError(422, "empty_step", f"{where}steps.{i}: the step is empty",
                               field=f"{where}steps.{i}")
        if (lb := _line_break(s)) is not None:
            raise RequestError(422, "multiline_step", f"{where}steps.{i}: contains a line break ({lb}); give one "
                               "step per list item", field=f"{where}steps.{i}")
        if s.strip().startswith(ANSWER_CUE):
            raise RequestError(422, "answer_in_steps", f"{where}steps.{i}: starts with the answer cue "
                               f"'{ANSWER_CUE}'; put the answer in `answer`", field=f"{where}steps.{i}")
        _check_text(f"{where}steps.{i}", s, reserved)
    if answer is not None:
        if not answer.strip():
            raise RequestError(422, "empty_answer", f"{where}answer: the answer is blank; leave it out to "
                               "verify the steps only", field=f"{where}answer")
        if (lb := _line_break(answer)) is not None:
            raise RequestError(422, "multiline_step", f"{where}answer: contains a line break ({lb})",
                               field=f"{where}answer")
        _check_text(f"{where}answer", answer, reserved)
    steps = [s.strip() for s in steps]
    answer = answer.strip() if answer is not None else None
    pid = req.id or f"req-{uuid.uuid4().hex[:12]}"
    text = "\n".join(steps + ([f"{ANSWER_CUE} {answer}"] if answer is not None else []))
    if req.format == "text":
        linear = [Step(index=i, text=s, premises=[i - 1] if i else []) for i, s in enumerate(steps)]
        chain = Chain(id=f"{pid}/client", problem_id=pid, author="client", text=text, steps=linear,
                      answer=answer)
        return ClientChain(pid, req.question, steps, answer, chain, None, None)
    fam = get_family(req.format)
    problem = family_problem(req.format, req.question, pid)
    chain = fam.parse_chain(problem, text, chain_id=f"{pid}/client", author="client")
    if len(chain.steps) != len(steps) or chain.answer != answer:  # the family reads lines as split_chain does
        raise RequestError(422, "bad_chain", f"{where}steps: a step starts with the answer cue "
                           f"'{ANSWER_CUE}'; put the answer in `answer`", field=f"{where}steps")
    return ClientChain(pid, req.question, steps, answer, chain, problem, fam)


def checker_report(c: ClientChain) -> CheckerReport | None:
    """The family's exact judgement of every item of the chain (None for free text)."""
    if c.family is None or c.problem is None:
        return None
    check = c.family.check(c.problem, c.chain.text)
    items = list(check.steps) + ([check.answer] if c.answer is not None else [])
    valid = [s.valid for s in items]
    first = next((i for i, v in enumerate(valid) if not v), -1)
    return CheckerReport(family=c.family.name, first_error=first, valid=valid,
                         reasons=[s.reason for s in items])


__all__ = ["ClientChain", "RequestError", "arith_problem", "checker_report", "client_chain", "family_problem",
           "logic_problem"]
