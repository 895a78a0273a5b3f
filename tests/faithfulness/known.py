"""Backends of known faithfulness for arith problems, in the zoo prompt format.

Both write chains the same way: they execute the problem's definitions from the values
*stated* in the prompt's chain (so they carry an inserted mistake forward) and restate
everything in the canonical step format. They differ only in the answer:

* ``last``  answers with the last value stated in the chain (its own, when it writes one):
  the answer is what the chain says, so it is faithful by construction;
* ``gold``  answers with the gold answer whatever the chain says: the chain is decoration.

As verifiers both are oracles: P(valid) is 0.95 for steps the exact checker accepts, 0.05
otherwise. They implement the whole Backend protocol and report usage like an engine.
"""

from __future__ import annotations

import math
import re

from verinet.backends.base import Backend, Completion, GenerateResult, ScoreResult, TaggedResult, Usage
from verinet.schema import Problem
from verinet.tasks import get_family
from verinet.zoo.tokenizer import ANSWER_CUE, BOS, TAG

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
STEP = re.compile(r"^([a-z]):[a-z][-+*][a-z]>[a-z]\d+[-+*][a-z]\d+>\d+;([a-z])(\d+)$")


class KnownBackend(Backend):
    name = "known"

    def __init__(self, problems: list[Problem], answer: str) -> None:
        if answer not in ("last", "gold"):
            raise ValueError(f"answer must be 'last' or 'gold', got {answer!r}")
        self.answer = answer
        self.by_question = {p.question: p for p in problems}
        self.fam = get_family("arith")

    # ---- reading prompts ------------------------------------------------------
    def _read(self, prompt: str) -> tuple[Problem, list[str], bool]:
        body = prompt.removeprefix(BOS)
        forced = body.endswith(f"{ANSWER_CUE} ")
        if forced:
            body = body[: -len(ANSWER_CUE) - 1]
        question, _, rest = body.partition("\n")
        steps = [ln for ln in rest.split("\n") if ln.strip()]
        return self.by_question[question], steps, forced

    @staticmethod
    def _stated(steps: list[str]) -> list[tuple[str, int]]:
        out = []
        for s in steps:
            m = STEP.match(s.strip())
            if m:
                out.append((m.group(2), int(m.group(3))))
        return out

    def _write_rest(self, p: Problem, steps: list[str]) -> tuple[list[str], dict[str, int]]:
        mod, defs = p.meta["modulus"], p.meta["defs"]
        values = dict(p.meta["givens"])
        values.update(dict(self._stated(steps)))
        lines = []
        for name in p.meta["solution"]:
            if name in dict(self._stated(steps)):
                continue
            a, op, b = defs[name]
            res = OPS[op](values[a], values[b]) % mod
            lines.append(f"{name}:{a}{op}{b}>{a}{values[a]}{op}{b}{values[b]}>{res};{name}{res}")
            values[name] = res
        return lines, values

    def _answer(self, p: Problem, steps: list[str]) -> str:
        if self.answer == "gold":
            return p.answer
        stated = self._stated(steps)
        return str(stated[-1][1]) if stated else "0"

    # ---- the protocol ---------------------------------------------------------
    def generate(self, prompts, *, n=1, temperature=0.0, top_p=1.0, max_tokens=256, stop=None, seed=None):
        out, usage = [], Usage()
        for prompt in prompts:
            p, steps, forced = self._read(prompt)
            if forced:
                text = self._answer(p, steps)
            else:
                rest, _ = self._write_rest(p, steps)
                text = "\n".join(rest + [f"{ANSWER_CUE} {self._answer(p, steps + rest)}"])
            text = text[:max_tokens]
            usage = usage + Usage(len(prompt), len(text))
            out.append([Completion(text, len(text))] * n)
        return GenerateResult(out, usage)

    def score(self, prompts, candidates):
        lp = -math.log(len(candidates))
        return ScoreResult([[lp] * len(candidates) for _ in prompts], Usage(sum(map(len, prompts)), 0))

    def score_tagged(self, texts, tag, valid, invalid):
        out = []
        for text in texts:
            body = text.removeprefix(BOS)
            question, _, rest = body.partition("\n")
            lines = [ln.removesuffix(TAG) for ln in rest.split("\n") if ln.endswith(TAG)]
            check = self.fam.check(self.by_question[question], "\n".join(lines))
            verdicts = [s.valid for s in check.steps]
            if lines and lines[-1].startswith(ANSWER_CUE):
                verdicts.append(check.answer.valid)
            out.append([0.95 if v else 0.05 for v in verdicts])
        return TaggedResult(out, Usage(sum(map(len, texts)), 0))

    def info(self):
        return {"backend": self.name, "answer": self.answer}
