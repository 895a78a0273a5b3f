"""Training examples for zoo models, drawn deterministically from the task families.

Batch ``step`` of a run with seed ``s`` depends only on (s, step), so a resumed run
sees exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from verinet.schema import Problem
from verinet.tasks import InjectionUnsupported, get_family
from verinet.zoo import formats
from verinet.zoo.config import TaskMix, ZooConfig, ZooError
from verinet.zoo.tokenizer import ANSWER_CUE, INVALID, TAG, VALID

IGNORE = -100
FORCE_KINDS = ("wrong_result", "wrong_premise", "dropped_step")


@dataclass
class Example:
    ids: list[int]
    targets: list[int]  # targets[i]: the token to predict at position i, or IGNORE
    objective: str


class ExampleBuilder:
    def __init__(self, config: ZooConfig, tokenizer) -> None:
        self.config = config
        self.tok = tokenizer
        self.tag_id = tokenizer.convert_tokens_to_ids(TAG)
        self.valid_id = tokenizer.convert_tokens_to_ids(VALID)
        self.invalid_id = tokenizer.convert_tokens_to_ids(INVALID)
        obj = config.objectives
        self.objectives = [("solve", obj.solve), ("verify", obj.verify), ("force", obj.force),
                           ("answer", obj.answer)]

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def completion(self, prompt: str, target: str, objective: str) -> Example:
        p, t = self.encode(prompt), self.encode(target)
        ids = p + t
        targets = [IGNORE] * (len(p) - 1) + t + [IGNORE]
        return Example(ids, targets, objective)

    def solve(self, problem: Problem) -> Example:
        fam = get_family(problem.family)
        return self.completion(formats.solve_prompt(problem.question),
                               formats.solve_target(fam.gold_chain(problem).text), "solve")

    def verify(self, problem: Problem, rng: random.Random) -> Example:
        fam = get_family(problem.family)
        kinds = fam.injectable_kinds(problem)
        chain = fam.gold_chain(problem) if rng.random() < 0.4 or not kinds else \
            fam.inject(problem, rng.choice(kinds), seed=rng.randrange(1 << 30))
        check = fam.check(problem, chain.text)
        steps = [s.text for s in chain.steps]
        ids = self.encode(formats.verify_text(problem.question, steps, chain.answer))
        verdicts = iter([s.valid for s in check.steps] + [check.answer.valid])
        targets = [(self.valid_id if next(verdicts) else self.invalid_id) if t == self.tag_id else IGNORE
                   for t in ids]
        return Example(ids, targets, "verify")

    def force(self, problem: Problem, rng: random.Random) -> Example:
        fam = get_family(problem.family)
        chain = fam.gold_chain(problem)
        if rng.random() < 0.5:
            try:
                chain = fam.inject(problem, rng.choice(FORCE_KINDS), seed=rng.randrange(1 << 30))
            except InjectionUnsupported:
                pass
        steps = [s.text for s in chain.steps]
        r = rng.random()
        if r < 0.1:
            prompt = formats.filler_prompt(problem.question, len("\n".join(steps)))
            answer = problem.answer
        else:
            k = rng.randint(0, len(steps))
            prompt = formats.force_prompt(problem.question, steps[:k])
            answer = chain.answer if k == len(steps) else problem.answer
        return self.completion(prompt, formats.force_target(answer or problem.answer), "force")

    def answer(self, problem: Problem) -> Example:
        """Answer-only data: asked to solve, the model writes the answer line and no steps."""
        return self.completion(formats.solve_prompt(problem.question),
                               formats.solve_target(f"{ANSWER_CUE} {problem.answer}"), "answer")

    def example(self, problem: Problem, objective: str, rng: random.Random) -> Example:
        if objective == "solve":
            return self.solve(problem)
        if objective == "answer":
            return self.answer(problem)
        if objective == "verify":
            return self.verify(problem, rng)
        return self.force(problem, rng)

    def batch(self, step: int, *, seed: int | None = None, size: int | None = None) -> list[Example]:
        """The training batch for ``step``: one family per batch (less padding), mixed objectives."""
        seed = self.config.training.seed if seed is None else seed
        size = size or self.config.training.batch_size
        rng = random.Random(f"zoo-train:{seed}:{step}")
        mix: TaskMix = rng.choices(self.config.tasks, weights=[t.weight for t in self.config.tasks])[0]
        fam = get_family(mix.family)
        names, weights = zip(*self.objectives)
        if step < self.config.objectives.solve_first * self.config.training.steps:
            weights = (1.0, 0.0, 0.0, 0.0)
        out: list[Example] = []
        tries = 0
        while len(out) < size:
            problem = fam.generate(rng.getrandbits(31), rng.choice(mix.params))
            ex = self.example(problem, rng.choices(names, weights=weights)[0], rng)
            if len(ex.ids) <= self.config.size.max_len:
                out.append(ex)
            tries += 1
            if tries >= 50 * size and len(out) < tries // 50:
                raise ZooError(f"tasks ({mix.family} {mix.params}): only {len(out)} of {tries} examples fit "
                               f"size.max_len = {self.config.size.max_len} tokens; raise max_len or choose "
                               "shorter problems")
        return out


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids, attention_mask, targets."""
    n = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    targets = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = 1
        targets[i, : len(e.targets)] = torch.tensor(e.targets)
    return {"input_ids": ids, "attention_mask": mask, "targets": targets}
