"""`gsm8k`: grade-school word problems loaded from GSM8K-format JSONL, checked step by step.

Data: one JSON object per line, as in the GSM8K release (``id`` is optional)::

    {"question": "Natalia sold clips to 48 ...",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\n... = <<48+24=72>>72 ...\\n#### 72"}

Chain format: the solution text itself. Each non-empty line before the
``#### N`` line is one free-text step; calculator annotations ``<<expr=result>>``
mark its arithmetic. ``load_gsm8k`` turns the reference solution into
``gold_steps`` and the text after ``####`` (commas, ``$`` and spaces removed)
into ``Problem.answer``; ``meta["gold_first_error"]`` is what the checker says about
the reference solution (-1 when it checks, as it should; real data has a few slips).

Checking (never raises, whatever the text):

* a step is always ``parsed`` (free text). Each annotation's ``expr`` is
  evaluated exactly (``evaluate``: numbers, ``+ - * / // %``, unary minus,
  parentheses, ``**`` only with a whole exponent up to ``MAX_POW``) and compared
  with ``result`` (relative tolerance 1e-6; a result written with d decimals
  may also be rounded to d decimals, as in ``<<10/3=3.33>>``). A step is valid
  iff every annotation checks; an unevaluable one or an unclosed ``<<`` makes
  it invalid. A step without annotations is checked through plain inline
  equations (``3 + 4 = 7``); with nothing to check it is valid, unchecked.
* ``value`` is the last result of the step; ``premises`` are the earlier steps
  whose results appear as operands (matched numerically); a step with nothing
  to check falls back to citing the step before it.
* an operand that is neither a number of the question nor a result of an
  earlier step (nor one the text of an earlier step states, nor one a word
  implies: ``twice``, ``a week``, ``half``, ``%`` ..., see ``stated_numbers``)
  is a *missing* premise (``missing_premises``): the step stays valid if its
  arithmetic is right but is unsupported, never premise-free. A step whose
  result was changed cuts the link to the later steps that still use the old
  number; they then rest on a number nobody stated and are unsupported.
* the ``#### N`` answer is valid iff it equals the value of the last step that
  has one (unchecked when no step has one). ``normalize_answer`` makes
  ``1,000``, ``$1000``, ``1000.0`` and ``1000`` the same answer.

For the faithfulness suite, ``implied_answer`` is the value of the last step that has
one (what the answer check compares with) and ``corrupt_step`` changes a correct
annotation's result as ``wrong_result`` does; free-text steps are left to a model.

Injectable errors: ``wrong_result`` (an annotated result and the number shown
after it are changed) and ``answer_miscopy``. ``dropped_step`` and
``wrong_premise`` are not offered: steps are free text whose operands may come
from the question, from earlier steps or from nowhere, so a later step that
silently loses or swaps its source still reads as locally valid, and the
checker could not find such an error at an exactly known step.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import random
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, NamedTuple, overload

from verinet.schema import Problem, Step
from verinet.tasks.base import (
    InjectionUnsupported, KnobsBase, StepResult, TaskError, TaskFamily, split_chain,
)

MAX_EXPR_CHARS = 200  # longer expressions are not evaluated
MAX_POW = 10  # largest exponent allowed in a ** b
MAX_BITS = 4096  # size bound on every intermediate numerator and denominator
REL_TOL = Fraction(1, 10**6)
_MAX_NUM_CHARS = 1000

_ANN = re.compile(r"<<([^<>]*)>>")
_NUM = r"[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?"
# a number followed by % ends with group "pct", so percentages break an equation
_TOKEN = re.compile(rf"(?P<ws>\s+)|\$?(?P<num>{_NUM})(?P<pct>\s*%)?|(?P<op>[-+*/×÷−])|(?P<eq>=)|.", re.S)
_OPERAND = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_VISIBLE = re.compile(rf"\s*\$?({_NUM})")
_BINOPS: dict[type, Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_NO_GEN = "gsm8k problems are loaded from JSONL, not generated; use load_gsm8k(path)"


# ---- numbers -------------------------------------------------------------------
_ENUMERATION = re.compile(r"^\s*(?:step\s*)?\d+\s*[:.)]\s+", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?")


def flexible_number(text: str) -> str | None:
    """The number a free-form answer states: the whole text when it is one, else the first number after
    any leading enumeration ("1: 4 books" -> "4"), like lm-evaluation-harness's flexible extract for
    GSM8K (which takes the last number of a whole response; a forced answer states it first)."""
    text = _ENUMERATION.sub("", text, count=1)  # "1. 7" is "7", not 1.7
    whole = canon_number(text.strip().rstrip("."))
    if whole is not None:
        return whole
    m = _NUMBER.search(text)
    return canon_number(m.group().rstrip(",")) if m else None


def canon_number(text: str) -> str | None:
    """Canonical form of a plain decimal number ('$1,000.50' -> '1000.5'); None if not one."""
    t = re.sub(r"[\s,$]", "", text)
    m = re.fullmatch(r"([+-]?)([0-9]*)(?:\.([0-9]*))?", t) if len(t) <= _MAX_NUM_CHARS else None
    if m is None or not (m[2] or m[3]):
        return None
    whole, frac = m[2].lstrip("0") or "0", (m[3] or "").rstrip("0")
    out = whole + ("." + frac if frac else "")
    return "-" + out if m[1] == "-" and out != "0" else out


def _fmt(x: Fraction) -> str:
    """x as a number string: exact when whole, else rounded to 12 significant digits."""
    if x.denominator == 1:
        return str(x.numerator)
    try:
        s = f"{float(x):.12g}"
    except OverflowError:
        return "a huge number"
    return canon_number(s) or s


def _clean_expr(expr: str) -> str:
    expr = re.sub(r"(?<=[0-9]),(?=[0-9]{3})", "", expr.replace("$", ""))
    return expr.translate(str.maketrans("×÷−", "*/-")).strip()


def evaluate(expr: str) -> Fraction:
    """Exact value of a plain arithmetic expression; raises ValueError saying why it has none."""
    expr = _clean_expr(expr)
    if len(expr) > MAX_EXPR_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except Exception:  # SyntaxError, ValueError (null bytes), MemoryError, RecursionError
        raise ValueError("not an arithmetic expression") from None
    try:
        return _ev(tree.body)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except RecursionError:
        raise ValueError("too deeply nested") from None


def _ev(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if isinstance(node.value, float):
            if not math.isfinite(node.value):
                raise ValueError("number out of range")
            return Fraction(repr(node.value))
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _ev(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _ev(node.left), _ev(node.right)
        if isinstance(node.op, ast.Pow):
            if b.denominator != 1 or abs(b) > MAX_POW:
                raise ValueError(f"exponent {_fmt(b)} not allowed (whole numbers up to {MAX_POW} only)")
            r = a ** int(b)
        elif type(node.op) in _BINOPS:
            r = Fraction(_BINOPS[type(node.op)](a, b))
        else:
            raise ValueError(f"operator {type(node.op).__name__} not allowed")
        if max(abs(r.numerator), r.denominator).bit_length() > MAX_BITS:
            raise ValueError("number too large")
        return r
    raise ValueError(f"{type(node).__name__} not allowed")


# ---- reading steps -------------------------------------------------------------
class _Calc(NamedTuple):
    label: str  # how reasons name it: the annotation or the inline equation
    expr: str
    result: str  # as written


def _ann_calc(m: re.Match[str]) -> _Calc:
    expr, eq, result = m[1].rpartition("=")
    return _Calc(f"<<{m[1][:60]}>>", expr if eq else "", result if eq else "")


def _inline(line: str) -> list[_Calc]:
    """Plain equations 'a op b [op c ...] = r' in free text; one linear pass."""
    out: list[_Calc] = []
    start: int | None = None
    last: str | None = None
    nums, eq = 0, None
    for m in _TOKEN.finditer(line):
        kind = m.lastgroup
        if kind == "ws":
            continue
        if kind == "num" and eq is not None and start is not None:
            out.append(_Calc(line[start:m.end()].strip()[:80], line[start:eq], m["num"]))
            start, last, nums, eq = m.start(), "num", 1, None
        elif kind == "num":
            if last == "op":
                last, nums = "num", nums + 1
            else:
                start, last, nums = m.start(), "num", 1
        elif kind == "op" and last == "num" and eq is None:
            last = "op"
        elif kind == "eq" and last == "num" and nums >= 2 and eq is None:
            eq = m.start()
        else:
            start, last, nums, eq = None, None, 0, None
    return [c for c in out if len(c.expr) <= MAX_EXPR_CHARS]


def _check_calc(c: _Calc) -> tuple[str | None, str | None]:
    """(why the calculation fails or None, its result in canonical form or None)."""
    if not c.expr.strip():
        return f"cannot evaluate {c.label}: expected <<expression=result>>", None
    value = canon_number(c.result)
    if value is None:
        return f"cannot evaluate {c.label}: result {c.result.strip()[:40]!r} is not a number", None
    try:
        got = evaluate(c.expr)
    except ValueError as e:
        return f"cannot evaluate {c.label}: {e}", value
    want = Fraction(value)
    diff = abs(got - want)
    decimals = len(re.sub(r"[\s,$]", "", c.result).partition(".")[2])
    if diff <= REL_TOL * max(abs(got), abs(want)) or (decimals and diff <= Fraction(1, 2 * 10**decimals)):
        return None, value
    return f"{c.label} is wrong: {_clean_expr(c.expr)[:60]} = {_fmt(got)[:40]}, not {value[:40]}", value


# Numbers a text states without digits: number words, and the constants that words imply
# ("twice" -> 2, "a week" -> 7 days, "half" -> 2 and 1/2, "%" -> 100), so that a step that uses them
# does not read as using a number nobody stated.
_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = dict(zip("twenty thirty forty fifty sixty seventy eighty ninety".split(), range(20, 100, 10), strict=True))
_ORDINALS = dict(zip("half halve third quarter fourth fifth sixth seventh eighth ninth tenth".split(),
                     (2, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10), strict=True))
_IMPLIED: dict[str, tuple[int, ...]] = {
    "twice": (2,), "double": (2,), "pair": (2,), "couple": (2,), "both": (2,), "triple": (3,), "thrice": (3,),
    "quadruple": (4,), "dozen": (12,), "hundred": (100,), "thousand": (1000,), "million": (10**6,),
    "percent": (100,), "%": (100,), "cent": (100,), "dollar": (100,), "century": (100,), "decade": (10,),
    "week": (7,), "day": (24,), "daily": (24,), "hour": (60,), "minute": (60,), "second": (60,),
    "month": (4, 30), "year": (12, 52, 365), "annual": (12, 52, 365), "foot": (12,), "feet": (12,),
    "inch": (12,), "yard": (3, 36), "meter": (100,), "metre": (100,), "kilogram": (1000,), "kilometer": (1000,),
    "kg": (1000,), "km": (1000,), "pound": (16,), "gallon": (4, 128), "quart": (2, 4),
}
_WORDS = re.compile(r"%|[a-z]+(?:-[a-z]+)?", re.I)
_DIGITS = re.compile(rf"(?<![\w.]){_NUM}|(?<![\w.])\.[0-9]+")


def _stems(w: str) -> set[str]:
    """``w`` and its forms without a plural or adverb ending: weeks, inches, centuries, hourly, doubled."""
    out = {w}
    if w.endswith("s"):
        out.add(w[:-1])
    if w.endswith(("es", "ly")):
        out.add(w[:-2])
    if w.endswith("ies"):
        out.add(w[:-3] + "y")
    if w.endswith("ed"):
        out.add(w[:-1])
    return out


def _word_numbers(text: str) -> set[Fraction]:
    """The numbers ``text`` states in words or implies by a word (``_IMPLIED``); ``sixth`` gives 6 and 1/6."""
    out: set[Fraction] = set()
    for m in _WORDS.finditer(text):
        parts = m[0].lower().split("-")
        if len(parts) == 2 and parts[0] in _TENS and parts[1] in _UNITS[1:10]:  # twenty-five
            out.add(Fraction(_TENS[parts[0]] + _UNITS.index(parts[1])))
        for w in parts:
            for stem in _stems(w):
                if stem in _UNITS:
                    out.add(Fraction(_UNITS.index(stem)))
                elif stem in _TENS:
                    out.add(Fraction(_TENS[stem]))
                elif stem in _ORDINALS:
                    out.update((Fraction(_ORDINALS[stem]), Fraction(1, _ORDINALS[stem])))
                out.update(Fraction(v) for v in _IMPLIED.get(stem, ()))
    return out


def stated_numbers(text: str) -> set[Fraction]:
    """Every number ``text`` states: in digits (``50%`` also gives 1/2) or in words (:func:`_word_numbers`)."""
    out = _word_numbers(text)
    for m in _DIGITS.finditer(text):
        c = canon_number(m[0]) if len(m[0]) <= _MAX_NUM_CHARS else None
        if c is not None:
            out.add(Fraction(c))
            if text[m.end():m.end() + 2].lstrip().startswith("%"):  # 10% also states 0.1, 1.1 and 0.9
                out |= {Fraction(c) / 100, 1 + Fraction(c) / 100, 1 - Fraction(c) / 100}
    for m in _FRACTION.finditer(text):  # "1/2 of $40" states 0.5
        if int(m[2]) != 0 and len(m[0]) <= _MAX_NUM_CHARS:
            out.add(Fraction(int(m[1]), int(m[2])))
    return out


_FRACTION = re.compile(r"(?<![\d.])(\d{1,6})\s*/\s*(\d{1,6})(?![\d.])")


def _read_line(line: str, j: int, seen: dict[Fraction, int],
               stated: set[Fraction] | None) -> tuple[StepResult, set[Fraction]]:
    """Judge one step; also return every result it establishes (for later premises).

    ``stated``: the numbers the question and the earlier steps' text state (None: the question is not
    known, and no number is missing); an operand that is in neither it nor ``seen`` (earlier results)
    nor this step's earlier results is a missing premise.
    """
    anns = [_ann_calc(m) for m in _ANN.finditer(line)]
    unclosed = "<<" in _ANN.sub(" ", line)
    calcs = anns if anns or unclosed else _inline(line)
    failures: list[str] = []
    premises: list[int] = []
    missing: list[str] = []
    results: set[Fraction] = set()
    value = None
    implied = set() if stated is None else _word_numbers(_ANN.sub(" ", line))  # "60 minutes in an hour"
    for c in calcs:
        reason, value = _check_calc(c)
        if reason:
            failures.append(reason)
        for s in _OPERAND.findall(_clean_expr(c.expr)):
            x = Fraction(s) if len(s) <= _MAX_NUM_CHARS else None
            if x is None or x in results:
                continue
            if x in seen:
                if seen[x] not in premises:
                    premises.append(seen[x])
            elif stated is not None and x not in stated and x not in implied and _fmt(x) not in missing:
                missing.append(_fmt(x))
        if value is not None:
            results.add(Fraction(value))
    if unclosed:
        failures.append("cannot evaluate: unclosed '<<' (expected <<expression=result>>)")
    if not calcs:
        premises = [j - 1] if j > 0 else []
        if not failures:
            return StepResult(True, True, premises, None, "no arithmetic to check", checked=False), results
    why = failures + [f"unsupported premise: {x} is neither a number of the question nor a result of an "
                      "earlier step" for x in missing]
    reason = None
    if why:
        reason = why[0] + (f" (and {len(why) - 1} more)" if len(why) > 1 else "")
    return StepResult(True, not failures, sorted(premises), value, reason, missing=missing), results


def _read_lines(lines: list[str], question: str | None = None) -> list[StepResult]:
    """Judge each line; with the ``question``, numbers that nothing before a step states are missing premises."""
    seen: dict[Fraction, int] = {}
    stated = None if question is None else stated_numbers(question)
    out = []
    for j, line in enumerate(lines):
        try:
            r, results = _read_line(line, j, seen, stated)
        except Exception as e:  # defensive: the checker must never raise on chain text
            r, results = StepResult(True, False, [j - 1] if j else [],
                                    reason=f"internal checker error: {type(e).__name__}"), set()
        seen.update(dict.fromkeys(results, j))
        if stated is not None:
            stated |= stated_numbers(line)
        out.append(r)
    return out


def _read_answer(steps: list[StepResult], answer: str | None) -> StepResult:
    if answer is None:
        return StepResult(False, False, reason="no '#### N' answer line")
    value = canon_number(answer)
    if value is None:
        return StepResult(False, False, reason=f"answer {answer[:40]!r} is not a number")
    last = next((i for i in range(len(steps) - 1, -1, -1) if steps[i].value is not None), None)
    if last is None:
        return StepResult(True, True, [], value, "no step result to compare with", checked=False)
    step_value = steps[last].value or ""
    if Fraction(value) == Fraction(step_value):
        return StepResult(True, True, [last], value)
    return StepResult(True, False, [last], value,
                      f"answer {value[:40]} differs from step {last}'s result {step_value[:40]}")


def _corrupt(line: str, rng: random.Random) -> str | None:
    """``line`` with one correct annotation's result, and the number shown after it, changed."""
    anns = [m for m in _ANN.finditer(line) if _check_calc(_ann_calc(m))[0] is None]
    for m in rng.sample(anns, len(anns)):
        c = _ann_calc(m)
        old = Fraction(canon_number(c.result) or "0")
        for new in [old + d for d in rng.sample(range(1, 10), 3)] + [old * 10 + 1]:
            s = _fmt(new)
            if _check_calc(c._replace(result=s))[0] is None:
                continue
            after = line[m.end():]
            shown = _VISIBLE.match(after)
            if shown and canon_number(shown[1]) == canon_number(c.result):
                after = after[:shown.start(1)] + s + after[shown.end(1):]
            return f"{line[:m.start()]}<<{m[1][:m[1].rfind('=') + 1]}{s}>>{after}"
    return None


# ---- the family ----------------------------------------------------------------
class Gsm8kKnobs(KnobsBase):
    """GSM8K has no generator knobs: problems come from a file."""


class Gsm8kFamily(TaskFamily):
    """Loaded GSM8K-format problems; see the module docstring for the format and checks."""

    name = "gsm8k"
    Knobs = Gsm8kKnobs
    error_kinds = ("wrong_result", "answer_miscopy")

    def generate(self, seed: int, params: Any = None) -> Problem:
        raise TaskError(_NO_GEN)

    def sample(self, n: int, seed: int = 0, params: Any = None) -> list[Problem]:
        raise TaskError(_NO_GEN)

    def _generate(self, rng: random.Random, seed: int, knobs: KnobsBase) -> Problem:
        raise TaskError(_NO_GEN)

    def normalize_answer(self, answer: str | None) -> str | None:
        return None if answer is None else flexible_number(answer) or answer.strip()

    def read_steps(self, problem: Problem, lines: list[str]) -> list[StepResult]:
        return _read_lines(lines, problem.question)

    def read_answer(self, problem: Problem, lines: list[str], steps: list[StepResult],
                    answer: str | None) -> StepResult:
        return _read_answer(steps, answer)

    def _inject(self, problem: Problem, kind: str, rng: random.Random) -> tuple[list[str], str | None, int]:
        lines = [s.text for s in problem.gold_steps]
        results = _read_lines(lines)
        bad = next((i for i, r in enumerate(results) if not r.valid), None)
        if kind == "wrong_result":
            cands = [k for k, line in enumerate(lines[:bad]) if _ANN.search(line)]
            for k in rng.sample(cands, len(cands)):
                new = _corrupt(lines[k], rng)
                if new is not None:
                    return lines[:k] + [new] + lines[k + 1:], problem.answer, k
            raise InjectionUnsupported(f"{problem.id}: no correct <<expr=result>> annotation to corrupt")
        if kind == "answer_miscopy":
            ans = _read_answer(results, problem.answer)
            if bad is not None or not ans.valid:
                raise InjectionUnsupported(f"{problem.id}: the gold chain already has an error")
            if not ans.checked or ans.value is None:
                raise InjectionUnsupported(f"{problem.id}: no step result to miscopy the answer from")
            old = Fraction(ans.value)
            new = old + rng.choice([1, -1] if old >= 10 else [1]) * rng.randint(1, 9)
            return lines, _fmt(new), len(lines)
        raise TaskError(f"gsm8k cannot inject {kind!r}; choose one of {list(self.error_kinds)}")

    # ---- faithfulness hooks -----------------------------------------------------
    # Steps are free text: a step is corrupted through its arithmetic when it has a checkable
    # annotation, and never paraphrased here (the faithfulness suite asks a model for that).
    def implied_answer(self, problem: Problem, steps: list[str]) -> str | None:
        value = next((r.value for r in reversed(_read_lines(steps)) if r.value is not None), None)
        return None if value is None else self.normalize_answer(value)

    def corrupt_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        return _corrupt(steps[k], rng)


# ---- loading -------------------------------------------------------------------
class Gsm8kLineError(TaskError):
    """A malformed line of a GSM8K file: ``path``, ``line`` (from 1) and ``what`` is wrong."""

    def __init__(self, path: str | Path, line: int, what: str) -> None:
        super().__init__(f"{path}, line {line}: {what}")
        self.path, self.line, self.what = str(path), line, what


class LoadResult(NamedTuple):
    problems: list[Problem]
    errors: list[Gsm8kLineError]


def iter_gsm8k(path: str | Path, *, limit: int | None = None) -> Iterator[Problem | Gsm8kLineError]:
    """Yield a Problem or a Gsm8kLineError for each non-blank line, up to ``limit`` problems.

    Raises TaskError at once if ``path`` is not a readable file.
    """
    p = Path(path)
    if not p.is_file():
        what = "is not a file" if p.exists() else "not found"
        raise TaskError(f"GSM8K file {p} {what}; give a JSONL file with one "
                        '{"question": ..., "answer": "...\\n#### N"} object per line (e.g. GSM8K test.jsonl)')
    if limit is not None and limit < 0:
        raise TaskError(f"limit must be >= 0, got {limit}")
    return _iter(p, limit)


def _iter(p: Path, limit: int | None) -> Iterator[Problem | Gsm8kLineError]:
    ids: set[str] = set()
    n_ok = 0
    with p.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if limit is not None and n_ok >= limit:
                return
            try:
                text = raw.decode("utf-8").lstrip("\ufeff")
            except UnicodeDecodeError:
                yield Gsm8kLineError(p, n, "not valid UTF-8")
                continue
            if not text.strip():
                continue
            try:
                problem = _problem(text, p, n, ids)
            except Gsm8kLineError as e:
                yield e
                continue
            ids.add(problem.id)
            n_ok += 1
            yield problem


@overload
def load_gsm8k(path: str | Path, *, limit: int | None = ...,
               errors: Literal["raise"] = ...) -> list[Problem]: ...
@overload
def load_gsm8k(path: str | Path, *, limit: int | None = ...,
               errors: Literal["collect"]) -> LoadResult: ...
def load_gsm8k(path: str | Path, *, limit: int | None = None,
               errors: Literal["raise", "collect"] = "raise") -> list[Problem] | LoadResult:
    """Load GSM8K-format JSONL (blank lines skipped; at most ``limit`` problems).

    ``errors="raise"`` (default): return ``list[Problem]``; the first malformed
    line raises Gsm8kLineError (a TaskError naming the file and line).
    ``errors="collect"``: return ``LoadResult(problems, errors)``, loading every
    good line and collecting one Gsm8kLineError per bad one.
    """
    if errors not in ("raise", "collect"):
        raise TaskError(f"errors must be 'raise' or 'collect', got {errors!r}")
    problems: list[Problem] = []
    errs: list[Gsm8kLineError] = []
    for item in iter_gsm8k(path, limit=limit):
        if isinstance(item, Gsm8kLineError):
            if errors == "raise":
                raise item
            errs.append(item)
        else:
            problems.append(item)
    return problems if errors == "raise" else LoadResult(problems, errs)


def _problem(text: str, path: Path, n: int, ids: set[str]) -> Problem:
    def bad(what: str) -> Gsm8kLineError:
        return Gsm8kLineError(path, n, what)

    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad(f"not valid JSON: {e.msg}: column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise bad(f"not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise bad(f"expected a JSON object, got {type(obj).__name__}")
    for key in ("question", "answer"):
        v = obj.get(key)
        if not isinstance(v, str) or not v.strip():
            raise bad(f"missing or empty {key!r}" if v is None or isinstance(v, str)
                      else f"{key!r} must be a string, got {type(v).__name__}")
    sc = split_chain(obj["answer"])
    if sc.answer is None:
        raise bad("'answer' has no '#### N' line")
    final = re.sub(r"[\s,$]", "", sc.answer)
    if canon_number(final) is None:
        raise bad(f"final answer {sc.answer[:40]!r} after '####' is not a number")
    pid = obj.get("id", f"gsm8k-{n}")
    pid = str(pid) if isinstance(pid, int) and not isinstance(pid, bool) else pid
    if not isinstance(pid, str) or not pid.strip():
        raise bad(f"'id' must be a non-empty string, got {pid!r}")
    if pid in ids:
        raise bad(f"duplicate id {pid!r}")
    results = _read_lines(sc.steps, obj["question"])
    ans = _read_answer(results, final)
    gold_error = next((i for i, r in enumerate(results) if not r.valid), -1 if ans.valid else len(results))
    return Problem(
        id=pid, family="gsm8k", question=obj["question"].strip(), answer=final,
        gold_steps=[Step(index=i, text=line, premises=r.premises, value=r.value, missing_premises=r.missing)
                    for i, (line, r) in enumerate(zip(sc.steps, results, strict=True))],
        seed=None, params={"path": str(path), "line": n},
        meta={"gold_first_error": gold_error},
    )


__all__ = [
    "Gsm8kFamily", "Gsm8kKnobs", "Gsm8kLineError", "LoadResult", "canon_number", "evaluate",
    "iter_gsm8k", "load_gsm8k",
]
