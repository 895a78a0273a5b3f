"""`logic`: gold chains check, injected errors are found exactly, vocabularies share structure,
the checker never raises."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verinet.schema import Problem
from verinet.tasks import TaskError, get_family
from verinet.tasks.base import split_chain
from verinet.tasks.logic import MAX_HOPS, VOCABULARIES, LogicFamily, rule_is_true

fam = get_family("logic")
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
STRUCTURE = st.one_of(
    st.fixed_dictionaries({
        "hops": st.integers(1, MAX_HOPS),
        "distractors": st.integers(0, 8),
        "p_false": st.sampled_from([0.0, 0.5, 1.0]),
    }),
    st.fixed_dictionaries({
        "hops": st.integers(1, MAX_HOPS),
        "distractors": st.integers(0, 8),
        "p_false": st.just(0.0),
        "negation": st.just(False),
    }),
)
KNOBS = st.builds(lambda s, v: {**s, "vocabulary": v}, STRUCTURE, st.sampled_from(VOCABULARIES))
MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_example_format():
    assert isinstance(fam, LogicFamily) and fam.name == "logic"
    p = fam.generate(7, {"hops": 3, "distractors": 2, "p_false": 1.0})
    assert p.question == (
        "Every zumpus is not a plumpus. Every zumpus is not a lempus. Every grimpus is a welpus. "
        "Every welpus is a zumpus. Every kumpus is a snorpus. Sam is a grimpus. "
        "True or false: Sam is a lempus."
    )
    assert fam.gold_chain(p).text == (
        "Every grimpus is a welpus, so Sam is a welpus.\n"
        "Every welpus is a zumpus, so Sam is a zumpus.\n"
        "Every zumpus is not a lempus, so Sam is not a lempus.\n"
        "#### False"
    )
    assert [s.premises for s in p.gold_steps] == [[], [0], [1]]
    assert [s.value for s in p.gold_steps] == ["Sam is a welpus", "Sam is a zumpus", "Sam is not a lempus"]
    assert p.answer == "False" and p.meta["query"] == "lempus" and p.meta["fact"] == "grimpus"


def _hand_problem() -> Problem:
    """The brief's example, written by hand: the checker needs only meta's words."""
    rules = [["wumpus", "yumpus", False], ["yumpus", "zumpus", False], ["dumpus", "rompus", False],
             ["zumpus", "gorpus", True]]
    return Problem(id="logic-hand-0", family="logic", answer="False", question="(see meta)",
                   meta={"entity": "Max", "fact": "wumpus", "rules": rules, "query": "gorpus"})


def test_hand_written_example_and_reasons():
    p = _hand_problem()
    gold = ("Every wumpus is a yumpus, so Max is a yumpus.\n"
            "Every yumpus is a zumpus, so Max is a zumpus.\n"
            "Every zumpus is not a gorpus, so Max is not a gorpus.\n#### False")
    check = fam.check(p, gold)
    assert check.first_error == -1 and check.answer_correct and check.n_supported == 3
    assert check.answer.premises == [2]
    # tolerant reading: case of the first letter, "an", whitespace, a missing period, "false."
    loose = ("  every wumpus is an yumpus ,  so max is a yumpus\n"
             "EVERY yumpus is a zumpus, so Max is a zumpus.\n"
             "Every zumpus is not an gorpus, so Max is not a gorpus\n####  false.")
    check = fam.check(p, loose)
    assert check.first_error == -1 and check.answer_correct
    reasons = {
        "Every dumpus is a yumpus, so Max is a yumpus.": "rule not in the problem",
        "Every wumpus is a yumpus, so Sam is a yumpus.": "about 'Sam'",
        "Every wumpus is a yumpus, so Max is a zumpus.": "the rule gives 'Max is a yumpus'",
        "Every wumpus is a yumpus, so Max is not a yumpus.": "the rule gives",
        "Every dumpus is a rompus, so Max is a rompus.": "premise 'Max is a dumpus' not established",
        "Max is a yumpus.": "cannot parse",
    }
    for line, needle in reasons.items():
        step = fam.check(p, line + "\n#### True").steps[0]
        assert not step.valid and needle in step.reason, (line, step.reason)
    assert "not True or False" in fam.check(p, gold.replace("#### False", "#### maybe")).answer.reason
    assert "no step concludes" in fam.check(p, gold.replace("#### False", "#### True")).answer.reason
    assert "no answer line" in fam.check(p, gold.rsplit("\n", 1)[0]).answer.reason


@MANY
@given(seed=SEEDS, knobs=KNOBS)
def test_gold_chain_is_fully_valid(seed, knobs):
    p = fam.generate(seed, knobs)
    check = fam.check(p, fam.gold_chain(p).text)
    assert check.first_error == -1, [s.reason for s in check.steps]
    assert check.answer_correct and check.answer.supported
    assert check.n_supported == len(p.gold_steps) == knobs["hops"]
    assert [s.premises for s in check.steps] == [s.premises for s in p.gold_steps]
    assert len(p.meta["rules"]) == knobs["hops"] + knobs["distractors"]
    if not knobs.get("negation", True):
        assert p.answer == "True" and not any(neg for _, _, neg in p.meta["rules"])


@MANY
@given(seed=SEEDS, knobs=KNOBS, inj_seed=st.integers(0, 50))
def test_injected_errors_found_at_label(seed, knobs, inj_seed):
    p = fam.generate(seed, knobs)
    kinds = fam.injectable_kinds(p)
    assert {"wrong_result", "dropped_step", "answer_miscopy"} <= set(kinds)
    if knobs["hops"] >= 2:
        assert "wrong_premise" in kinds
    for kind in kinds:
        chain = fam.inject(p, kind, seed=inj_seed)
        check = fam.check(p, chain.text)
        assert check.first_error == chain.first_error >= 0, (kind, chain.text, check.steps)
        bad = check.answer if chain.first_error == len(check.steps) else check.steps[chain.first_error]
        assert not bad.valid and bad.reason
        if kind == "answer_miscopy":
            assert chain.first_error == len(chain.steps) and not check.answer_correct


def test_wrong_premise_unsupported_without_other_rules():
    p = fam.generate(0, {"hops": 1, "distractors": 0})
    assert fam.injectable_kinds(p) == ["wrong_result", "dropped_step", "answer_miscopy"]


@MANY
@given(seed=SEEDS, knobs=KNOBS)
def test_parse_format_round_trip(seed, knobs):
    p = fam.generate(seed, knobs)
    gold = fam.gold_chain(p)
    parsed = fam.parse_chain(p, gold.text, chain_id="x", author="test")
    assert [s.model_dump() for s in parsed.steps] == [s.model_dump() for s in gold.steps]
    assert parsed.answer == p.answer
    assert fam.format_chain([s.text for s in parsed.steps], parsed.answer) == gold.text


@settings(max_examples=300, deadline=None)
@given(seed=SEEDS, knobs=KNOBS)
def test_generation_is_deterministic(seed, knobs):
    assert fam.generate(seed, knobs).model_dump() == fam.generate(seed, knobs).model_dump()


@MANY
@given(seed=SEEDS, knobs=STRUCTURE)
def test_vocabularies_share_the_proof_structure(seed, knobs):
    ps = [fam.generate(seed, {**knobs, "vocabulary": v}) for v in VOCABULARIES]
    f, r, c = ps
    for p in (r, c):
        assert p.meta["structure"] == f.meta["structure"]
        assert (p.answer, p.meta["entity"]) == (f.answer, f.meta["entity"])
        assert [s.premises for s in p.gold_steps] == [s.premises for s in f.gold_steps]
        assert [neg for *_, neg in p.meta["rules"]] == [neg for *_, neg in f.meta["rules"]]
    assert len({p.question for p in ps}) == 3
    # the words really are a renaming of the shared structure
    for p in ps:
        s = p.meta["structure"]
        words: dict[int, str] = {}
        for (a, b, neg), (wa, wb, wneg) in zip(s["rules"], p.meta["rules"], strict=True):
            assert neg == wneg and words.setdefault(a, wa) == wa and words.setdefault(b, wb) == wb
        assert len(set(words.values())) == len(words) == s["n_concepts"]
        assert (words[s["fact"]], words[s["query"]]) == (p.meta["fact"], p.meta["query"])


@MANY
@given(seed=SEEDS, knobs=STRUCTURE, vocabulary=st.sampled_from(["real", "counterfactual"]))
def test_real_rules_are_true_and_counterfactual_rules_false(seed, knobs, vocabulary):
    p = fam.generate(seed, {**knobs, "vocabulary": vocabulary})
    truth = [rule_is_true(a, b, neg) for a, b, neg in p.meta["rules"]]
    assert all(truth) if vocabulary == "real" else not any(truth), (p.meta["rules"], truth)
    if vocabulary == "real":
        # the conclusion about the query is true as well, and the path climbs parent edges
        assert rule_is_true(p.meta["fact"], p.meta["query"], p.answer == "False")


def test_sample_is_deterministic_and_varied():
    a = fam.sample(50, seed=3)
    assert [p.model_dump() for p in a] == [p.model_dump() for p in fam.sample(50, seed=3)]
    assert len({p.question for p in a}) > 45
    assert {p.answer for p in a} == {"True", "False"}


@pytest.mark.parametrize("knobs, needle", [
    ({"hops": 0}, "hops"),
    ({"hops": MAX_HOPS + 1}, f"hops: Input should be less than or equal to {MAX_HOPS}"),
    ({"distractors": -1}, "distractors"),
    ({"distractors": 9}, "distractors"),
    ({"vocabulary": "klingon"}, "vocabulary"),
    ({"p_false": 1.5}, "p_false"),
    ({"negation": False}, "p_false=0.5 needs negation=True"),
    ({"negation": False, "p_false": 0.1}, "negation"),
    ({"depth": 3}, "depth"),
])
def test_bad_knobs_are_named(knobs, needle):
    with pytest.raises(TaskError, match=needle.replace("(", r"\(")):
        fam.generate(0, knobs)


def test_unknown_error_kind():
    with pytest.raises(TaskError, match="unknown error kind"):
        fam.inject(fam.generate(0), "typo")


ADVERSARIAL = [
    "",
    "####",
    "#### ",
    "\n\n\n",
    "x" * 100_000,
    "Every wumpus is a yumpus, so Max is a yumpus.\n" * 10_000 + "#### True",
    "Every " + "a " * 5_000 + "is a b, so Max is a b.",
    "Évery ümpus is a ßumpus, so Mäx is a ßumpus.\n#### Trüe",
    "(.*)+[\\d]{2,}?$^|\\\nEvery (.*) is a [a-z]+, so .* is a \\1.\n#### (.*)",
    "#### True False",
    "\x00\x01\x02\n####\x00",
    "Every\u2028wumpus is a yumpus, so Max is a yumpus.\n#### True",
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_checker_never_raises_on_adversarial_text(text):
    p = fam.generate(1, {"hops": 3})
    check = fam.check(p, text)
    assert len(check.steps) == len(split_chain(text).steps)
    for s in [*check.steps, check.answer]:
        assert s.valid or s.reason


def test_forward_and_self_references_are_invalid():
    p = fam.generate(2, {"hops": 3, "distractors": 0, "p_false": 0.0})
    lines = fam.gold_chain(p).text.splitlines()
    # step 1 first: it needs step 0's conclusion, which only comes later
    check = fam.check(p, "\n".join([lines[1], lines[0], lines[2], lines[3]]))
    assert check.first_error == 0 and "not established" in check.steps[0].reason
    # a step whose premise is its own conclusion
    a, b, _ = p.meta["rules"][p.meta["structure"]["proof"][1]]
    check = fam.check(p, f"Every {b} is a {b}, so {p.meta['entity']} is a {b}.")
    assert not check.steps[0].valid and "rule not in the problem" in check.steps[0].reason
    # local validity: after an invalid step, a correct application of a real rule is valid, unsupported
    check = fam.check(p, "\n".join(lines[1:]))
    assert [(s.valid, s.supported) for s in check.steps] == [(False, False), (True, False)]
    assert check.answer.valid and not check.answer.supported


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_checker_never_raises_on_random_text(text):
    check = fam.check(fam.generate(3), text)
    assert check.first_error >= -1


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_rule_chains_never_raise_and_supported_steps_are_sound(data):
    """Well-formed steps over the problem's own words, in any order and polarity."""
    p = fam.generate(data.draw(SEEDS), data.draw(KNOBS))
    entity, rules = p.meta["entity"], p.meta["rules"]
    words = sorted({w for a, b, _ in rules for w in (a, b)})
    word, pick = st.sampled_from(words), st.sampled_from([tuple(r) for r in rules])
    drawn = data.draw(st.lists(st.one_of(
        st.tuples(word, st.booleans(), word, st.booleans(), word),  # anything
        st.builds(lambda r: (r[0], r[2], r[1], r[2], r[1]), pick),  # a real rule applied correctly
    ), max_size=8))
    text = "\n".join(f"Every {a} is {'not ' * n1}a {b}, so {entity} is {'not ' * n2}a {b2}."
                     for a, n1, b, n2, b2 in drawn)
    check = fam.check(p, text + "\n#### " + data.draw(st.sampled_from(["True", "False"])))
    assert len(check.steps) == len(drawn)
    # what the rules really entail about the entity
    known, changed = {p.meta["fact"]}, True
    while changed:
        new = {b for a, b, neg in rules if a in known and not neg} - known
        known |= new
        changed = bool(new)
    denied = {b for a, b, neg in rules if a in known and neg}
    for s, (_, _, b, n2, _) in zip(check.steps, drawn, strict=True):
        assert s.parsed and (s.valid or s.reason)
        assert all(q < s.index for q in s.premises)
        if s.supported:
            assert b in (denied if n2 else known), (s.text, s.reason)
    if check.answer.supported:
        assert (p.meta["query"] in known) == (check.answer.value == "True")
