"""The task-family protocol and the checking logic that every family shares.

A family knows three things about its problems: how to generate them (with a
gold step DAG), how to read one step of a chain in its canonical format, and
how to inject labelled errors. Everything else — splitting a chain into
lines, propagating *supported* through premises (a step with a *missing*
premise, one it uses that nothing before it states, is unsupported), finding
the first error, building records — lives here, once.

Chain text, for every family, is one step per line followed by an answer line
that starts with ``ANSWER_CUE``::

    x:i+t>i7+t0>7;x7
    u:x*i>x7*i7>9;u9
    #### 9
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from verinet.schema import ERROR_KINDS, Chain, ChainCheck, Problem, Step, StepCheck

ANSWER_CUE = "####"


class TaskError(ValueError):
    """Bad knobs, bad data or an impossible request; the message says what to fix."""


class InjectionUnsupported(TaskError):
    """This error kind cannot be injected into this problem (e.g. too few steps)."""


class KnobsBase(BaseModel):
    """Base for a family's generator knobs: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class StepResult:
    """What a family's step reader returns for one line (before propagation)."""

    parsed: bool
    valid: bool
    premises: list[int] = field(default_factory=list)
    value: str | None = None
    reason: str | None = None
    checked: bool = True
    #: what the step uses that neither the question nor an earlier step states (e.g. a number): premises
    #: the chain never established. The step is then unsupported, however valid its own claim.
    missing: list[str] = field(default_factory=list)


@dataclass
class SplitChain:
    steps: list[str]
    answer: str | None  # text after the answer cue, stripped; None when absent


def split_chain(text: str) -> SplitChain:
    """Split chain text into step lines and the answer; never raises.

    Blank lines are skipped. The first line that starts with ``ANSWER_CUE``
    ends the chain; anything after it is ignored (models often run on).
    """
    steps: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith(ANSWER_CUE):
            return SplitChain(steps, line[len(ANSWER_CUE):].strip())
        steps.append(line)
    return SplitChain(steps, None)


def derive_seed(seed: int, i: int) -> int:
    """Seed of the i-th problem of a sample drawn with ``seed`` (stable across runs)."""
    return random.Random(f"verinet:{seed}:{i}").getrandbits(31)


class TaskFamily(ABC):
    """One family of problems with exact step checking."""

    name: ClassVar[str]
    Knobs: ClassVar[type[KnobsBase]]
    #: error kinds this family can inject
    error_kinds: ClassVar[tuple[str, ...]] = ERROR_KINDS

    # ---- knobs and generation -------------------------------------------------
    def knobs(self, params: dict[str, Any] | KnobsBase | None = None) -> KnobsBase:
        """Validate generator knobs; raises TaskError naming the bad knob."""
        if isinstance(params, self.Knobs):
            return params
        try:
            return self.Knobs(**(params or {}))
        except ValidationError as e:
            msgs = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or 'knobs'}: {err['msg']}" for err in e.errors()
            )
            raise TaskError(f"invalid {self.name} knobs: {msgs}") from None

    def problem_id(self, seed: int, knobs: KnobsBase) -> str:
        digest = hashlib.sha1(json.dumps(knobs.model_dump(), sort_keys=True).encode()).hexdigest()[:6]
        return f"{self.name}-{digest}-{seed}"

    def generate(self, seed: int, params: dict[str, Any] | KnobsBase | None = None) -> Problem:
        """The problem for ``seed``: the same seed and knobs always give the same problem."""
        knobs = self.knobs(params)
        return self._generate(random.Random(seed), seed, knobs)

    def sample(self, n: int, seed: int = 0, params: dict[str, Any] | KnobsBase | None = None) -> list[Problem]:
        if n < 0:
            raise TaskError(f"n must be >= 0, got {n}")
        knobs = self.knobs(params)
        return [self.generate(derive_seed(seed, i), knobs) for i in range(n)]

    @abstractmethod
    def _generate(self, rng: random.Random, seed: int, knobs: KnobsBase) -> Problem: ...

    # ---- the canonical format -------------------------------------------------
    def format_chain(self, steps: list[str], answer: str | None) -> str:
        lines = list(steps)
        if answer is not None:
            lines.append(f"{ANSWER_CUE} {answer}")
        return "\n".join(lines)

    def gold_chain(self, problem: Problem) -> Chain:
        text = self.format_chain([s.text for s in problem.gold_steps], problem.answer)
        return Chain(
            id=f"{problem.id}/gold",
            problem_id=problem.id,
            author="gold",
            text=text,
            steps=[s.model_copy() for s in problem.gold_steps],
            answer=problem.answer,
        )

    def normalize_answer(self, answer: str | None) -> str | None:
        return None if answer is None else answer.strip()

    # ---- checking -------------------------------------------------------------
    @abstractmethod
    def read_steps(self, problem: Problem, lines: list[str]) -> list[StepResult]:
        """Judge each line locally, given the premises it uses. Must never raise."""

    @abstractmethod
    def read_answer(self, problem: Problem, lines: list[str], steps: list[StepResult],
                    answer: str | None) -> StepResult:
        """Judge the answer line: is it what the chain's own steps establish? Never raises."""

    def check(self, problem: Problem, text: str) -> ChainCheck:
        """Score any chain text exactly. Never raises on model-written text."""
        sc = split_chain(text if isinstance(text, str) else "")
        results = self.read_steps(problem, sc.steps)
        ans = self.read_answer(problem, sc.steps, results, sc.answer)
        supported: list[bool] = []
        checks: list[StepCheck] = []
        for i, (line, r) in enumerate(zip(sc.steps, results, strict=True)):
            sup = r.valid and not r.missing and all(0 <= p < i and supported[p] for p in r.premises)
            supported.append(sup)
            checks.append(_to_check(i, line, r, sup))
        n = len(sc.steps)
        ans_sup = ans.valid and all(0 <= p < n and supported[p] for p in ans.premises)
        ans_line = "" if sc.answer is None else f"{ANSWER_CUE} {sc.answer}"
        answer_check = _to_check(n, ans_line, ans, ans_sup)
        first_error = next((c.index for c in checks if not c.valid), n if not ans.valid else -1)
        gold = self.normalize_answer(problem.answer)
        return ChainCheck(
            problem_id=problem.id,
            steps=checks,
            answer=answer_check,
            first_error=first_error,
            answer_correct=sc.answer is not None and self.normalize_answer(sc.answer) == gold,
            n_valid=sum(c.valid for c in checks),
            n_supported=sum(supported),
        )

    def parse_chain(self, problem: Problem, text: str, *, chain_id: str, author: str) -> Chain:
        """Read chain text into a Chain record (steps with premises and values)."""
        sc = split_chain(text)
        results = self.read_steps(problem, sc.steps)
        steps = [
            Step(index=i, text=line, premises=[p for p in r.premises if 0 <= p < i], value=r.value,
                 missing_premises=list(r.missing))
            for i, (line, r) in enumerate(zip(sc.steps, results, strict=True))
        ]
        return Chain(id=chain_id, problem_id=problem.id, author=author, text=text, steps=steps,
                     answer=sc.answer)

    # ---- error injection ------------------------------------------------------
    def inject(self, problem: Problem, kind: str, seed: int = 0) -> Chain:
        """A copy of the gold chain with one labelled error of ``kind``.

        ``first_error`` is the index the checker must report: the step that is
        wrong, or for a dropped step the first later step that needed it
        (``len(steps)`` when only the answer needed it).
        """
        if kind not in self.error_kinds:
            raise TaskError(
                f"unknown error kind {kind!r} for family {self.name}; choose one of {list(self.error_kinds)}"
            )
        rng = random.Random(f"{problem.id}:{kind}:{seed}")
        steps, answer, first_error = self._inject(problem, kind, rng)
        text = self.format_chain(steps, answer)
        chain = self.parse_chain(problem, text, chain_id=f"{problem.id}/inject-{kind}-{seed}",
                                 author=f"inject:{kind}")
        return chain.model_copy(update={"error_kind": kind, "first_error": first_error})

    def injectable_kinds(self, problem: Problem) -> list[str]:
        kinds = []
        for kind in self.error_kinds:
            try:
                self._inject(problem, kind, random.Random(0))
            except InjectionUnsupported:
                continue
            kinds.append(kind)
        return kinds

    @abstractmethod
    def _inject(self, problem: Problem, kind: str, rng: random.Random) -> tuple[list[str], str | None, int]:
        """Return (step lines, answer, first_error) for the injected chain."""

    # ---- faithfulness hooks (verinet.faithfulness) ------------------------------
    # They work on *any* chain, model-written ones included, and never raise on its text.
    # ``None`` means "this family cannot do it for this line"; the faithfulness suite then
    # asks a model to do it (free text) or leaves that intervention out.
    def implied_answer(self, problem: Problem, steps: list[str]) -> str | None:
        """The answer the chain's own stated steps imply, in normal form, even when the steps are wrong.

        ``None`` when the steps imply none (the query is never concluded) or the family cannot
        tell (free text). Exact families read it the way their answer checker does, so a
        parsed answer is valid exactly when it equals this.
        """
        return None

    def corrupt_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        """Step ``k`` of ``steps`` rewritten with one mistake, in the same form; None if the family cannot."""
        return None

    def paraphrase_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        """Step ``k`` with the same content in a different surface form, still readable by the checker;
        None if the family cannot (it may also return the line unchanged when no rewording exists)."""
        return None


def _to_check(index: int, text: str, r: StepResult, supported: bool) -> StepCheck:
    return StepCheck(
        index=index,
        text=text,
        parsed=r.parsed,
        valid=r.valid,
        supported=supported,
        checked=r.checked,
        premises=r.premises,
        missing_premises=list(r.missing),
        value=r.value,
        reason=r.reason,
    )
