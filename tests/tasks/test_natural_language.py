"""`arith_nl` and `logic_nl`: word problems whose free-text chains are checked exactly.

Gold chains check; every injected error is found at its label; the checker reads other wordings
(premise links, unsupported premises, wrong arithmetic, restatements) and never raises."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verinet.tasks import TaskError, get_family
from verinet.tasks.spec import TaskSpec

arith = get_family("arith_nl")
logic = get_family("logic_nl")
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
ARITH_KNOBS = st.fixed_dictionaries({
    "steps": st.integers(1, 6), "givens": st.integers(2, 4), "distractors": st.integers(0, 4),
    "branching": st.sampled_from([0.0, 0.5, 1.0]), "ops": st.sampled_from(["+-*", "+", "*-", "-"]),
})
LOGIC_KNOBS = st.fixed_dictionaries({
    "hops": st.integers(1, 5), "distractors": st.integers(0, 3),
    "vocabulary": st.sampled_from(["fictional", "real", "counterfactual"]),
})
MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("fam,knobs", [(arith, ARITH_KNOBS), (logic, LOGIC_KNOBS)], ids=["arith_nl", "logic_nl"])
def test_gold_and_injected_chains(fam, knobs):
    @MANY
    @given(seed=SEEDS, k=knobs, inj_seed=st.integers(0, 20))
    def run(seed, k, inj_seed):
        p = fam.generate(seed, k)
        check = fam.check(p, fam.gold_chain(p).text)
        assert check.first_error == -1, [s.reason for s in check.steps]
        assert check.answer_correct
        assert [s.premises for s in check.steps] == [s.premises for s in p.gold_steps]
        assert fam.implied_answer(p, [s.text for s in p.gold_steps]) == fam.normalize_answer(p.answer)
        for kind in fam.injectable_kinds(p):
            chain = fam.inject(p, kind, seed=inj_seed)
            got = fam.check(p, chain.text)
            assert got.first_error == chain.first_error >= 0, (kind, chain.text, [s.reason for s in got.steps])
    run()


def test_arith_word_problem_and_sentences():
    p = arith.generate(3, {"steps": 3, "distractors": 1})
    assert "%" not in p.question and p.question.endswith("have?")
    assert p.meta["query"] in p.question.split("How many")[-1]
    line = arith.gold_chain(p).text.splitlines()[0]
    name = p.meta["solution"][0]
    a, op, b = p.meta["defs"][name]
    va, vb = p.meta["givens"][a], p.meta["givens"][b]
    assert line.startswith(f"{a} has {va} {p.meta['thing']} and {b} has {vb}")
    assert f"so {name} has {va} {'×' if op == '*' else op} {vb} = " in line
    assert all(v >= 0 for v in p.meta["values"].values())  # subtraction never goes below zero


def _gold_free_text(p):
    """The gold solution written as a model might: other words, '*' for times, no names of operands."""
    lines = []
    for name in p.meta["solution"]:
        a, op, b = p.meta["defs"][name]
        va, vb, r = (p.meta["values"][x] for x in (a, b, name))
        lines.append(f"Next, {name} gets {va} {op} {vb} = {r}.")
    return lines


def test_arith_reads_other_wordings_and_links_premises():
    p = arith.generate(11, {"steps": 3, "distractors": 0, "branching": 0.0, "ops": "+"})
    steps = ["First let us see what we know."] + _gold_free_text(p)
    c = arith.check(p, "\n".join(steps) + f"\n#### {p.answer}")
    assert c.first_error == -1 and c.answer_correct
    assert not c.steps[0].checked  # no equation: valid, unchecked
    assert c.steps[2].premises == [1] and c.steps[3].premises == [2]  # links to earlier results
    assert c.answer.premises == [3]


def test_arith_unsupported_premise_is_never_no_premise():
    p = arith.generate(11, {"steps": 3, "distractors": 0, "branching": 0.0, "ops": "+"})
    steps = _gold_free_text(p)
    used = max(p.meta["values"].values()) + 1000  # in neither the question nor an earlier step
    steps[1] = f"Then {p.meta['solution'][1]} gets {used} + 1 = {used + 1}."
    c = arith.check(p, "\n".join(steps))
    assert c.first_error == 1
    assert c.steps[1].reason.startswith(f"unsupported premise: {used} is neither")


def test_arith_wrong_arithmetic_then_later_steps_judged_on_what_the_chain_says():
    p = arith.generate(11, {"steps": 3, "distractors": 0, "branching": 0.0, "ops": "+"})
    steps = _gold_free_text(p)
    name = p.meta["solution"][0]
    a, _, b = p.meta["defs"][name]
    va, vb, r = (p.meta["values"][x] for x in (a, b, name))
    steps[0] = f"{name} has {va} + {vb} = {r + 1}."
    later = p.meta["solution"][1]
    a2, _, b2 = p.meta["defs"][later]
    v = {x: p.meta["values"][x] for x in p.meta["values"]}
    v[name] = r + 1
    steps[1] = f"{later} has {v[a2]} + {v[b2]} = {v[a2] + v[b2]}."
    c = arith.check(p, "\n".join(steps))
    assert [s.valid for s in c.steps[:2]] == [False, True]
    assert "is wrong" in c.steps[0].reason and c.steps[1].premises == [0]


def test_arith_claim_about_uncomputed_person_is_unsupported():
    p = arith.generate(5, {"steps": 2, "distractors": 0})
    query = p.meta["query"]
    c = arith.check(p, f"{query} has 12 {p.meta['thing']}.\n#### 12")
    assert c.first_error == 0 and "unsupported premise" in c.steps[0].reason


def test_logic_reads_other_wordings():
    p = logic.generate(4, {"hops": 2, "distractors": 1})
    entity, fact = p.meta["entity"], p.meta["fact"]
    rules = [tuple(r) for r in p.meta["rules"]]
    structure = p.meta["structure"]
    (a1, b1, n1), (a2, b2, n2) = (rules[i] for i in structure["proof"])
    assert a1 == fact and not n1
    neg = "not " if n2 else ""
    text = (f"We know {entity} is a {fact}.\n"
            f"Since all {a1}s are {b1}s, {entity} is a {b1}.\n"
            f"Each {a2} is {neg}a {b2}. Therefore {entity} is {neg}a {b2}.\n#### {'No' if n2 else 'Yes'}")
    c = logic.check(p, text)
    assert c.first_error == -1 and c.answer_correct, [s.reason for s in c.steps]
    assert c.steps[2].premises == [1]
    # the conclusion without the step that establishes its premise: unsupported, never "no premise"
    c = logic.check(p, text.split("\n", 2)[0] + "\n" + text.split("\n")[2])
    assert c.first_error == 1 and c.steps[1].reason.startswith("unsupported premise")


def test_family_edits_keep_checkability():
    rng = random.Random(0)
    for fam, knobs in ((arith, {"steps": 3}), (logic, {"hops": 3})):
        for p in fam.sample(30, seed=5, params=knobs):
            steps = [s.text for s in p.gold_steps]
            for k in range(len(steps)):
                para = fam.paraphrase_step(p, steps, k, rng)
                assert para != steps[k]
                assert fam.check(p, "\n".join(steps[:k] + [para] + steps[k + 1:] + [f"#### {p.answer}"])).first_error == -1
                bad = fam.corrupt_step(p, steps, k, rng)
                assert fam.check(p, "\n".join(steps[:k] + [bad])).first_error == k


@pytest.mark.parametrize("fam", [arith, logic], ids=["arith_nl", "logic_nl"])
@given(text=st.text(max_size=400))
@settings(max_examples=200, deadline=None)
def test_checker_never_raises(fam, text):
    p = fam.generate(1)
    c = fam.check(p, text)
    assert c.first_error >= -1


def test_bad_knobs_and_task_spec():
    with pytest.raises(TaskError, match="ops"):
        arith.knobs({"ops": "/"})
    with pytest.raises(TaskError, match="names"):
        arith.knobs({"steps": 12, "givens": 8, "distractors": 8})
    assert TaskSpec(family="arith_nl", n=2, params={"steps": 2}).family == "arith_nl"


def test_committed_gsm8k_file_is_reproducible():
    """configs/data/arith-nl-gsm8k.jsonl: arith_nl problems in GSM8K format (regenerate with this recipe)."""
    import json
    from pathlib import Path

    from verinet.tasks.arith_nl import gsm8k_record
    from verinet.tasks.gsm8k import load_gsm8k

    path = Path(__file__).resolve().parents[2] / "configs" / "data" / "arith-nl-gsm8k.jsonl"
    want = [json.dumps(gsm8k_record(p)) for p in arith.sample(40, seed=8, params={"steps": 3, "distractors": 1})]
    assert path.read_text().splitlines() == want
    gsm = get_family("gsm8k")
    for p in load_gsm8k(path):
        assert p.meta["gold_first_error"] == -1  # every annotation checks
        assert gsm.check(p, gsm.inject(p, "wrong_result").text).first_error >= 0


def test_free_form_answers_are_read_flexibly():
    """A real model's forced answer is free text ("1: 4 books"): the number or truth word it states is
    its answer, as lm-evaluation-harness's flexible extract reads GSM8K answers."""
    for family in ("arith_nl", "gsm8k"):
        norm = get_family(family).normalize_answer
        assert [norm(a) for a in ("1: 4 books", "4", "$1,000.50", "Step 2: 20 pencils.", "The answer is 12.")] == \
            ["4", "4", "1000.5", "20", "12"]
        assert norm("no number here") == "no number here" and norm(None) is None
    norm = get_family("logic_nl").normalize_answer
    assert [norm(a) for a in ("1: True.", "The answer is no", "False", "yes")] == ["True", "False", "False", "True"]
    assert norm("1. 1.") == "1. 1."
