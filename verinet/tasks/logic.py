"""`logic`: multi-hop deduction in ProntoQA style, in three vocabularies.

A question states shuffled rules, one fact about an entity and a query::

    Every wumpus is a yumpus. Every dumpus is a rompus. Every zumpus is not a gorpus.
    Every yumpus is a zumpus. Max is a wumpus. True or false: Max is a gorpus.

The canonical chain applies one rule per line, restating it, then concludes::

    Every wumpus is a yumpus, so Max is a yumpus.
    Every yumpus is a zumpus, so Max is a zumpus.
    Every zumpus is not a gorpus, so Max is not a gorpus.
    #### False

A step's value is its conclusion without the period ("Max is not a gorpus").

Generation draws an abstract structure first (concept ids, proof path, answer,
distractor rules, rule order, entity) by walking a small real taxonomy, then
names the concepts in one of three vocabularies that share that structure:
``fictional`` (made-up words), ``real`` (the taxonomy walk itself: every rule is
true) and ``counterfactual`` (real words drawn until every rule is false). The
proof path uses parent edges; a False answer ends with "Every c is not a q" for
a q disjoint from c. Distractor rules never make another concept derivable:
their subjects are fresh concepts, or path concepts with a negated rule to a
fresh concept, so they neither prove nor contradict the query.

A step is *locally valid* when the rule it cites is in the problem, it is about
the problem's entity, its conclusion is what the rule gives, and its premise
"ENTITY is a A" is the given fact or the positive conclusion of an earlier step
of the same chain (valid or not). Its premises are [that step] or [] for the fact.
The answer is valid when an earlier step concluded it about the query.

Two more phrasings of a step read the same: "Each A is (not) a B, so ENTITY is (not) a B."
and "Since every A is (not) a B, ENTITY is (not) a B." The faithfulness suite's
paraphraser moves a step between the three; its corruption flips a conclusion's
polarity or swaps its concept, as the ``wrong_result`` injection does.
"""

from __future__ import annotations

import random
import re
from typing import Literal

from pydantic import Field, model_validator

from verinet.schema import Problem, Step
from verinet.tasks.base import InjectionUnsupported, KnobsBase, StepResult, TaskError, TaskFamily

MAX_HOPS = 6  # every proof path of this length embeds in the taxonomy (depth >= 6 at 14 nodes)
MAX_DISTRACTORS = 8
MAX_LINE = 400  # longer lines are rejected before any regex runs

# parent: children (folk taxonomy; "carnivore" is the order Carnivora)
_TAXONOMY = """
organism: animal plant fungus
animal: vertebrate invertebrate
vertebrate: mammal bird reptile amphibian fish
mammal: carnivore rodent primate ungulate
carnivore: feline canine
feline: housecat lion tiger
housecat: siamese persian
canine: dog coyote fox
dog: poodle beagle
rodent: mouse squirrel beaver
primate: ape lemur
ape: gorilla chimpanzee
ungulate: horse deer
deer: moose
bird: songbird raptor waterfowl
songbird: sparrow finch robin
raptor: eagle hawk owl
waterfowl: duck goose
reptile: snake lizard turtle
snake: viper python cobra
viper: rattlesnake
lizard: gecko iguana
amphibian: frog salamander
fish: salmon shark trout
invertebrate: insect arachnid mollusk
insect: beetle butterfly ant bee
beetle: ladybug
arachnid: spider scorpion
spider: tarantula
mollusk: snail octopus
plant: tree flower grass
tree: conifer oak maple
conifer: pine spruce
flower: rose tulip daisy
grass: wheat bamboo
fungus: mushroom yeast
"""
FICTIONAL = (
    "wumpus yumpus zumpus dumpus rompus gorpus jompus lempus numpus tumpus vumpus sterpus brimpus "
    "grimpus shumpus lorpus impus kumpus gwompus felpus timpus dalpus quimpus borpus hilpus zelpus "
    "frompus plumpus snorpus welpus"
).split()
ENTITIES = ("Max", "Alex", "Sam", "Rex", "Fae", "Wren", "Polly", "Stella", "Sally", "Rosa", "Theo", "Iris")
VOCABULARIES = ("fictional", "real", "counterfactual")

PARENT: dict[str, str | None] = {}
for _line in _TAXONOMY.strip().splitlines():
    _head, _kids = _line.split(":")
    PARENT.setdefault(_head.strip(), None)
    PARENT.update({kid: _head.strip() for kid in _kids.split()})
NODES: tuple[str, ...] = tuple(PARENT)  # a fixed order: generation never iterates a set


def ancestors(word: str) -> list[str]:
    """Proper ancestors of a taxonomy word, parent first ([] for the root or unknown words)."""
    out, p = [], PARENT.get(word)
    while p is not None:
        out.append(p)
        p = PARENT[p]
    return out


_ANC = {n: ancestors(n) for n in NODES}


def rule_is_true(a: str, b: str, negated: bool) -> bool:
    """Whether "Every a is (not) a b" is true in the taxonomy."""
    if a not in _ANC or b not in _ANC:
        return False
    if negated:
        return a != b and b not in _ANC[a] and a not in _ANC[b]
    return b in _ANC[a]


_DISJOINT = {n: [m for m in NODES if rule_is_true(n, m, True)] for n in NODES}

_WORD = r"[^\W\d_][\w'-]*"
_IS = rf"\s+is\s+(not\s+)?an?\s+({_WORD})"
_STEP = re.compile(rf"(?:every|each)\s+({_WORD}){_IS}\s*,\s*so\s+({_WORD}){_IS}\s*\.?", re.IGNORECASE)
# the same groups, in the "since" phrasing
_SINCE = re.compile(rf"since\s+(?:every|each)\s+({_WORD}){_IS}\s*,\s*({_WORD}){_IS}\s*\.?", re.IGNORECASE)
STEP_SHAPE = "'Every A is (not) a B, so ENTITY is (not) a B.'"
PHRASINGS = ("every", "each", "since")


def _art(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _isa(b: str, negated: bool) -> str:
    return f"{'not ' if negated else ''}{_art(b)} {b}"


def conclusion(entity: str, b: str, negated: bool) -> str:
    """A step's value: "Max is (not) a b"."""
    return f"{entity} is {_isa(b, negated)}"


def step_text(entity: str, a: str, b: str, negated: bool) -> str:
    """The canonical line applying "Every a is (not) a b" to the entity."""
    return f"Every {a} is {_isa(b, negated)}, so {conclusion(entity, b, negated)}."


def _match_step(line: str) -> re.Match[str] | None:
    """A step line in any of the phrasings (groups: A, not, B, ENTITY, not, B); None if it is none."""
    if len(line) > MAX_LINE:
        return None
    line = line.strip()
    return _STEP.fullmatch(line) or _SINCE.fullmatch(line)


def _phrase(phrasing: str, a: str, b: str, negated: bool, concl: str) -> str:
    rule = f"{a} is {_isa(b, negated)}"
    if phrasing == "since":
        return f"Since every {rule}, {concl}."
    return f"{'Each' if phrasing == 'each' else 'Every'} {rule}, so {concl}."


class LogicKnobs(KnobsBase):
    """Difficulty knobs for `logic`."""

    hops: int = Field(default=3, ge=1, le=MAX_HOPS, description="proof steps (rules applied in turn)")
    distractors: int = Field(default=2, ge=0, le=MAX_DISTRACTORS, description="rules the proof does not use")
    vocabulary: Literal["fictional", "real", "counterfactual"] = Field(
        default="fictional", description="made-up words, true real-world rules, or false real-world rules")
    p_false: float = Field(default=0.5, ge=0.0, le=1.0, description="probability that the answer is False")
    negation: bool = Field(default=True, description="allow negated rules (False answers, distractors)")

    @model_validator(mode="after")
    def _false_needs_negation(self) -> LogicKnobs:
        if self.p_false > 0 and not self.negation:
            raise ValueError(f"p_false={self.p_false} needs negation=True (a False answer is proved "
                             "with a negated rule); set p_false=0 or negation=True")
        return self


class LogicFamily(TaskFamily):
    name = "logic"
    Knobs = LogicKnobs

    # ---- generation -----------------------------------------------------------
    def _generate(self, rng: random.Random, seed: int, knobs: LogicKnobs) -> Problem:
        structure, entity, witness = _structure(rng, knobs)
        n = structure["n_concepts"]
        if knobs.vocabulary == "real":
            words = witness
        elif knobs.vocabulary == "fictional":
            words = rng.sample(FICTIONAL, n)
        else:
            words = _counterfactual(rng, n, structure["rules"])
        rules = [[words[a], words[b], neg] for a, b, neg in structure["rules"]]
        fact, query = words[structure["fact"]], words[structure["query"]]
        gold = [
            Step(index=j, text=step_text(entity, *rules[r]), premises=[j - 1] if j else [],
                 value=conclusion(entity, rules[r][1], rules[r][2]))
            for j, r in enumerate(structure["proof"])
        ]
        question = " ".join(
            [f"Every {a} is {_isa(b, neg)}." for a, b, neg in rules]
            + [f"{conclusion(entity, fact, False)}.", f"True or false: {conclusion(entity, query, False)}."]
        )
        return Problem(
            id=self.problem_id(seed, knobs), family="logic", question=question,
            answer=structure["answer"], gold_steps=gold, seed=seed, params=knobs.model_dump(),
            meta={"entity": entity, "fact": fact, "rules": rules, "query": query,
                  "structure": structure, "vocabulary": knobs.vocabulary},
        )

    # ---- checking -------------------------------------------------------------
    def normalize_answer(self, answer: str | None) -> str | None:
        if answer is None:
            return None
        a = answer.strip().rstrip(".").strip()
        return a.capitalize() if a.lower() in ("true", "false") else a

    def read_steps(self, problem: Problem, lines: list[str]) -> list[StepResult]:
        meta = problem.meta
        entity, fact = meta["entity"], meta["fact"]
        rules = {(a, b, bool(neg)) for a, b, neg in meta["rules"]}
        established: dict[str, int] = {}  # concept -> latest step concluding "ENTITY is a concept"
        out: list[StepResult] = []
        for i, line in enumerate(lines):
            m = _match_step(line)
            if m is None:
                out.append(StepResult(False, False, reason=f"cannot parse; expected {STEP_SHAPE}"))
                continue
            a, b, ent, b2 = (g.lower() for g in m.group(1, 3, 4, 6))
            neg, neg2 = m.group(2) is not None, m.group(5) is not None
            ent_ok = ent == entity.lower()
            value = conclusion(entity if ent_ok else m.group(4), b2, neg2)
            premises = [] if a == fact or a not in established else [established[a]]
            reason = None
            if (a, b, neg) not in rules:
                reason = f"rule not in the problem: 'Every {a} is {_isa(b, neg)}'"
            elif not ent_ok:
                reason = f"the step is about {m.group(4)!r}, but the problem is about {entity}"
            elif (b2, neg2) != (b, neg):
                reason = f"the rule gives '{conclusion(entity, b, neg)}', not '{value}'"
            elif a != fact and a not in established:
                reason = (f"premise '{conclusion(entity, a, False)}' not established by the question "
                          "or an earlier step")
            out.append(StepResult(True, reason is None, premises=premises, value=value, reason=reason))
            if ent_ok and not neg2:
                established[b2] = i
        return out

    def read_answer(self, problem: Problem, lines: list[str], steps: list[StepResult],
                    answer: str | None) -> StepResult:
        if answer is None:
            return StepResult(False, False, reason="no answer line; expected '#### True' or '#### False'")
        norm = self.normalize_answer(answer)
        if norm not in ("True", "False"):
            return StepResult(False, False, reason=f"answer {answer[:40]!r} is not True or False")
        meta = problem.meta
        want = conclusion(meta["entity"], meta["query"], norm == "False")
        found = [i for i, s in enumerate(steps) if s.value == want]
        if found:
            return StepResult(True, True, premises=[found[-1]], value=norm)
        if norm == "True" and meta["query"] == meta["fact"]:
            return StepResult(True, True, value=norm)
        return StepResult(True, False, value=norm, reason=f"no step concludes '{want}'")

    # ---- error injection ------------------------------------------------------
    def _inject(self, problem: Problem, kind: str, rng: random.Random) -> tuple[list[str], str | None, int]:
        meta = problem.meta
        entity, rules = meta["entity"], [tuple(r) for r in meta["rules"]]
        proof = [rules[r] for r in meta["structure"]["proof"]]
        lines = [s.text for s in problem.gold_steps]
        n = len(lines)
        if kind == "answer_miscopy":
            return lines, "False" if problem.answer == "True" else "True", n
        if kind == "dropped_step":
            # step k+1 (or the answer, for the last step) needs step k's conclusion
            k = rng.randrange(n)
            return lines[:k] + lines[k + 1:], problem.answer, k
        if kind == "wrong_result":
            k = rng.randrange(n)
            a, b, neg = proof[k]
            others = list(dict.fromkeys([meta["fact"], *(w for r in rules for w in r[:2])]))
            others.remove(b)
            concl = (conclusion(entity, b, not neg) if rng.random() < 0.5 or not others
                     else conclusion(entity, rng.choice(others), neg))
            lines[k] = f"Every {a} is {_isa(b, neg)}, so {concl}."
            return lines, problem.answer, k
        if kind == "wrong_premise":
            # cite, at step k, a rule whose subject no earlier gold step (nor the fact) establishes
            options = []
            for k in range(n):
                known = {meta["fact"], *(b for _, b, neg in proof[:k] if not neg)}
                options += [(k, r) for r in rules if r[0] not in known]
            if not options:
                raise InjectionUnsupported(f"{problem.id}: every rule's subject is established at every step")
            k, (a, b, neg) = rng.choice(options)
            lines[k] = step_text(entity, a, b, neg)
            return lines, problem.answer, k
        raise InjectionUnsupported(f"logic cannot inject {kind!r}")

    # ---- faithfulness hooks -----------------------------------------------------
    def implied_answer(self, problem: Problem, steps: list[str]) -> str | None:
        meta = problem.meta
        yes, no = (conclusion(meta["entity"], meta["query"], neg) for neg in (False, True))
        for r in reversed(self.read_steps(problem, steps)):
            if r.value == yes:
                return "True"
            if r.value == no:
                return "False"
        return None

    def corrupt_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        m = _match_step(steps[k])
        if m is None:
            return None
        a, b, entity, b2 = m.group(1, 3, 4, 6)
        neg, neg2 = bool(m.group(2)), bool(m.group(5))
        meta = problem.meta
        others = [w for w in dict.fromkeys([meta["fact"], *(w for r in meta["rules"] for w in r[:2])])
                  if w.lower() != b2.lower()]
        if rng.random() < 0.5 or not others:  # the opposite conclusion
            concl = conclusion(entity, b2, not neg2)
        else:  # a conclusion about another concept of the problem
            concl = conclusion(entity, rng.choice(others), neg2)
        return _phrase("every", a, b, neg, concl)

    def paraphrase_step(self, problem: Problem, steps: list[str], k: int, rng: random.Random) -> str | None:
        line = steps[k].strip()
        m = _match_step(line)
        if m is None:
            return None
        current = "since" if line.lower().startswith("since") else "each" if line.lower().startswith("each") \
            else "every"
        phrasing = rng.choice([p for p in PHRASINGS if p != current])
        concl = conclusion(m.group(4), m.group(6), bool(m.group(5)))
        return _phrase(phrasing, m.group(1), m.group(3), bool(m.group(2)), concl)


def _structure(rng: random.Random, knobs: LogicKnobs) -> tuple[dict, str, list[str]]:
    """The vocabulary-free structure, the entity, and the taxonomy words witnessing it.

    Concept 0 is the fact, 1..hops-1 the path, ``hops`` the query, then distractor concepts.
    """
    h = knobs.hops
    answer_false = rng.random() < knobs.p_false and knobs.negation
    entity = rng.choice(ENTITIES)
    c0 = rng.choice([w for w in NODES if len(_ANC[w]) >= h])
    path = [c0, *_ANC[c0][:h]]
    words = path[:h] + [rng.choice(_DISJOINT[path[h - 1]])] if answer_false else path
    rules = [(i, i + 1, answer_false and i == h - 1) for i in range(h)]
    pairs = {frozenset((words[a], words[b])) for a, b, _ in rules}
    kinds = ("branch", "isa", "not") if knobs.negation else ("isa",)
    tries = 0
    while len(rules) < h + knobs.distractors:
        tries += 1
        if tries > 1000:  # pragma: no cover - the taxonomy is far larger than any request
            raise TaskError(f"could not place {knobs.distractors} distractor rules")
        kind = rng.choice(kinds)
        if kind == "branch":  # "Every c_i is not a d": a fresh d, now known not to hold
            a = words[rng.randrange(h)]
            options = [b for b in _DISJOINT[a] if b not in words]
        else:  # "Every d is (not) a x" about a concept d that cannot be derived
            a = rng.choice([w for w in NODES if w not in words] + words[h + 1:])
            options = _ANC[a] if kind == "isa" else _DISJOINT[a]
        options = [b for b in options if frozenset((a, b)) not in pairs]
        if not options:
            continue
        b = rng.choice(options)
        pairs.add(frozenset((a, b)))
        ids = []
        for w in (a, b):
            if w not in words:
                words.append(w)
            ids.append(words.index(w))
        rules.append((ids[0], ids[1], kind != "isa"))
    order = list(range(len(rules)))
    rng.shuffle(order)
    structure = {
        "hops": h, "answer": "False" if answer_false else "True", "n_concepts": len(words),
        "fact": 0, "query": h, "rules": [list(rules[i]) for i in order],
        "proof": [order.index(j) for j in range(h)],
    }
    return structure, entity, words


def _counterfactual(rng: random.Random, n: int, rules: list[list]) -> list[str]:
    """Distinct taxonomy words for concepts 0..n-1 that make every rule false (rejection sampling)."""
    checks: list[list] = [[] for _ in range(n)]
    for a, b, neg in rules:
        checks[max(a, b)].append((a, b, neg))
    for _ in range(1000):
        words: list[str] = []
        for i in range(n):
            options = [w for w in NODES if w not in words and _all_false(words + [w], checks[i])]
            if not options:
                break
            words.append(rng.choice(options))
        else:
            return words
    raise TaskError("counterfactual vocabulary: could not make every rule false; lower distractors")


def _all_false(words: list[str], rules: list) -> bool:
    return not any(rule_is_true(words[a], words[b], neg) for a, b, neg in rules)
