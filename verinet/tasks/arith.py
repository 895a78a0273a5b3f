"""`arith`: modular arithmetic over a DAG of named variables, with distractors.

A question lists the modulus, the given values, the definitions and the query::

    %10;t0;i7;x:i+t;w:t*t;l:x-i;u:l*i;?u

``w`` is a distractor: nothing the query needs uses it. The canonical chain
computes only what the query needs, one step per line::

    x:i+t>i7+t0>7;x7
    l:x-i>x7-i7>0;l0
    u:l*i>l0*i7>0;u0
    #### 0

Each step restates the definition it applies (``x:i+t``), writes every operand's
name directly before its value (``i7+t0``), the result, and finally restates
the new variable with its value (``x7``). That redundancy is deliberate: it
turns every lookup into "find the earlier copy of this name and copy what
follows", which small character-level models can learn, where terser formats
stay at chance (see shared/ENVIRONMENT.md, "Training tiny reasoners").

A step is *locally valid* when its definition matches the problem (the operands
of ``+`` and ``*`` may come in either order: ``x:t+i`` restates ``x:i+t``), every
operand value equals the given value or the value stated by the latest earlier
step that computed that operand (leading zeros allowed), and the result is right
modulo the modulus.

For the faithfulness suite the family also corrupts a step (its result, restated
consistently, changes to another value), paraphrases one (operands of a commutative
operator swapped, or operand values written with a leading zero) and reads the
answer a chain implies (the value it states for the queried variable).
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from pydantic import Field, field_validator, model_validator

from verinet.schema import Problem, Step
from verinet.tasks.base import InjectionUnsupported, KnobsBase, StepResult, TaskFamily

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
COMMUTATIVE = "+*"
NAMES = string.ascii_lowercase

_STEP = re.compile(
    r"^(?P<name>[a-z]):(?P<a>[a-z])(?P<op>[-+*])(?P<b>[a-z])"
    r">(?P<a2>[a-z])(?P<va>\d{1,6})(?P<op2>[-+*])(?P<b2>[a-z])(?P<vb>\d{1,6})"
    r">(?P<res>\d{1,6});(?P<name2>[a-z])(?P<res2>\d{1,6})$"
)
_ANSWER = re.compile(r"^\d{1,6}$")
def check_ops(v: str) -> str:
    """An ``ops`` knob: a non-empty subset of '+-*' without repeats (arith and arith_nl share it)."""
    if not v or set(v) - set(OPS) or len(set(v)) != len(v):
        raise ValueError(f"must be a non-empty subset of '+-*' without repeats, got {v!r}")
    return v


STEP_SHAPE = "'x:a+b>aV+bV>R;xR' (V, R decimal)"


class ArithKnobs(KnobsBase):
    """Difficulty knobs for `arith`."""

    steps: int = Field(default=3, ge=1, le=20, description="steps the query needs (chain depth)")
    givens: int = Field(default=2, ge=2, le=10, description="given constants")
    distractors: int = Field(default=1, ge=0, le=15, description="defined variables the query does not need")
    branching: float = Field(
        default=0.3, ge=0.0, le=1.0,
        description="probability that a step's second operand is an earlier step rather than a given",
    )
    modulus: int = Field(default=10, ge=2, le=1000, description="all values are taken modulo this")
    ops: str = Field(default="+-*", description="operators to draw from, a subset of '+-*'")

    @field_validator("ops")
    @classmethod
    def _ops_subset(cls, v: str) -> str:
        return check_ops(v)

    @model_validator(mode="after")
    def _enough_names(self) -> ArithKnobs:
        total = self.steps + self.givens + self.distractors
        if total > len(NAMES):
            raise ValueError(
                f"steps + givens + distractors = {total}, but variables are single letters "
                f"(at most {len(NAMES)}); lower one of them"
            )
        return self


@dataclass(frozen=True)
class _Def:
    a: str
    op: str
    b: str


class ArithFamily(TaskFamily):
    name = "arith"
    Knobs = ArithKnobs

    # ---- generation -----------------------------------------------------------
    def _generate(self, rng: random.Random, seed: int, knobs: ArithKnobs) -> Problem:
        names = rng.sample(NAMES, knobs.givens + knobs.steps + knobs.distractors)
        givens = {n: rng.randrange(knobs.modulus) for n in names[: knobs.givens]}
        given_names = list(givens)
        needed = names[knobs.givens: knobs.givens + knobs.steps]
        defs: dict[str, _Def] = {}
        for j, name in enumerate(needed):
            if j == 0:
                a, b = rng.sample(given_names, 2)
            else:
                a = needed[j - 1]
                if j >= 2 and rng.random() < knobs.branching:
                    b = rng.choice(needed[: j - 1])
                else:
                    b = rng.choice(given_names)
                if rng.random() < 0.5:
                    a, b = b, a
            defs[name] = _Def(a, rng.choice(knobs.ops), b)
        order = list(needed)
        for name in names[knobs.givens + knobs.steps:]:
            pos = rng.randint(0, len(order))
            pool = given_names + order[:pos]
            defs[name] = _Def(rng.choice(pool), rng.choice(knobs.ops), rng.choice(pool))
            order.insert(pos, name)
        query = needed[-1]
        lines, values = _render(needed, defs, givens, knobs.modulus)
        index = {n: i for i, n in enumerate(needed)}
        gold = [
            Step(index=i, text=lines[i], value=str(values[n]),
                 premises=sorted({index[x] for x in (defs[n].a, defs[n].b) if x in index}))
            for i, n in enumerate(needed)
        ]
        question = ";".join(
            [f"%{knobs.modulus}"]
            + [f"{n}{v}" for n, v in givens.items()]
            + [f"{n}:{defs[n].a}{defs[n].op}{defs[n].b}" for n in order]
            + [f"?{query}"]
        )
        return Problem(
            id=self.problem_id(seed, knobs),
            family="arith",
            question=question,
            answer=str(values[query]),
            gold_steps=gold,
            seed=seed,
            params=knobs.model_dump(),
            meta={
                "modulus": knobs.modulus,
                "givens": givens,
                "defs": {n: [d.a, d.op, d.b] for n, d in defs.items()},
                "order": order,
                "query": query,
                "solution": needed,
            },
        )

    # ---- checking -------------------------------------------------------------
    def normalize_answer(self, answer: str | None) -> str | None:
        if answer is None:
            return None
        a = answer.strip()
        return str(int(a)) if _ANSWER.match(a) else a

    def read_steps(self, problem: Problem, lines: list[str]) -> list[StepResult]:
        meta = problem.meta
        givens: dict[str, int] = meta["givens"]
        defs: dict[str, list[str]] = meta["defs"]
        mod: int = meta["modulus"]
        stated: dict[str, tuple[int, int]] = {}  # name -> (step index, value) of latest statement
        out: list[StepResult] = []
        for i, line in enumerate(lines):
            m = _STEP.match(line)
            if m is None:
                out.append(StepResult(False, False, reason=f"cannot parse; expected {STEP_SHAPE}"))
                continue
            g = m.groupdict()
            r = _judge(g, givens, defs, mod, stated)
            out.append(r)
            stated[g["name"]] = (i, int(g["res2"]))
        return out

    def read_answer(self, problem: Problem, lines: list[str], steps: list[StepResult],
                    answer: str | None) -> StepResult:
        if answer is None:
            return StepResult(False, False, reason="no '#### N' answer line")
        if not _ANSWER.match(answer):
            return StepResult(False, False, reason=f"answer {answer[:40]!r} is not a number")
        query = problem.meta["query"]
        for i in range(len(lines) - 1, -1, -1):
            m = _STEP.match(lines[i])
            if m and m["name"] == query:
                stated = int(m["res2"])
                ok = int(answer) == stated
                why = None if ok else f"answer {answer} differs from {query}{stated} stated at step {i}"
                return StepResult(True, ok, premises=[i], value=str(int(answer)), reason=why)
        return StepResult(True, False, value=str(int(answer)),
                          reason=f"the query {query} is never computed by a step")

    # ---- error injection ------------------------------------------------------
    def _inject(self, problem: Problem, kind: str, rng: random.Random) -> tuple[list[str], str | None, int]:
        meta = problem.meta
        needed: list[str] = meta["solution"]
        defs = {n: _Def(*d) for n, d in meta["defs"].items()}
        givens: dict[str, int] = meta["givens"]
        mod: int = meta["modulus"]
        n = len(needed)
        if kind == "wrong_result":
            k = rng.randrange(n)
            lines, values = _render(needed, defs, givens, mod, corrupt={needed[k]: rng.randrange(1, mod)})
            return lines, str(values[needed[-1]]), k
        if kind == "wrong_premise":
            # (step, operand slot, substitute): any variable known at that step but not its operands
            options = [
                (k, slot, x)
                for k, name in enumerate(needed)
                for slot in ("a", "b")
                for x in list(givens) + needed[:k]
                if x not in (defs[name].a, defs[name].b)
            ]
            if not options:
                raise InjectionUnsupported(f"{problem.id}: no other variable to cite at any step")
            k, slot, x = rng.choice(options)
            d = defs[needed[k]]
            lines, values = _render(needed, {**defs, needed[k]: _Def(**{**d.__dict__, slot: x})}, givens, mod)
            return lines, str(values[needed[-1]]), k
        lines, values = _render(needed, defs, givens, mod)
        answer = str(values[needed[-1]])
        if kind == "answer_miscopy":
            return lines, str((int(answer) + rng.randrange(1, mod)) % mod), n
        if kind == "dropped_step":
            # the first later step that reads the dropped variable, else the answer, needs it
            k = rng.randrange(n)
            users = [j for j in range(k + 1, n) if needed[k] in (defs[needed[j]].a, defs[needed[j]].b)]
            if not users and k != n - 1:
                raise InjectionUnsupported(f"{problem.id}: nothing needs step {k}, dropping it is no error")
            return lines[:k] + lines[k + 1:], answer, (users[0] - 1 if users else n - 1)
        raise InjectionUnsupported(f"arith cannot inject {kind!r}")

    # ---- faithfulness hooks -----------------------------------------------------
    def implied_answer(self, problem: Problem, steps: list[str]) -> str | None:
        query = problem.meta["query"]
        for line in reversed(steps):
            m = _STEP.match(line.strip())
            if m and m["name"] == query:
                return str(int(m["res2"]))
        return None

    def corrupt_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        line = steps[k].strip()
        mod: int = problem.meta["modulus"]
        m = _STEP.match(line)
        if m is None:  # not in the canonical form: change its last number, if it has one
            nums = list(re.finditer(r"\d+", line))
            if not nums:
                return None
            last = nums[-1]
            new = (int(last[0]) + rng.randrange(1, mod)) % mod
            return f"{line[:last.start()]}{new}{line[last.end():]}"
        new = (int(m["res"]) + rng.randrange(1, mod)) % mod  # a different value, mod the modulus
        return f"{line[:m.start('res')]}{new};{m['name2']}{new}"

    def paraphrase_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        line = steps[k].strip()
        m = _STEP.match(line)
        if m is None:
            return None
        g = m.groupdict()
        tail = f">{g['res']};{g['name2']}{g['res2']}"
        if g["op"] in COMMUTATIVE and g["op2"] == g["op"]:
            return f"{g['name']}:{g['b']}{g['op']}{g['a']}>{g['b2']}{g['vb']}{g['op2']}{g['a2']}{g['va']}{tail}"
        if len(g["va"]) < 6 and len(g["vb"]) < 6:  # the same values with a leading zero
            return f"{g['name']}:{g['a']}{g['op']}{g['b']}>{g['a2']}0{g['va']}{g['op2']}{g['b2']}0{g['vb']}{tail}"
        return line


def _render(order: list[str], defs: dict[str, _Def], givens: dict[str, int], mod: int,
            corrupt: dict[str, int] | None = None) -> tuple[list[str], dict[str, int]]:
    """Canonical step lines computing ``order`` in turn; ``corrupt`` adds an offset to a result."""
    values = dict(givens)
    lines = []
    for name in order:
        d = defs[name]
        res = OPS[d.op](values[d.a], values[d.b]) % mod
        if corrupt and name in corrupt:
            res = (res + corrupt[name]) % mod
        values[name] = res
        lines.append(f"{name}:{d.a}{d.op}{d.b}>{d.a}{values[d.a]}{d.op}{d.b}{values[d.b]}>{res};{name}{res}")
    return lines, values


def _judge(g: dict[str, str], givens: dict[str, int], defs: dict[str, list[str]], mod: int,
           stated: dict[str, tuple[int, int]]) -> StepResult:
    """Local validity of one parsed step, given what earlier steps stated."""
    name, a, op, b = g["name"], g["a"], g["op"], g["b"]
    res = int(g["res"])

    # the steps this one reads, even when it turns out invalid (the graph still needs the edges)
    cited = sorted({stated[x][0] for x in (a, b) if x not in givens and x in stated})

    def bad(reason: str, premises: list[int] | None = None) -> StepResult:
        return StepResult(True, False, premises=cited if premises is None else premises, value=g["res2"],
                          reason=reason)

    if name in givens:
        return bad(f"{name} is a given, not something to compute")
    if name not in defs:
        return bad(f"{name} is not defined in the problem")
    if (g["a2"], g["op2"], g["b2"]) != (a, op, b):
        return bad(f"operands {g['a2']}{g['op2']}{g['b2']} do not restate {a}{op}{b}")
    if (g["name2"], g["res2"]) != (name, g["res"]):
        return bad(f"restatement {g['name2']}{g['res2']} differs from the result {name}{g['res']}")
    premises: list[int] = []
    values: list[int] = []
    for operand, written in ((a, int(g["va"])), (b, int(g["vb"]))):
        if operand in givens:
            true = givens[operand]
            where = "given"
        elif operand in stated:
            idx, true = stated[operand]
            premises.append(idx)
            where = f"stated at step {idx}"
        else:
            return bad(f"premise {operand} is not established by the question or an earlier step",
                       premises)
        if written != true:
            return bad(f"{operand} is {true} ({where}), but the step reads {written}", premises)
        values.append(written)
    premises = sorted(set(premises))
    d = defs[name]
    if [a, op, b] != list(d) and not (op in COMMUTATIVE and [b, op, a] == list(d)):
        return bad(f"{name} is defined as {''.join(d)}, not {a}{op}{b}", premises)
    want = OPS[op](values[0], values[1]) % mod
    if res != want:
        return bad(f"{a}{values[0]}{op}{b}{values[1]} is {want} mod {mod}, not {res}", premises)
    return StepResult(True, True, premises=premises, value=str(res))

