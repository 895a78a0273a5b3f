"""`arith`: gold chains check, injected errors are found exactly, the checker never raises."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verinet.tasks import TaskError, get_family
from verinet.tasks.base import split_chain

fam = get_family("arith")
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
KNOBS = st.fixed_dictionaries({
    "steps": st.integers(1, 8),
    "givens": st.integers(2, 4),
    "distractors": st.integers(0, 4),
    "branching": st.sampled_from([0.0, 0.5, 1.0]),
    "modulus": st.sampled_from([2, 10, 97]),
    "ops": st.sampled_from(["+-*", "+", "*-"]),
})
MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_example_format():
    p = fam.generate(7, {"steps": 3, "distractors": 1})
    q = p.question.split(";")
    assert q[0] == "%10" and q[-1] == f"?{p.meta['query']}"
    text = fam.gold_chain(p).text
    assert text.splitlines()[-1] == f"#### {p.answer}"
    step = text.splitlines()[0]
    name = p.meta["solution"][0]
    a, op, b = p.meta["defs"][name]
    va, vb = p.meta["givens"][a], p.meta["givens"][b]
    assert step.startswith(f"{name}:{a}{op}{b}>{a}{va}{op}{b}{vb}>")


@MANY
@given(seed=SEEDS, knobs=KNOBS)
def test_gold_chain_is_fully_valid(seed, knobs):
    p = fam.generate(seed, knobs)
    check = fam.check(p, fam.gold_chain(p).text)
    assert check.first_error == -1, [s.reason for s in check.steps]
    assert check.answer_correct
    assert check.n_supported == len(p.gold_steps) == knobs["steps"]
    # the gold DAG's premises are what the checker reads back
    assert [s.premises for s in check.steps] == [s.premises for s in p.gold_steps]


@MANY
@given(seed=SEEDS, knobs=KNOBS, inj_seed=st.integers(0, 50))
def test_injected_errors_found_at_label(seed, knobs, inj_seed):
    p = fam.generate(seed, knobs)
    kinds = fam.injectable_kinds(p)
    assert {"wrong_result", "dropped_step", "answer_miscopy"} <= set(kinds)
    for kind in kinds:
        chain = fam.inject(p, kind, seed=inj_seed)
        check = fam.check(p, chain.text)
        assert check.first_error == chain.first_error, (kind, chain.text, check.steps)
        assert chain.first_error >= 0
        if kind == "answer_miscopy":
            assert chain.first_error == len(chain.steps) and not check.answer_correct


@MANY
@given(seed=SEEDS, knobs=KNOBS)
def test_parse_format_round_trip(seed, knobs):
    p = fam.generate(seed, knobs)
    gold = fam.gold_chain(p)
    parsed = fam.parse_chain(p, gold.text, chain_id="x", author="test")
    assert [s.model_dump() for s in parsed.steps] == [s.model_dump() for s in gold.steps]
    assert parsed.answer == p.answer
    assert fam.format_chain([s.text for s in parsed.steps], parsed.answer) == gold.text


@settings(max_examples=200, deadline=None)
@given(seed=SEEDS, knobs=KNOBS)
def test_generation_is_deterministic(seed, knobs):
    assert fam.generate(seed, knobs).model_dump() == fam.generate(seed, knobs).model_dump()


def test_sample_is_deterministic_and_varied():
    a = fam.sample(50, seed=3)
    assert [p.model_dump() for p in a] == [p.model_dump() for p in fam.sample(50, seed=3)]
    assert len({p.question for p in a}) > 45
    assert {p.id for p in a}.isdisjoint({p.id for p in fam.sample(50, seed=4)})


def test_distractors_are_not_needed():
    p = fam.generate(11, {"steps": 4, "distractors": 5})
    assert len(p.meta["order"]) == 9 and len(p.gold_steps) == 4
    used = {x for n in p.meta["solution"] for x in p.meta["defs"][n][::2]}
    distractors = set(p.meta["order"]) - set(p.meta["solution"])
    assert distractors and not (distractors & used)


def test_valid_but_unsupported_after_wrong_result():
    p = fam.generate(5, {"steps": 4, "branching": 0.0})
    chain = next(c for c in (fam.inject(p, "wrong_result", seed=i) for i in range(50)) if c.first_error == 0)
    check = fam.check(p, chain.text)
    k = chain.first_error
    assert not check.steps[k].valid
    later = check.steps[k + 1:]
    assert later and all(s.valid and not s.supported for s in later)


@pytest.mark.parametrize("knobs, needle", [
    ({"steps": 0}, "steps"),
    ({"steps": 20, "givens": 5, "distractors": 5}, "single letters"),
    ({"ops": "/"}, "ops"),
    ({"modulus": 1}, "modulus"),
    ({"branching": 1.5}, "branching"),
    ({"depth": 3}, "depth"),
])
def test_bad_knobs_are_named(knobs, needle):
    with pytest.raises(TaskError, match=needle):
        fam.generate(0, knobs)


def test_unknown_error_kind():
    p = fam.generate(0)
    with pytest.raises(TaskError, match="unknown error kind"):
        fam.inject(p, "typo")


ADVERSARIAL = [
    "",
    "####",
    "#### ",
    "\n\n\n",
    "x" * 100_000,
    "a:b+c>b1+c2>3;a3\n" * 10_000 + "#### 3",
    "ü:ß+ç>ß1+ç2>3;ü3\n#### ٣",
    "(.*)+[\\d]{2,}?$^|\\\n#### (.*)",
    "x:x+x>x1+x1>2;x2\n#### 2",
    "#### 99999999999999999999999",
    "x:a+b>a" + "9" * 50 + "+b1>1;x1",
    "\x00\x01\x02\n####\x00",
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_checker_never_raises_on_adversarial_text(text):
    p = fam.generate(1, {"steps": 3})
    check = fam.check(p, text)
    assert len(check.steps) == len(split_chain(text).steps)
    for s in check.steps:
        assert s.valid or s.reason


def test_self_and_forward_references_are_invalid():
    p = fam.generate(2, {"steps": 3, "givens": 2, "distractors": 0, "branching": 0.0})
    lines = fam.gold_chain(p).text.splitlines()
    # step 1 first: it reads step 0's variable, which is not established yet
    check = fam.check(p, "\n".join([lines[1], lines[0], lines[2], lines[3]]))
    assert check.first_error == 0
    assert "not established" in check.steps[0].reason
    # a step that uses its own variable as an operand
    name = p.meta["solution"][0]
    g = next(iter(p.meta["givens"]))
    check = fam.check(p, f"{name}:{name}+{g}>{name}1+{g}1>2;{name}2")
    assert not check.steps[0].valid


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_checker_never_raises_on_random_text(text):
    p = fam.generate(3)
    check = fam.check(p, text)
    assert check.first_error >= -1


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_checker_never_raises_on_mutated_gold(data):
    p = fam.generate(data.draw(SEEDS))
    text = fam.gold_chain(p).text
    i = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(alphabet="0123456789abcxyz+-*:;>#\n ", max_size=5))
    mutated = text[:i] + junk + text[i + len(junk):]
    check = fam.check(p, mutated)
    if mutated == text:
        assert check.first_error == -1
