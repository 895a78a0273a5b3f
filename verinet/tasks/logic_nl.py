"""`logic_nl`: the logic family's problems, with gold chains in plain sentences and a free-text checker.

The question is the logic family's (rules, one fact, "True or false: ..."). A gold step says
which fact it uses, which rule, and what follows::

    Max is a wumpus, and every wumpus is a yumpus, so Max is a yumpus.
    Max is a yumpus, and every yumpus is not a gorpus, so Max is not a gorpus.
    #### False

The checker reads any wording of that. From a step it takes the claims about the entity
(``Max is (not) a/an WORD``; the last one is the step's conclusion, the others are premises
restated) and the rules it cites (``every/each WORD is (not) a WORD``, ``all WORDs are (not) WORDs``).
A step is valid when

* every rule it cites is a rule of the problem;
* every premise it restates is established: the question's fact, or a positive conclusion of an
  earlier step (a premise that is neither is an *unsupported premise*, also recorded in
  ``missing_premises``: the step is never read as premise-free);
* its conclusion follows from one rule (a cited one, when the step cites any) applied to an
  established fact — or restates an established fact.

Its premises are the earlier steps that established the fact the rule is applied to. A step with
no claim about the entity is valid and unchecked. The answer (``True``/``False``, also ``Yes``/``No``)
is checked as in the logic family: some step must conclude it.
"""

from __future__ import annotations

import random
import re

from verinet.schema import Problem, Step
from verinet.tasks.base import KnobsBase, StepResult
from verinet.tasks.logic import MAX_LINE, LogicFamily, LogicKnobs, _isa, _match_step, conclusion

_WORD = r"[^\W\d_][\w'-]*"
_RULE_SING = re.compile(rf"\b(?:every|each|any)\s+({_WORD})\s+is\s+(not\s+)?an?\s+({_WORD})", re.IGNORECASE)
_RULE_PLURAL = re.compile(rf"\ball\s+({_WORD})\s+are\s+(not\s+)?({_WORD})", re.IGNORECASE)


def nl_step(entity: str, a: str, b: str, negated: bool, concl: str | None = None) -> str:
    """The canonical sentence: fact, rule, conclusion (``concl`` overrides the conclusion)."""
    c = concl if concl is not None else conclusion(entity, b, negated)
    return f"{entity} is {_isa(a, False)}, and every {a} is {_isa(b, negated)}, so {c}."


def _since(entity: str, a: str, b: str, negated: bool, concl: str) -> str:
    return f"Since every {a} is {_isa(b, negated)} and {entity} is {_isa(a, False)}, {concl}."


def _therefore(entity: str, a: str, b: str, negated: bool, concl: str) -> str:
    return f"Every {a} is {_isa(b, negated)}. {entity} is {_isa(a, False)}. Therefore {concl}."


class LogicNLFamily(LogicFamily):
    name = "logic_nl"
    Knobs = LogicKnobs

    # ---- generation: the logic problem, gold steps as sentences --------------------------------
    def _generate(self, rng: random.Random, seed: int, knobs: KnobsBase) -> Problem:
        p = super()._generate(rng, seed, knobs)
        gold = [Step(index=s.index, text=self._to_nl(p, s.text), premises=s.premises, value=s.value)
                for s in p.gold_steps]
        return p.model_copy(update={"family": "logic_nl", "gold_steps": gold})

    def _to_nl(self, problem: Problem, line: str) -> str:
        """A logic-format step ("Every A is (not) a B, so E is (not) a C.") as the canonical sentence."""
        m = _match_step(line)
        if m is None:  # pragma: no cover - the logic family only writes canonical steps
            return line
        concl = conclusion(m.group(4), m.group(6), bool(m.group(5)))
        return nl_step(m.group(4), m.group(1), m.group(3), bool(m.group(2)), concl)

    # ---- checking -----------------------------------------------------------------------------
    def normalize_answer(self, answer: str | None) -> str | None:
        if answer is None:
            return None
        a = answer.strip().rstrip(".").strip().lower()
        truth = {"yes": "True", "no": "False", "true": "True", "false": "False"}
        if a in truth:
            return truth[a]
        # a free-form answer ("1: True.", "The answer is no"): its first truth word, as a flexible extract
        m = re.search(r"\b(true|false|yes|no)\b", a)
        return truth[m.group(1)] if m else answer.strip()

    def read_steps(self, problem: Problem, lines: list[str]) -> list[StepResult]:
        meta = problem.meta
        entity, fact = meta["entity"], meta["fact"].lower()
        rules = {(a.lower(), b.lower(), bool(neg)) for a, b, neg in meta["rules"]}
        words = {w for r in rules for w in r[:2]} | {fact}
        claim = re.compile(rf"\b{re.escape(entity)}\s+is\s+(not\s+)?an?\s+({_WORD})", re.IGNORECASE)
        established: dict[str, int | None] = {fact: None}  # concept -> step that concluded it (None: question)
        out: list[StepResult] = []
        for i, line in enumerate(lines):
            if len(line) > MAX_LINE:
                out.append(StepResult(False, False, reason=f"step longer than {MAX_LINE} characters"))
                continue
            claims = [(m.group(2).lower(), m.group(1) is not None) for m in claim.finditer(line)]
            cited = [(m.group(1).lower(), m.group(3).lower(), m.group(2) is not None)
                     for m in _RULE_SING.finditer(line)]
            cited += [(_singular(m.group(1), words), _singular(m.group(3), words), m.group(2) is not None)
                      for m in _RULE_PLURAL.finditer(line)]
            if not claims:
                out.append(StepResult(True, True, reason="no claim about the entity to check", checked=False))
                continue
            (b, neg), restated = claims[-1], claims[:-1]
            value = conclusion(entity, b, neg)
            reason = None
            missing: list[str] = []  # premises nothing before the step establishes
            premises: set[int] = set()
            bad_rule = next((r for r in cited if r not in rules), None)
            if bad_rule:
                reason = f"rule not in the problem: 'Every {bad_rule[0]} is {_isa(bad_rule[1], bad_rule[2])}'"
            for w, n in restated:
                if reason:
                    break
                if n:
                    continue  # a negative restatement is never a premise of these rules
                if w not in established:
                    reason = (f"unsupported premise: '{conclusion(entity, w, False)}' is not established by the "
                              "question or an earlier step")
                    missing.append(conclusion(entity, w, False))
                elif established[w] is not None:
                    premises.add(established[w])  # type: ignore[arg-type]
            if reason is None:
                if not neg and b in established and not cited:
                    if established[b] is not None:  # a restatement of what is known
                        premises.add(established[b])  # type: ignore[arg-type]
                else:
                    pool = cited if cited else sorted(rules)
                    applies = [r for r in pool if r[1] == b and r[2] == neg]
                    grounded = [r for r in applies if r[0] in established]
                    if grounded:
                        a = next((r[0] for r in grounded if r[0] in {w for w, _ in restated}), grounded[0][0])
                        if established[a] is not None:
                            premises.add(established[a])  # type: ignore[arg-type]
                    elif applies:
                        a = applies[0][0]
                        reason = (f"unsupported premise: '{conclusion(entity, a, False)}' is not established by "
                                  "the question or an earlier step")
                        missing.append(conclusion(entity, a, False))
                    elif cited:
                        r = cited[-1]
                        reason = f"the rule 'Every {r[0]} is {_isa(r[1], r[2])}' does not give '{value}'"
                    else:
                        reason = f"no rule of the problem gives '{value}'"
            out.append(StepResult(True, reason is None, sorted(p for p in premises if p < i), value, reason,
                                  missing=missing))
            if not neg:
                established[b] = i
        return out

    # ---- error injection: the logic family's, rewritten as sentences ---------------------------
    def _inject(self, problem: Problem, kind: str, rng: random.Random) -> tuple[list[str], str | None, int]:
        logic_steps = [_from_nl(s.text) for s in problem.gold_steps]
        shadow = problem.model_copy(update={"gold_steps": [s.model_copy(update={"text": t})
                                                           for s, t in zip(problem.gold_steps, logic_steps)]})
        lines, answer, first = super()._inject(shadow, kind, rng)
        return [self._to_nl(problem, ln) for ln in lines], answer, first

    # ---- faithfulness hooks -------------------------------------------------------------------
    def corrupt_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        """The step's conclusion negated (or, half the time, about another concept of the problem)."""
        line = steps[k].strip()
        meta = problem.meta
        entity = meta["entity"]
        claims = list(re.finditer(rf"\b{re.escape(entity)}\s+is\s+(not\s+)?an?\s+({_WORD})", line, re.IGNORECASE))
        if not claims:
            return None
        last = claims[-1]
        b, neg = last.group(2), last.group(1) is not None
        others = [w for w in dict.fromkeys([meta["fact"], *(w for r in meta["rules"] for w in r[:2])])
                  if w.lower() != b.lower()]
        concl = conclusion(entity, b, not neg) if rng.random() < 0.5 or not others \
            else conclusion(entity, rng.choice(others), neg)
        return line[:last.start()] + concl + line[last.end():]

    def paraphrase_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        """The canonical sentence in another order; None for other wordings (a model may reword them)."""
        line = steps[k].strip()
        m = re.fullmatch(rf"({_WORD}) is an? ({_WORD}), and every ({_WORD}) is (not )?an? ({_WORD}), so (.+)\.",
                         line)
        if m is None:
            return None
        concl = m.group(6)
        return rng.choice([_since, _therefore])(m.group(1), m.group(3), m.group(5), m.group(4) is not None, concl)


def _from_nl(line: str) -> str:
    """The canonical sentence back in the logic family's format (for its injector)."""
    m = re.fullmatch(rf"({_WORD}) is an? ({_WORD}), and every ({_WORD}) is (not )?an? ({_WORD}), so (.+)\.", line)
    if m is None:  # pragma: no cover - gold steps are canonical
        return line
    return f"Every {m.group(3)} is {_isa(m.group(5), m.group(4) is not None)}, so {m.group(6)}."


def _singular(word: str, known: set[str]) -> str:
    w = word.lower()
    for cut in ("es", "s"):
        if w.endswith(cut) and w[: -len(cut)] in known:
            return w[: -len(cut)]
    return w


__all__ = ["LogicNLFamily", "nl_step"]
