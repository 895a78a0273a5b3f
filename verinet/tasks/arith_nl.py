"""`arith_nl`: the arith family as word problems, checked exactly from free-form text.

The same kind of problem as ``arith`` (given quantities, quantities defined from others by
``+``, ``-`` or ``×``, distractors, one query), in words, with plain integers (no modulus;
subtraction never goes below zero and products stay small)::

    Ava has 7 coins. Cal has 3 coins. Ben has as many coins as Ava and Cal together.
    Dan has as many coins as Ben has more than Cal. How many coins does Dan have?

The gold chain states every equation in a sentence, one step per line::

    Ava has 7 coins and Cal has 3 coins, so Ben has 7 + 3 = 10 coins.
    Ben has 10 coins and Cal has 3 coins, so Dan has 10 - 3 = 7 coins.
    #### 7

The checker reads any text, not only that phrasing. From each step it takes

* the equations it states (``a + b = r``, ``a × b × c = r``, ``-``, ``*``, ``x`` ...) and the
  claims ``NAME has N`` about the problem's people;
* every equation must be right (exact arithmetic); every number an equation uses must be a
  quantity of the question or a result stated by an earlier step (or earlier in the same
  step) — one that is neither is an *unsupported premise*, and the step is invalid;
* a one-operation equation must compute some quantity of the problem from the values known so
  far (its definition's operator, its operands' values, in order for ``-``): the step then
  states that quantity's value (even a wrong one: later steps are judged against what the chain
  says). A longer expression must equal the true value of a person the step names;
* a claim ``NAME has N`` must agree with what is known (the question, or the latest step that
  computed NAME), and a claim about a person nobody has computed yet is unsupported.

An unsupported premise (a number nobody stated, a claim that disagrees with what is known or
that nobody computed) is also recorded as a *missing* premise (``missing_premises``): the step is
never premise-free, so a step whose result was changed cannot cut the later steps that still use the
old number loose from the chain.

A step's premises are the earlier steps that stated the values it uses. A step with neither an
equation nor a claim (``Let's work it out.``) is valid and unchecked. The ``#### N`` answer is
valid when it equals the value the chain states for the queried person.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from fractions import Fraction

from pydantic import Field, field_validator, model_validator

from verinet.schema import Problem, Step
from verinet.tasks.arith import OPS, check_ops
from verinet.tasks.base import InjectionUnsupported, KnobsBase, StepResult, TaskFamily
from verinet.tasks.gsm8k import _inline, canon_number, evaluate, flexible_number

PEOPLE = ("Ava", "Ben", "Cal", "Dia", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kai", "Lea", "Max", "Nia",
          "Omar", "Pia", "Quin", "Rosa", "Sam", "Tess", "Uma", "Vic", "Wes", "Yara", "Zoe", "Noor")
THINGS = ("apples", "coins", "marbles", "stickers", "books", "shells", "stamps", "pencils", "cards", "beads")
SHOWN = {"+": "+", "-": "-", "*": "×"}
COMMUTATIVE = "+*"
MAX_PRODUCT = 144  # a product above this becomes a sum: small models cannot multiply large numbers
MAX_LINE = 600  # longer step lines are not read (the checker runs on model text)
_CLAIM_VERBS = r"(?:has|had|now\s+has|gets|ends\s+up\s+with|owns|holds)"
_NUMBER = re.compile(r"\d+")
_OPERAND = re.compile(r"\d+(?:\.\d+)?")
_OP_IN = re.compile(r"[-+*/×÷−]")


class ArithNLKnobs(KnobsBase):
    """Difficulty knobs for `arith_nl`."""

    steps: int = Field(default=3, ge=1, le=12, description="steps the query needs (chain depth)")
    givens: int = Field(default=2, ge=2, le=8, description="given quantities")
    distractors: int = Field(default=1, ge=0, le=8, description="defined quantities the query does not need")
    branching: float = Field(default=0.3, ge=0.0, le=1.0,
                             description="probability that a step's second operand is an earlier step")
    max_given: int = Field(default=9, ge=1, le=1000, description="given quantities are drawn from 1..max_given")
    ops: str = Field(default="+-*", description="operators to draw from, a subset of '+-*'")

    @field_validator("ops")
    @classmethod
    def _ops_subset(cls, v: str) -> str:
        return check_ops(v)

    @model_validator(mode="after")
    def _enough_people(self) -> ArithNLKnobs:
        total = self.steps + self.givens + self.distractors
        if total > len(PEOPLE):
            raise ValueError(f"steps + givens + distractors = {total}, but there are {len(PEOPLE)} names; "
                             "lower one of them")
        return self


# ---- sentences ----------------------------------------------------------------------------------
def definition_sentence(name: str, a: str, op: str, b: str, thing: str) -> str:
    if op == "+":
        return f"{name} has as many {thing} as {a} and {b} together."
    if op == "-":
        return f"{name} has as many {thing} as {a} has more than {b}."
    return f"{name} has as many {thing} as {a}'s {thing} times {b}'s."


def step_sentence(name: str, a: str, va: int, op: str, b: str, vb: int, res: int, thing: str) -> str:
    """The canonical step: both premises, then the equation."""
    return f"{a} has {va} {thing} and {b} has {vb} {thing}, so {name} has {va} {SHOWN[op]} {vb} = {res} {thing}."


def _phrase_since(name: str, a: str, va: int, op: str, b: str, vb: int, res: int, thing: str) -> str:
    return f"Since {a} has {va} {thing} and {b} has {vb}, {name} has {va} {SHOWN[op]} {vb} = {res} {thing}."


def _phrase_after(name: str, a: str, va: int, op: str, b: str, vb: int, res: int, thing: str) -> str:
    return f"{name} has {va} {SHOWN[op]} {vb} = {res} {thing}, because {a} has {va} and {b} has {vb}."


_CANON = re.compile(
    r"^(?P<a>[A-Z][a-z]+) has (?P<va>\d+) (?P<t>[a-z]+) and (?P<b>[A-Z][a-z]+) has (?P<vb>\d+) (?P=t), "
    r"so (?P<name>[A-Z][a-z]+) has (?P<va2>\d+) (?P<op>[-+×*]) (?P<vb2>\d+) = (?P<res>\d+) (?P=t)\.$")


@dataclass(frozen=True)
class _Def:
    a: str
    op: str
    b: str


@dataclass
class _Known:
    """What the chain has established so far: name -> (step that stated it or None for a given, value)."""

    values: dict[str, tuple[int | None, Fraction]] = field(default_factory=dict)
    results: list[tuple[int, Fraction]] = field(default_factory=list)  # (step, value) of every equation result

    def numbers(self) -> dict[Fraction, int | None]:
        """Every value stated so far -> the latest step stating it (None: the question)."""
        out: dict[Fraction, int | None] = {}
        stated = [*self.values.values(), *self.results]
        for step, v in sorted(stated, key=lambda x: -1 if x[0] is None else x[0]):
            out[v] = step
        return out


class ArithNLFamily(TaskFamily):
    name = "arith_nl"
    Knobs = ArithNLKnobs

    # ---- generation ---------------------------------------------------------------------------
    def _generate(self, rng: random.Random, seed: int, knobs: ArithNLKnobs) -> Problem:
        names = rng.sample(PEOPLE, knobs.givens + knobs.steps + knobs.distractors)
        thing = rng.choice(THINGS)
        givens = {n: rng.randint(1, knobs.max_given) for n in names[: knobs.givens]}
        given_names = list(givens)
        values: dict[str, int] = dict(givens)
        needed = names[knobs.givens: knobs.givens + knobs.steps]
        defs: dict[str, _Def] = {}

        def define(name: str, a: str, b: str) -> None:
            op = rng.choice(knobs.ops)
            if op == "*" and values[a] * values[b] > MAX_PRODUCT:
                op = "+" if "+" in knobs.ops else "-"
            if op == "-" and values[a] < values[b]:
                a, b = b, a
            defs[name] = _Def(a, op, b)
            values[name] = OPS[op](values[a], values[b])

        for j, name in enumerate(needed):
            if j == 0:
                a, b = rng.sample(given_names, 2)
            else:
                a = needed[j - 1]
                b = rng.choice(needed[: j - 1]) if j >= 2 and rng.random() < knobs.branching \
                    else rng.choice(given_names)
                if rng.random() < 0.5:
                    a, b = b, a
            define(name, a, b)
        order = list(needed)
        for name in names[knobs.givens + knobs.steps:]:
            pos = rng.randint(0, len(order))
            pool = given_names + order[:pos]
            a, b = rng.sample(pool, 2)
            define(name, a, b)
            order.insert(pos, name)
        query = needed[-1]
        lines, vals = _render(needed, defs, givens, thing)
        index = {n: i for i, n in enumerate(needed)}
        gold = [Step(index=i, text=lines[i], value=str(vals[n]),
                     premises=sorted({index[x] for x in (defs[n].a, defs[n].b) if x in index}))
                for i, n in enumerate(needed)]
        question = " ".join(
            [f"{n} has {v} {thing}." for n, v in givens.items()]
            + [definition_sentence(n, defs[n].a, defs[n].op, defs[n].b, thing) for n in order]
            + [f"How many {thing} does {query} have?"])
        return Problem(
            id=self.problem_id(seed, knobs), family="arith_nl", question=question, answer=str(vals[query]),
            gold_steps=gold, seed=seed, params=knobs.model_dump(),
            meta={"thing": thing, "givens": givens, "defs": {n: [d.a, d.op, d.b] for n, d in defs.items()},
                  "order": order, "query": query, "solution": needed,
                  "values": {n: v for n, v in values.items()}},
        )

    # ---- checking -----------------------------------------------------------------------------
    def normalize_answer(self, answer: str | None) -> str | None:
        if answer is None:
            return None
        c = flexible_number(answer)
        return c if c is not None else answer.strip()

    def read_steps(self, problem: Problem, lines: list[str]) -> list[StepResult]:
        return _Reader(problem).read(lines)[0]

    def read_answer(self, problem: Problem, lines: list[str], steps: list[StepResult],
                    answer: str | None) -> StepResult:
        if answer is None:
            return StepResult(False, False, reason="no '#### N' answer line")
        value = self.normalize_answer(answer)
        if value is None or canon_number(value) is None:
            return StepResult(False, False, reason=f"answer {answer[:40]!r} is not a number")
        query = problem.meta["query"]
        known = _Reader(problem).read(lines)[1]
        step, stated = known.values.get(query, (None, None))
        if stated is None or step is None:
            return StepResult(True, False, value=value, reason=f"no step computes how many {query} has")
        ok = Fraction(value) == stated
        why = None if ok else f"answer {value} differs from {query}'s {_fmt(stated)} stated at step {step}"
        return StepResult(True, ok, premises=[step], value=value, reason=why)

    # ---- error injection ----------------------------------------------------------------------
    def _inject(self, problem: Problem, kind: str, rng: random.Random) -> tuple[list[str], str | None, int]:
        meta = problem.meta
        needed: list[str] = meta["solution"]
        defs = {n: _Def(*d) for n, d in meta["defs"].items()}
        givens: dict[str, int] = meta["givens"]
        thing: str = meta["thing"]
        n = len(needed)
        if kind == "wrong_result":
            k = rng.randrange(n)
            lines, values = _render(needed, defs, givens, thing, corrupt={needed[k]: rng.randint(1, 9)})
            return lines, str(values[needed[-1]]), k
        if kind == "wrong_premise":
            lines, values = _render(needed, defs, givens, thing)
            options = []
            for k, name in enumerate(needed):
                d = defs[name]
                for slot in ("a", "b"):
                    orig = getattr(d, slot)
                    for x in list(givens) + needed[:k]:
                        new = _Def(**{**d.__dict__, slot: x})
                        if x in (d.a, d.b) or values[x] == values[orig]:
                            continue  # the same value would make the step valid by its numbers
                        if new.op == "-" and values[new.a] < values[new.b]:
                            continue
                        options.append((k, new))
            if not options:
                raise InjectionUnsupported(f"{problem.id}: no other quantity with a different value to cite")
            k, new = rng.choice(options)
            lines, values = _render(needed, {**defs, needed[k]: new}, givens, thing)
            return lines, str(values[needed[-1]]), k
        lines, values = _render(needed, defs, givens, thing)
        answer = str(values[needed[-1]])
        if kind == "answer_miscopy":
            return lines, str(int(answer) + rng.randint(1, 9)), n
        if kind == "dropped_step":
            k = rng.randrange(n)
            users = [j for j in range(k + 1, n) if needed[k] in (defs[needed[j]].a, defs[needed[j]].b)]
            if not users and k != n - 1:
                raise InjectionUnsupported(f"{problem.id}: nothing needs step {k}, dropping it is no error")
            return lines[:k] + lines[k + 1:], answer, (users[0] - 1 if users else n - 1)
        raise InjectionUnsupported(f"arith_nl cannot inject {kind!r}")

    # ---- faithfulness hooks -------------------------------------------------------------------
    def implied_answer(self, problem: Problem, steps: list[str]) -> str | None:
        known = _Reader(problem).read(steps)[1]
        step, value = known.values.get(problem.meta["query"], (None, None))
        return None if step is None or value is None else _fmt(value)

    def corrupt_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        """The result of the step's last equation (and every later mention of it) raised by 1..9;
        without an equation, its last number changed. None when the step has no number."""
        line = steps[k].strip()
        calcs = _inline(line)
        delta = rng.randint(1, 9)
        if calcs:
            c = calcs[-1]
            eq = line.rfind("=", 0, line.rfind(c.result) + 1)
            old = c.result
            new = str(int(Fraction(canon_number(old) or "0")) + delta)
            after = re.sub(rf"(?<![\d.]){re.escape(old)}(?![\d.])", new, line[eq:])
            return line[:eq] + after
        nums = list(_NUMBER.finditer(line))
        if not nums:
            return None
        last = nums[-1]
        return f"{line[:last.start()]}{int(last[0]) + delta}{line[last.end():]}"

    def paraphrase_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        """The canonical sentence in another order of clauses; other text with the operands of a
        commutative equation swapped; None when neither applies."""
        line = steps[k].strip()
        m = _CANON.match(line)
        if m:
            op = "*" if m["op"] in "×*" else m["op"]
            args = (m["name"], m["a"], int(m["va"]), op, m["b"], int(m["vb"]), int(m["res"]), m["t"])
            return rng.choice([_phrase_since, _phrase_after])(*args)
        for c in _inline(line):
            ops = _OP_IN.findall(c.expr)
            nums = _OPERAND.findall(c.expr)
            if len(ops) == 1 and len(nums) == 2 and ops[0] in "+*×x":
                start = line.find(c.expr)
                swapped = f"{nums[1]} {ops[0]} {nums[0]} "
                return line[:start] + swapped + line[start + len(c.expr):]
        return None


def gsm8k_record(problem: Problem) -> dict[str, str]:
    """The problem as a GSM8K-format line: the gold sentences with ``<<a op b=r>>`` calculator annotations,
    then ``#### N``, so GSM8K tooling (and verinet's gsm8k family) reads problems the project generates."""
    if problem.family != "arith_nl":
        raise ValueError(f"gsm8k_record takes arith_nl problems, got family {problem.family}")
    lines = []
    for s in problem.gold_steps:
        m = _CANON.match(s.text)
        if m is None:  # pragma: no cover - gold steps are canonical
            raise ValueError(f"{problem.id}: gold step {s.index} is not canonical: {s.text!r}")
        op = "*" if m["op"] in "×*" else m["op"]
        eq = f"{m['va2']} {m['op']} {m['vb2']} = "
        lines.append(s.text.replace(eq + m["res"], f"{eq}<<{m['va2']}{op}{m['vb2']}={m['res']}>>{m['res']}"))
    return {"id": f"gsm8k-{problem.id}", "question": problem.question, "answer": "\n".join(lines + [f"#### {problem.answer}"])}


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.6g}"


def _render(order: list[str], defs: dict[str, _Def], givens: dict[str, int], thing: str,
            corrupt: dict[str, int] | None = None) -> tuple[list[str], dict[str, int]]:
    """Canonical step sentences computing ``order`` in turn; ``corrupt`` adds to a result."""
    values = dict(givens)
    lines = []
    for name in order:
        d = defs[name]
        res = OPS[d.op](values[d.a], values[d.b])
        if corrupt and name in corrupt:
            res += corrupt[name]
        values[name] = res
        lines.append(step_sentence(name, d.a, values[d.a], d.op, d.b, values[d.b], res, thing))
    return lines, values


class _Reader:
    """Reads a chain's steps in order, keeping what each has established (see the module docstring)."""

    def __init__(self, problem: Problem) -> None:
        meta = problem.meta
        self.givens: dict[str, int] = meta["givens"]
        self.defs = {n: _Def(*d) for n, d in meta["defs"].items()}
        self.true: dict[str, int] = meta["values"]
        people = sorted(set(self.givens) | set(self.defs), key=len, reverse=True)
        alt = "|".join(re.escape(p) for p in people)
        self._claim = re.compile(rf"\b({alt})\s+{_CLAIM_VERBS}\s+(?:only\s+|now\s+)?(\d+(?:\.\d+)?)(?![\d.]*\s*[-+*/×÷=])")
        self._name = re.compile(rf"\b({alt})\b")

    def read(self, lines: list[str]) -> tuple[list[StepResult], _Known]:
        known = _Known({n: (None, Fraction(v)) for n, v in self.givens.items()})
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(self._step(i, line, known))
            except Exception as e:  # defensive: the checker never raises on model text
                out.append(StepResult(True, False, [i - 1] if i else [], reason=f"internal checker error: "
                                                                                 f"{type(e).__name__}"))
        return out, known

    def _step(self, i: int, line: str, known: _Known) -> StepResult:
        if len(line) > MAX_LINE:
            return StepResult(False, False, reason=f"step longer than {MAX_LINE} characters")
        calcs = _inline(line)
        claims = [(m[1], Fraction(m[2]), m.start()) for m in self._claim.finditer(line)]
        mentioned = [(m[1], m.start()) for m in self._name.finditer(line)]
        if not calcs and not claims:
            return StepResult(True, True, [], None, "no equation or quantity to check", checked=False)
        premises: set[int] = set()
        failures: list[str] = []
        missing: list[str] = []  # values the step uses that nothing before it states
        computed: dict[str, Fraction] = {}  # this step's results, by person
        value: Fraction | None = None
        local: set[Fraction] = set()  # results of earlier equations of this step
        for c in calcs:
            nums = [Fraction(s) for s in _OPERAND.findall(c.expr.replace(",", ""))]
            ops = [o for o in _OP_IN.findall(c.expr)]
            result = canon_number(c.result)
            if result is None:
                failures.append(f"cannot read the result of {c.label}")
                continue
            res = Fraction(result)
            try:
                got = evaluate(c.expr)
            except ValueError as e:
                failures.append(f"cannot evaluate {c.label}: {e}")
                got = None
            if got is not None and got != res:
                failures.append(f"{c.label} is wrong: it is {_fmt(got)}, not {_fmt(res)}")
            numbers = known.numbers()
            used: set[int] = set()
            for x in nums:
                if x in local:
                    continue
                if x not in numbers:
                    failures.append(f"unsupported premise: {_fmt(x)} is neither a quantity of the question nor "
                                    "a result of an earlier step")
                    missing.append(_fmt(x))
                elif numbers[x] is not None:
                    used.add(numbers[x])  # type: ignore[arg-type]
            at = line.find(c.label[:20]) if c.label[:20] in line else line.find("=")
            target, why = self._target(nums, ops, res, known, mentioned, at)
            if why is not None:
                failures.append(why)
                premises.update(used)
                if target is not None:  # what the chain now says that person has
                    computed[target] = res
            elif target is not None:
                computed[target] = res
                d = self.defs[target]
                premises.update(s for s in (known.values.get(d.a, (None,))[0], known.values.get(d.b, (None,))[0])
                                if s is not None)
            else:
                premises.update(used)
            local.add(res)
            value = res
        # claims: what the step says people have
        for person, v, _ in claims:
            if person in computed:
                if computed[person] != v:
                    failures.append(f"the step computes {person}'s {_fmt(computed[person])} but says {_fmt(v)}")
                continue
            if person in known.values:
                step, true = known.values[person]
                if true != v:
                    where = "in the question" if step is None else f"at step {step}"
                    failures.append(f"{person} has {_fmt(true)} ({where}), but the step says {_fmt(v)}")
                    missing.append(f"{person} has {_fmt(v)}")
                elif step is not None:
                    premises.add(step)
            elif not calcs or v not in computed.values():
                failures.append(f"unsupported premise: {person} has {_fmt(v)}, but no earlier step computes "
                                f"how many {person} has")
                missing.append(f"{person} has {_fmt(v)}")
            else:  # the step computes this value, under another person's definition
                failures.append(f"{person} is defined as {self._def_text(person)}, which this step does not compute")
        if not calcs and value is None and claims:
            value = claims[-1][1]
        for person, v in computed.items():
            known.values[person] = (i, v)
        known.results += [(i, Fraction(canon_number(c.result) or "0")) for c in calcs if canon_number(c.result)]
        reason = None
        if failures:
            reason = failures[0] + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
        return StepResult(True, not failures, sorted(p for p in premises if p < i),
                          None if value is None else _fmt(value), reason, missing=list(dict.fromkeys(missing)))

    def _def_text(self, person: str) -> str:
        d = self.defs[person]
        return f"{d.a} {SHOWN[d.op]} {d.b}"

    def _subject(self, mentioned: list[tuple[str, int]], at: int) -> str | None:
        """The defined person named last before position ``at`` (the equation), else the first after it."""
        before = [p for p, pos in mentioned if pos < at and p in self.defs]
        after = [p for p, pos in mentioned if pos > at and p in self.defs]
        return before[-1] if before else after[0] if after else None

    def _target(self, nums: list[Fraction], ops: list[str], res: Fraction, known: _Known,
                mentioned: list[tuple[str, int]], at: int) -> tuple[str | None, str | None]:
        """(the person an equation computes, why it is wrong or None). The person is None when the
        equation computes nobody the step names (an intermediate part of a longer computation)."""
        named = [p for p in dict.fromkeys(p for p, _ in mentioned) if p in self.defs]
        if len(nums) == 2 and len(ops) == 1:
            op = {"×": "*", "÷": "/", "−": "-"}.get(ops[0], ops[0])
            cands = []
            for person, d in self.defs.items():
                if d.op != op or d.a not in known.values or d.b not in known.values:
                    continue
                va, vb = known.values[d.a][1], known.values[d.b][1]
                if [va, vb] == nums or (op in COMMUTATIVE and [vb, va] == nums):
                    cands.append(person)
            shown = f"{_fmt(nums[0])} {ops[0]} {_fmt(nums[1])}"
            if not cands:
                why = f"{shown} does not compute any quantity of the problem from the values known so far"
                subject = self._subject(mentioned, at)
                return (subject if subject is not None and subject not in known.values else None), why
            subject = self._subject(mentioned, at)
            if subject is not None and subject not in known.values:  # "..., so Ben has 7 + 3 = 10"
                if subject in cands:
                    return subject, None
                return subject, f"{subject} is defined as {self._def_text(subject)}, not {shown}"
            new = [p for p in named if p not in known.values]  # whom the step computes, by its words
            for person in reversed(new):
                if person in cands:
                    return person, None
            if new:  # the step names someone new, whom this equation does not compute
                return new[-1], f"{new[-1]} is defined as {self._def_text(new[-1])}, not {shown}"
            for person in reversed(named):
                if person in cands:
                    return person, None
            return cands[0], None
        # a longer expression: it must give the true value of a person the step names
        for person in reversed(named):
            if person not in known.values and Fraction(self.true[person]) == res:
                return person, None
        new = [p for p in named if p not in known.values]
        if new:
            return new[-1], f"{_fmt(res)} is not how many {' or '.join(new)} has"
        return None, None

__all__ = ["ArithNLFamily", "ArithNLKnobs", "definition_sentence", "gsm8k_record", "step_sentence"]
