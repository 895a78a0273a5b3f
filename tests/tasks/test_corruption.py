"""A corrupted chain must never be rewarded for its corruption (issue #13, item 3).

The realistic corruption: one step's result (the number after ``=``) is changed and the later steps
are left as written, so they go on using the old, correct number. The premise readers link numbers
to the steps that stated them; the changed result cuts that link, and before the fix the later
steps looked premise-free, rested on nothing, and gained support: corrupted chains were accepted
more often than correct ones. A number that neither the question nor an earlier step states is a
*missing* premise (unsupported), not the absence of one.

The chains go through the path of the endpoint: the request's chain read by
:func:`verinet.serve.chains.client_chain` (``format="gsm8k"``: the gsm8k reader gives the premises),
then :func:`verinet.graph.pipeline.verify_batch` on that one chain, as ``Engine._decide_one`` calls
it. NL chains are also read by the ``arith_nl`` family's own reader (the compare job's path).
The simulated verifiers are not informative (the same P(valid) per item for the gold and the
corrupted chain), so only the premise structure differs; an informative verifier (low P(valid) on
the corrupted step) must make the corrupted chain lose.

``python tests/tasks/test_corruption.py`` prints the acceptance rates.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import pytest

from verinet.graph.pipeline import verify_batch
from verinet.schema import Chain, Problem, Verdict
from verinet.serve.api import VerifyRequest
from verinet.serve.chains import client_chain
from verinet.serve.config import Limits
from verinet.tasks import get_family, split_chain
from verinet.tasks.arith_nl import gsm8k_record

ARITH_NL = get_family("arith_nl")
GSM8K = get_family("gsm8k")
N_PER_DEPTH = 40  # problems per chain depth (3, 4, 5 steps): 120 per format
SEEDS = range(4)  # verifier draws per problem
VERIFIERS = ("v0", "v1", "v2")
FORMATS = ("gsm8k", "nl-endpoint", "nl-family")


@dataclass
class Case:
    pid: str
    k: int  # the corrupted step
    gold: Chain
    corrupted: Chain
    family: str  # what verify_batch normalises answers with
    problem: Problem  # what the family's checker reads the chains against
    ambiguous: bool  # the old result is also a number of the question or another step's result


def _problems() -> list[Problem]:
    out = []
    for depth in (3, 4, 5):
        out += ARITH_NL.sample(N_PER_DEPTH, seed=100 + depth, params={"steps": depth, "distractors": 1})
    return out


def _client(pid: str, question: str, text: str) -> Chain:
    """The chain as the endpoint reads a ``format: gsm8k`` request."""
    req = VerifyRequest(id=pid, question=question, chain=text, format="gsm8k")
    return client_chain(req, Limits()).chain


def cases(fmt: str) -> list[Case]:
    out = []
    for p in _problems():
        rng = random.Random(f"corrupt:{p.id}")
        if fmt == "gsm8k":
            sc = split_chain(gsm8k_record(p)["answer"])
            lines, answer = sc.steps, sc.answer
            question_only = Problem(id=p.id, family="gsm8k", question=p.question, answer="")
            k = rng.randrange(len(lines))
            bad = GSM8K.corrupt_step(question_only, lines, k, rng)
        else:
            lines, answer = [s.text for s in p.gold_steps], p.answer
            k = rng.randrange(len(lines))
            bad = ARITH_NL.corrupt_step(p, lines, k, rng)
        assert bad is not None and bad != lines[k], (p.id, k)
        texts = ["\n".join(ls + [f"#### {answer}"]) for ls in (lines, lines[:k] + [bad] + lines[k + 1:])]
        if fmt == "nl-family":
            gold, corr = (ARITH_NL.parse_chain(p, t, chain_id=f"{p.id}/{w}", author=w)
                          for t, w in zip(texts, ("gold", "corrupted"), strict=True))
            family, problem = "arith_nl", p
        else:
            gold, corr = (_client(f"{p.id}-{w}", p.question, t) for t, w in zip(texts, ("gold", "corrupted"),
                                                                                 strict=True))
            family, problem = "gsm8k", Problem(id=p.id, family="gsm8k", question=p.question, answer="")
        assert len(gold.steps) == len(corr.steps) and gold.answer == corr.answer
        values, solution = p.meta["values"], p.meta["solution"]
        others = set(p.meta["givens"].values()) | {values[n] for j, n in enumerate(solution) if j != k}
        out.append(Case(p.id, k, gold, corr, family, problem, values[solution[k]] in others))
    return out


REGIMES = ("constant", "confident", "uniform", "informative")


def _p_valid(regime: str, n_items: int, seed: int, k: int, corrupted: bool) -> list[list[float]]:
    """P(valid) per verifier and item: the same for both chains, except that ``informative`` verifiers
    doubt the corrupted step. ``constant``: 0.9; ``confident``: U(0.75, 1); ``uniform``: U(0, 1)."""
    rng = random.Random(f"verifiers:{regime}:{seed}:{n_items}:{k}")
    if regime == "constant":
        return [[0.9] * n_items for _ in VERIFIERS]
    lo = 0.0 if regime == "uniform" else 0.75
    ps = [[rng.uniform(lo, 1.0) for _ in range(n_items)] for _ in VERIFIERS]
    if regime == "informative" and corrupted:
        for row in ps:
            row[k] = rng.uniform(0.0, 0.4)
    return ps


def _verify(chain: Chain, ps: list[list[float]], family: str) -> tuple[bool, int]:
    verdicts = [Verdict(verifier=v, chain_id=chain.id, step_index=i, p_valid=p)
                for v, row in zip(VERIFIERS, ps, strict=True) for i, p in enumerate(row)]
    rep = verify_batch([(chain.problem_id, [chain], verdicts)], aggregation="mean", threshold=0.5,
                       family=family, include_graph=False).reports[0]
    return chain.id in rep.accepted, rep.earliest_error[chain.id]


@dataclass
class Rates:
    gold: float  # acceptance rate of the gold chains
    corrupted: float  # acceptance rate of the corrupted chains
    at_or_before: float  # share of corrupted chains whose earliest error is in 0..k
    same_error: float  # share of draws where both chains get the same earliest error
    rewarded: list[str]  # problems whose corrupted chain is accepted under more draws than its gold chain
    rewarded_ambiguous: list[str]  # of those, the ones whose old result is a number stated elsewhere too
    n: int  # problems
    n_ambiguous: int

    def line(self) -> str:
        return (f"gold {self.gold:.1%}  corrupted {self.corrupted:.1%}  earliest error <= k {self.at_or_before:.1%}"
                f"  rewarded {len(self.rewarded)}/{self.n} ({len(self.rewarded_ambiguous)} of the "
                f"{self.n_ambiguous} ambiguous)")


def rates(fmt: str, regime: str, the_cases: list[Case] | None = None) -> Rates:
    the_cases = cases(fmt) if the_cases is None else the_cases
    acc_g = acc_c = early = same = 0
    rewarded: list[Case] = []
    for c in the_cases:
        n_items = len(c.gold.steps) + 1
        wins_g = wins_c = 0
        for seed in SEEDS:
            g, ee_g = _verify(c.gold, _p_valid(regime, n_items, seed, c.k, False), c.family)
            a, ee = _verify(c.corrupted, _p_valid(regime, n_items, seed, c.k, True), c.family)
            wins_g, wins_c = wins_g + g, wins_c + a
            early += 0 <= ee <= c.k
            same += ee == ee_g
        acc_g, acc_c = acc_g + wins_g, acc_c + wins_c
        if wins_c > wins_g:
            rewarded.append(c)
    total = len(the_cases) * len(SEEDS)
    return Rates(acc_g / total, acc_c / total, early / total, same / total, [c.pid for c in rewarded],
                 [c.pid for c in rewarded if c.ambiguous], len(the_cases), sum(c.ambiguous for c in the_cases))


@pytest.fixture(scope="module", params=FORMATS)
def fmt_cases(request):
    return request.param, cases(request.param)


@pytest.mark.parametrize("regime", ["constant", "confident", "uniform"])
def test_uninformative_verifiers_never_reward_the_corruption(fmt_cases, regime):
    """Only the premise structure differs: it must not favour the corrupted chain.

    Where the old result is also a number of the question or another step's result (``ambiguous``),
    a reader that links by numbers cannot see the cut: the later step reads as using that other
    source, and the chain as a derivation that bypasses the wrong step. There the corrupted chain
    may still win a draw (fewer routes to multiply); the arith_nl reader, which also reads who has
    what, sees every cut. Everywhere else a later step rests on a number nothing states: a missing
    premise, never "no premise"."""
    fmt, the_cases = fmt_cases
    assert len(the_cases) >= 100
    r = rates(fmt, regime, the_cases)
    print(f"\n{fmt} {regime}: {r.line()}")
    assert r.corrupted <= r.gold, r
    assert set(r.rewarded) == set(r.rewarded_ambiguous), r  # only where numbers cannot tell
    if fmt == "nl-family":
        assert not r.rewarded, r
    assert r.same_error == 1.0  # the earliest error is the verifiers' alone: the structure never moves it
    if regime == "uniform":  # verifiers that sometimes say "invalid": the error is found no later than k
        assert r.at_or_before > 0.5, r
    if regime == "constant":  # a step the old number's step fed is unsupported: most corrupted chains lose
        assert r.corrupted < r.gold * 0.75, r


def test_informative_verifier_rejects_the_corruption(fmt_cases):
    fmt, the_cases = fmt_cases
    r = rates(fmt, "informative", the_cases)
    print(f"\n{fmt} informative: {r.line()}")
    # with numbers alone, an ambiguous cut leaves the answer resting on steps around the doubted one
    assert r.corrupted < r.gold * (0.1 if fmt == "nl-family" else 0.5), r
    assert set(r.rewarded) == set(r.rewarded_ambiguous), r
    assert r.at_or_before == 1.0, r


# ---- the rule, unit by unit ------------------------------------------------------------------------
_Q = Problem(id="q", family="gsm8k", question="Ann has 3 apples and buys 4 more. How many does she have?",
             answer="")


def test_gsm8k_number_nothing_states_is_a_missing_premise():
    ok = "She has 3 + 4 = <<3+4=7>>7 apples.\nShe gives away half: 7 / 2 = <<7/2=3.5>>3.5.\n#### 3.5"
    check = GSM8K.check(_Q, ok)
    assert check.first_error == -1 and check.n_supported == 2  # "half" states 2
    bad = "She has 3 + 4 = <<3+4=8>>8 apples.\nShe gives away half: 7 / 2 = <<7/2=3.5>>3.5.\n#### 3.5"
    check = GSM8K.check(_Q, bad)
    step = check.steps[1]
    assert step.valid and not step.supported and step.missing_premises == ["7"] and step.premises == []
    assert step.reason.startswith("unsupported premise: 7 is neither a number of the question")
    chain = GSM8K.parse_chain(_Q, bad, chain_id="c", author="t")
    assert chain.steps[1].missing_premises == ["7"]  # what the graph reads: never "no premise"
    # without the question (implied_answer, injection) nothing is missing, values are the same
    assert GSM8K.implied_answer(_Q, bad.splitlines()[:2]) == "3.5"


@pytest.mark.parametrize("question, step", [
    ("A baker makes 24 muffins and twice as many later.", "24*2 = <<24*2=48>>48"),
    ("Lily reads 12 pages a day for a week.", "12*7 = <<12*7=84>>84"),
    ("Three friends split a $10 bill.", "10/3 = <<10/3=3.33>>3.33"),
    ("A shirt costs $40 and is 25% off.", "40*0.25 = <<40*0.25=10>>10"),
    ("A shirt costs $40 and is 25% off.", "40*25/100 = <<40*25/100=10>>10"),
    ("He buys two dozen eggs.", "2*12 = <<2*12=24>>24"),
    ("He buys two dozen eggs.", "There are 12 eggs in a dozen, so 2*12 = <<2*12=24>>24"),
    ("She runs for 2 hours.", "2*60 = <<2*60=120>>120 minutes"),
    ("Twenty-five kids and a fifth of them leave.", "25/5 = <<25/5=5>>5"),
])
def test_gsm8k_numbers_stated_in_words_are_not_missing(question, step):
    p = Problem(id="w", family="gsm8k", question=question, answer="")
    check = GSM8K.check(p, step)
    assert check.steps[0].missing_premises == [] and check.steps[0].supported, check.steps[0].reason


def test_arith_nl_claim_that_disagrees_is_a_missing_premise():
    p = ARITH_NL.generate(11, {"steps": 3, "distractors": 0, "branching": 0.0, "ops": "+"})
    lines = [s.text for s in p.gold_steps]
    bad = ARITH_NL.corrupt_step(p, lines, 0, random.Random(0))
    chain = ARITH_NL.parse_chain(p, "\n".join([bad] + lines[1:]), chain_id="c", author="t")
    assert chain.steps[0].missing_premises == []  # the changed step itself is wrong, not unsupported
    assert chain.steps[1].missing_premises  # it uses the old number: never premise-free


def test_missing_premise_has_no_support_and_reproduces_the_checker():
    from verinet.graph.build import build_graph
    from verinet.graph.propagate import propagate, support
    from verinet.schema import Step, StepPosterior

    steps = [Step(index=0, text="a"), Step(index=1, text="b", missing_premises=["7"]),
             Step(index=2, text="c", premises=[1])]
    c = Chain(id="c", problem_id="p", text="", steps=steps, answer="1")
    g = build_graph("p", [c])
    assert g.nodes[("step", "c", 1)]["missing_premises"] == ["7"]
    sup = support(g, dict.fromkeys([("c", 0), ("c", 1), ("c", 2), ("c", 3)], 0.9))
    assert sup[("c", 0)] == pytest.approx(0.9) and sup[("c", 1)] == sup[("c", 2)] == sup[("c", 3)] == 0.0
    soft = support(g, dict.fromkeys([("c", 0), ("c", 1), ("c", 2), ("c", 3)], 0.9), missing_premise=0.5)
    assert soft[("c", 1)] == pytest.approx(0.45)
    post = propagate(g, [StepPosterior(chain_id="c", step_index=i, p_valid=1.0, p_supported=1.0, n_verdicts=1)
                         for i in range(4)])
    assert [q.p_supported for q in post] == [1.0, 0.0, 0.0, 0.0]
    # 0/1 beliefs from the exact checker: the graph's support is the checker's "supported"
    for fmt in ("gsm8k", "nl-family"):
        for case in cases(fmt)[:40]:
            c = case.corrupted
            check = get_family(case.family).check(case.problem, c.text)
            labels = {(c.id, s.index): float(s.valid) for s in check.steps}
            sup = support(build_graph(c.problem_id, [c]), labels)
            assert [sup[(c.id, s.index)] for s in check.steps] == [float(s.supported) for s in check.steps]
            assert any(s.missing_premises for s in c.steps) or case.k == len(c.steps) - 1 or case.ambiguous


if __name__ == "__main__":
    for f in sys.argv[1:] or FORMATS:
        cs = cases(f)
        for reg in REGIMES:
            print(f"{f:12s} {reg:12s}", rates(f, reg, cs).line(), flush=True)
