"""Family hooks for the faithfulness suite: implied answer, step corruption, paraphrase."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verinet.tasks import get_family

FAMILIES = [("arith", {"steps": 4, "distractors": 1}), ("arith", {"steps": 3, "modulus": 97, "ops": "+*"}),
            ("logic", {"hops": 3, "distractors": 2}), ("logic", {"hops": 2, "vocabulary": "real"})]
SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("family,knobs", FAMILIES)
def test_hooks_on_gold_chains(family, knobs):
    fam = get_family(family)
    for p in fam.sample(40, seed=11, params=knobs):
        steps = [s.text for s in p.gold_steps]
        assert fam.implied_answer(p, steps) == fam.normalize_answer(p.answer)
        rng = random.Random(0)
        for k in range(len(steps)):
            bad = fam.corrupt_step(p, steps, k, rng)
            assert bad is not None and bad != steps[k]
            check = fam.check(p, fam.format_chain(steps[:k] + [bad] + steps[k + 1:], p.answer))
            assert check.first_error == k, (bad, check.steps[k].reason)
        para = [fam.paraphrase_step(p, steps, k, rng) for k in range(len(steps))]
        assert all(a != b for a, b in zip(para, steps)), para
        check = fam.check(p, fam.format_chain(para, p.answer))  # same content: still a valid chain
        assert check.first_error == -1 and check.answer_correct, [s.reason for s in check.steps]
        assert fam.implied_answer(p, para) == fam.normalize_answer(p.answer)


@pytest.mark.parametrize("family,knobs", FAMILIES)
def test_implied_answer_is_what_the_answer_checker_accepts(family, knobs):
    """Even for wrong chains: an answer is valid exactly when it equals the implied answer."""
    fam = get_family(family)
    for p in fam.sample(15, seed=5, params=knobs):
        for kind in fam.injectable_kinds(p):
            chain = fam.inject(p, kind, seed=3)
            steps = [s.text for s in chain.steps]
            implied = fam.implied_answer(p, steps)
            for answer in {chain.answer, p.answer, implied} - {None}:
                ok = fam.check(p, fam.format_chain(steps, answer)).answer.valid
                assert ok == (fam.normalize_answer(answer) == implied), (kind, steps, answer, implied)


def test_arith_examples():
    fam = get_family("arith")
    p = fam.generate(7, {"steps": 3, "distractors": 1})
    name = p.meta["solution"][0]
    a, op, b = p.meta["defs"][name]
    va, vb = p.meta["givens"][a], p.meta["givens"][b]
    gold = p.gold_steps[0].text
    # commuted operands of + and * restate the same definition; of - they do not
    swapped = f"{name}:{b}{op}{a}>{b}{vb}{op}{a}{va}>{p.gold_steps[0].value};{name}{p.gold_steps[0].value}"
    assert fam.check(p, swapped).steps[0].valid == (op in "+*")
    # a corruption changes the result and its restatement together
    bad = fam.corrupt_step(p, [gold], 0, random.Random(1))
    res, res2 = bad.split(">")[-1].split(";")
    assert res2 == f"{name}{res}" and res != p.gold_steps[0].value
    # the implied answer is the latest value stated for the query, right or wrong
    q = p.meta["query"]
    assert fam.implied_answer(p, ["junk", f"{q}:x+y>x1+y2>3;{q}3", f"{q}:x+y>x1+y2>5;{q}5"]) == "5"
    assert fam.implied_answer(p, ["junk"]) is None
    # a line outside the format: its last number changes; no number, no corruption
    assert fam.corrupt_step(p, ["so it is 4"], 0, random.Random(0)) != "so it is 4"
    assert fam.corrupt_step(p, ["no digits"], 0, random.Random(0)) is None
    assert fam.paraphrase_step(p, ["no digits"], 0, random.Random(0)) is None


def test_logic_phrasings_read_the_same():
    fam = get_family("logic")
    p = fam.generate(3, {"hops": 2, "distractors": 0})
    gold = p.gold_steps[0].text
    entity = p.meta["entity"]
    a, b, neg = p.meta["rules"][p.meta["structure"]["proof"][0]]
    concl = f"{entity} is {'not ' if neg else ''}{'an' if b[0] in 'aeiou' else 'a'} {b}"
    rule = f"{a} is {'not ' if neg else ''}{'an' if b[0] in 'aeiou' else 'a'} {b}"
    for line in (gold, f"Each {rule}, so {concl}.", f"Since every {rule}, {concl}.", f"since each {rule}, {concl}"):
        step = fam.check(p, line).steps[0]
        assert step.parsed and step.valid, (line, step.reason)
    assert not fam.check(p, f"Since {rule}, {concl}.").steps[0].parsed
    assert fam.implied_answer(p, ["Every x is a y, so Max is a y."]) is None


@SOME
@given(text=st.text(max_size=200), k=st.integers(0, 3), seed=st.integers(0, 9))
def test_hooks_never_raise_on_model_text(text, k, seed):
    for family in ("arith", "logic"):
        fam = get_family(family)
        p = fam.generate(seed)
        steps = (text.splitlines() or [""]) + [s.text for s in p.gold_steps]
        k = min(k, len(steps) - 1)
        for hook in (fam.corrupt_step, fam.paraphrase_step):
            out = hook(p, steps, k, random.Random(seed))
            assert out is None or isinstance(out, str)
        fam.implied_answer(p, steps)


def test_gsm8k_hooks(tmp_path):
    from tests.tasks.test_gsm8k import PROBLEMS, write
    from verinet.tasks.gsm8k import load_gsm8k

    fam = get_family("gsm8k")
    for p in load_gsm8k(write(tmp_path, PROBLEMS)):
        steps = [s.text for s in p.gold_steps]
        implied = fam.implied_answer(p, steps)
        assert implied is None or implied == fam.normalize_answer(p.answer)
        for k, line in enumerate(steps):
            bad = fam.corrupt_step(p, steps, k, random.Random(0))
            if "<<" not in line:
                assert bad is None  # free text: left to a model
                continue
            assert bad != line
            assert not fam.check(p, fam.format_chain(steps[:k] + [bad] + steps[k + 1:], p.answer)).steps[k].valid
        assert fam.paraphrase_step(p, steps, 0, random.Random(0)) is None
    p = load_gsm8k(write(tmp_path, PROBLEMS))[0]
    assert fam.implied_answer(p, ["So 2+2 = <<2+2=4>>4.", "Then we are done."]) == "4"
