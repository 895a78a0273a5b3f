"""A commonsense "world" for zoo models, and what commonsense says about a logic problem.

The logic family's ``real`` vocabulary names concepts by walking a fixed folk taxonomy
(``verinet.tasks.logic._TAXONOMY``): every rule of a real problem is true in it. A *world problem*
is a real problem with its positive proof rules left out of the question (its negated rules and
distractors stay), so the gold chain can only be written from memory of the taxonomy::

    Every lion is a feline. Max is a sparrow. True or false: Max is a bird.
    Every sparrow is a songbird, so Max is a songbird.
    Every songbird is a bird, so Max is a bird.
    #### True

Training on world problems gives a model a reason to learn the taxonomy and lean on it; the
``semantics`` probe then tests counterfactual problems whose rules contradict it.

*Commonsense's answer* to "X is a F. True or false: X is a Q" is True when Q is an ancestor of F in
the taxonomy, False when the two are disjoint, and None (not determined) when Q is below F.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from verinet.probes.config import ProbeError
from verinet.schema import Problem
from verinet.tasks import get_family
from verinet.tasks.logic import _isa, ancestors, conclusion, rule_is_true
from verinet.zoo import formats
from verinet.zoo.config import ZooConfig
from verinet.zoo.data import Example, ExampleBuilder

_RULE = re.compile(r"\b(?:every|each)\s+([^\W\d_][\w'-]*)\s+is\s+(not\s+)?an?\s+([^\W\d_][\w'-]*)", re.IGNORECASE)


def commonsense_answer(fact: str, query: str) -> str | None:
    """What the taxonomy says about "ENTITY is a FACT; is ENTITY a QUERY?" (None: not determined)."""
    if query == fact or query in ancestors(fact):
        return "True"
    if rule_is_true(fact, query, True):
        return "False"
    return None


@dataclass(frozen=True)
class WorldProblem:
    """A real logic problem with its positive proof rules left out of the question."""

    problem: Problem
    question: str
    omitted: tuple[tuple[str, str, bool], ...]  # the rules left out (each true in the taxonomy)

    @property
    def chain(self) -> str:
        return get_family("logic").gold_chain(self.problem).text


def world_problem(problem: Problem, *, omit: float = 1.0, rng: random.Random | None = None) -> WorldProblem:
    """``problem`` (real vocabulary) with each positive proof rule dropped with probability ``omit``."""
    meta = problem.meta
    if meta.get("vocabulary") != "real":
        raise ProbeError(f"{problem.id}: a world problem needs the real vocabulary, not {meta.get('vocabulary')!r}; "
                         "draw it with params vocabulary: real")
    rules = [tuple(r) for r in meta["rules"]]
    proof = set(meta["structure"]["proof"])
    rng = rng or random.Random(problem.id)
    drop = {i for i in proof if not rules[i][2] and (omit >= 1.0 or rng.random() < omit)}
    kept = [r for i, r in enumerate(rules) if i not in drop]
    entity = meta["entity"]
    question = " ".join([f"Every {a} is {_isa(b, neg)}." for a, b, neg in kept]
                        + [f"{conclusion(entity, meta['fact'], False)}.",
                           f"True or false: {conclusion(entity, meta['query'], False)}."])
    return WorldProblem(problem, question, tuple((a, b, bool(n)) for i, (a, b, n) in enumerate(rules)
                                                 if i in drop))


def cited_rules(line: str) -> list[tuple[str, str, bool]]:
    """The rules ("every A is (not) a B") a line states, lowercased."""
    return [(m.group(1).lower(), m.group(3).lower(), m.group(2) is not None) for m in _RULE.finditer(line)]


def world_intrusions(problem: Problem, steps: Sequence[str], *,
                     omitted: Sequence[tuple[str, str, bool]] = ()) -> tuple[int, int]:
    """(steps citing a rule that the question does not state but that is true in the taxonomy, steps citing
    any rule). ``omitted``: rules of ``problem`` its question leaves out (a world problem's)."""
    gone = {(a.lower(), b.lower(), bool(n)) for a, b, n in omitted}
    stated = {(a.lower(), b.lower(), bool(n)) for a, b, n in problem.meta["rules"]} - gone
    hits = total = 0
    for line in steps:
        rules = cited_rules(line)
        if not rules:
            continue
        total += 1
        hits += any(r not in stated and rule_is_true(*r) for r in rules)
    return hits, total


class WorldBuilder(ExampleBuilder):
    """The zoo's example builder, except that the task mixes at ``world`` (indices into config.tasks, each
    a logic mix in the real vocabulary) yield world problems, always as solve examples."""

    def __init__(self, config: ZooConfig, tokenizer, *, world: Sequence[int], omit: float = 1.0) -> None:
        super().__init__(config, tokenizer)
        self.world = set(world)
        self.omit = omit
        for i in self.world:
            mix = config.tasks[i]
            if mix.family != "logic" or any(p.get("vocabulary") != "real" for p in mix.params):
                raise ProbeError(f"tasks.{i}: a world mix must be family logic with vocabulary real in every params "
                                 f"entry (got family {mix.family}, params {mix.params}); fix the mix or leave it out "
                                 "of world")

    def world_example(self, problem: Problem, rng: random.Random) -> Example:
        w = world_problem(problem, omit=self.omit, rng=rng)
        return self.completion(formats.solve_prompt(w.question), formats.solve_target(w.chain), "solve")

    def batch(self, step: int, *, seed: int | None = None, size: int | None = None) -> list[Example]:
        seed = self.config.training.seed if seed is None else seed
        size = size or self.config.training.batch_size
        rng = random.Random(f"zoo-train:{seed}:{step}")
        tasks = self.config.tasks
        i = rng.choices(range(len(tasks)), weights=[t.weight for t in tasks])[0]
        if i not in self.world:
            return super().batch(step, seed=seed, size=size)
        fam = get_family("logic")
        out: list[Example] = []
        tries = 0
        while len(out) < size:
            problem = fam.generate(rng.getrandbits(31), rng.choice(tasks[i].params))
            ex = self.world_example(problem, rng)
            if len(ex.ids) <= self.config.size.max_len:
                out.append(ex)
            tries += 1
            if tries >= 50 * size and len(out) < tries // 50:  # as the zoo's ExampleBuilder.batch
                raise ProbeError(f"tasks.{i} (world problems, {tasks[i].params}): only {len(out)} of {tries} examples "
                                 f"fit size.max_len = {self.config.size.max_len} tokens; raise max_len or choose "
                                 "fewer hops or distractors")
        return out


def world_builder(world: Sequence[int], omit: float = 1.0) -> Callable[[ZooConfig, object], WorldBuilder]:
    """A ``builder(config, tokenizer)`` factory for :meth:`ProbeRun.train`."""
    return lambda config, tok: WorldBuilder(config, tok, world=world, omit=omit)


__all__ = ["WorldBuilder", "WorldProblem", "cited_rules", "commonsense_answer", "world_builder",
           "world_intrusions", "world_problem"]
