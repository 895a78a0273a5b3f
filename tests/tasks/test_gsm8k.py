"""`gsm8k`: loading GSM8K-format JSONL, gold chains check, injected errors are found exactly,
the checker never raises."""

import json
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verinet.schema import Problem, Step
from verinet.tasks import InjectionUnsupported, TaskError, get_family
from verinet.tasks.gsm8k import Gsm8kLineError, LoadResult, canon_number, evaluate, iter_gsm8k, load_gsm8k

fam = get_family("gsm8k")
ROBUST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PROBLEMS = [
    {"question": "A baker makes 24 muffins in the morning and twice as many in the afternoon. "
                 "How many muffins does he make in total?",
     "answer": "In the afternoon he makes 24*2 = <<24*2=48>>48 muffins.\n"
               "In total he makes 24+48 = <<24+48=72>>72 muffins.\n#### 72"},
    {"question": "A farmer has 3 fields with 250 plants each. He plants 450 more. "
                 "How many plants does he have?",
     "answer": "The fields hold 3*250 = <<3*250=750>>750 plants.\n"
               "After planting more he has 750+450 = <<750+450=1200>>1,200 plants.\n#### 1,200"},
    {"question": "Tom buys 3 shirts at $12 each and a hat for $9. He pays with a $50 bill. "
                 "How much change does he get?",
     "answer": "The shirts cost 3*$12 = $<<3*12=36>>36.\n"
               "With the hat he spends $36+$9 = $<<36+9=45>>45.\n"
               "His change is $50-$45 = $<<50-45=5>>5.\n#### $5"},
    {"question": "Three friends split a $10 bill equally. How much does each pay?",
     "answer": "Each friend pays 10/3 = $<<10/3=3.33>>3.33.\n#### 3.33"},
    {"question": "Lily reads 12 pages a day for a week and then 20 more pages. How many pages does she read?",
     "answer": "A week has 7 days.\nIn a week she reads 12*7 = <<12*7=84>>84 pages.\n"
               "In total she reads 84+20 = <<84+20=104>>104 pages.\n#### 104"},
    {"question": "Sam has 5 red balls and 3 blue balls. How many balls does he have?",
     "answer": "Sam has 5 red balls and 3 blue balls.\nSo he has 8 balls in total.\n#### 8"},
    {"id": "car-7",
     "question": "A car drives at 60 miles per hour for 2 hours, then at 45 miles per hour for 3 hours. "
                 "How far does it go?",
     "answer": "First it drives 60*2 = <<60*2=120>>120 miles, then 45*3 = <<45*3=135>>135 miles.\n"
               "Altogether it drives 120+135 = <<120+135=255>>255 miles.\n#### 255"},
    {"question": "Ben has 4 bags with 6 apples each. He eats 5 apples. How many are left?",
     "answer": "Ben has 4*6 = 24 apples.\nAfter eating 5 he has 24-5 = 19 apples left.\n#### 19"},
]
_PROBLEM = Problem(id="gsm8k-x", family="gsm8k", question="Q?", answer="72",
                   gold_steps=[Step(index=0, text="<<48+24=72>>72", value="72")])


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


@pytest.fixture
def problems(tmp_path):
    return load_gsm8k(write(tmp_path, PROBLEMS))


def test_load_fields(problems, tmp_path):
    assert [p.id for p in problems] == [f"gsm8k-{n}" for n in range(1, 7)] + ["car-7", "gsm8k-8"]
    assert [p.answer for p in problems] == ["72", "1200", "5", "3.33", "104", "8", "255", "19"]
    p = problems[0]
    assert p.family == "gsm8k" and p.seed is None and p.question.startswith("A baker")
    assert p.params == {"path": str(tmp_path / "data.jsonl"), "line": 1}
    assert [s.text for s in p.gold_steps] == PROBLEMS[0]["answer"].splitlines()[:2]
    assert [s.value for s in p.gold_steps] == ["48", "72"]
    assert problems[5].gold_steps[1].value is None
    assert len(load_gsm8k(write(tmp_path, PROBLEMS), limit=3)) == 3


def test_gold_chains_fully_valid(problems):
    for p in problems:
        chain = fam.gold_chain(p)
        check = fam.check(p, chain.text)
        assert check.first_error == -1, [s.reason for s in check.steps]
        assert check.answer_correct and check.answer.valid
        assert [s.premises for s in check.steps] == [s.premises for s in p.gold_steps]
        assert p.meta["gold_first_error"] == -1
    # free-text steps are valid but unchecked; so is an answer with no step result to copy
    check = fam.check(problems[5], fam.gold_chain(problems[5]).text)
    assert [s.checked for s in check.steps] == [False, False] and not check.answer.checked
    assert check.steps[0].reason == "no arithmetic to check"


def test_premise_dag(problems):
    assert [s.premises for s in problems[0].gold_steps] == [[], [0]]
    assert [s.premises for s in problems[2].gold_steps] == [[], [0], [1]]  # $36 -> step 0, $45 -> step 1
    assert [s.premises for s in problems[4].gold_steps] == [[], [], [1]]  # 7 and 12 come from the question
    assert [s.premises for s in problems[5].gold_steps] == [[], [0]]  # no arithmetic: linear fallback
    assert [s.premises for s in problems[6].gold_steps] == [[], [0]]  # both 120 and 135 come from step 0
    assert [s.premises for s in problems[7].gold_steps] == [[], [0]]  # inline equations
    check = fam.check(problems[0], fam.gold_chain(problems[0]).text)
    assert check.answer.premises == [1] and check.n_supported == 2


def test_answer_forms_and_normalize(problems):
    p = problems[1]
    steps = "\n".join(s.text for s in p.gold_steps)
    for ans in ("1,200", "1200", "$1,200.00", "1200.0"):
        check = fam.check(p, f"{steps}\n#### {ans}")
        assert check.first_error == -1 and check.answer_correct, ans
    check = fam.check(p, f"{steps}\n#### 1300")
    assert check.first_error == 2 and not check.answer_correct
    assert "differs from step 1" in check.answer.reason
    assert not fam.check(p, steps).answer.parsed  # no '#### N' line
    for same in ("1,000", "$1000", "1000.0", "1000", " 1000 ", "+1000", "001000.000"):
        assert fam.normalize_answer(same) == "1000", same
    assert [canon_number(x) for x in (".5", "0.50", "-3", "-0", "-0.0", "1e3", "", "$", "abc")] == [
        "0.5", "0.5", "-3", "0", "0", None, None, None, None]
    assert fam.normalize_answer("seventy") == "seventy" and fam.normalize_answer(None) is None


def test_step_checks(problems):
    p = problems[0]
    cases = {
        "He makes 24*2 = <<24*2=49>>49 muffins.": "= 48, not 49",
        "He makes <<24*2=48>>48 and <<48+1=50>>50.": "= 49, not 50",
        "He has 3 + 4 = 8 apples.": "= 7, not 8",
        "<<2+2=four>>": "cannot evaluate",
        "<<2+2>>": "cannot evaluate",
    }
    for line, reason in cases.items():
        step = fam.check(p, line).steps[0]
        assert step.parsed and not step.valid and reason in step.reason, (line, step.reason)
    assert fam.check(p, "1,000 * 2 = 2,000 and 3 × 4 = 12").steps[0].value == "12"
    ok = fam.check(p, "10/4 = <<10/4=2.5>>2.5 and 2**3 = <<2**3=8>>8 and 7//2 = <<7//2=3>>3")
    assert ok.steps[0].valid and ok.steps[0].value == "3"
    assert fam.check(p, "<<1/3=0.3333333>>").steps[0].valid  # relative tolerance
    for free in ("3/4 = 75% of the cake", "Step 1 = reading", "It costs $5 - a bargain = 2 times cheaper"):
        assert not fam.check(p, free).steps[0].checked, free
    assert fam.check(p, "<<2/3=0.67>>").steps[0].valid and not fam.check(p, "<<2/3=0.6>>").steps[0].valid
    assert not fam.check(p, "<<2/3=1>>").steps[0].valid  # no rounding for whole-number results
    assert evaluate("(1+2)*3 - 4/8") == Fraction(17, 2)
    for bad in ("9**9**9", "2**0.5", "1/0", "x+1", "__import__('os')", "1" * 300, "()", "[1]",
                "1 if 1 else 2"):
        with pytest.raises(ValueError):
            evaluate(bad)


def test_malformed_lines(tmp_path):
    lines = [PROBLEMS[0], "{not json", "", {"question": "Q?"}, {"question": "Q?", "answer": "It is 4."},
             "[1, 2]", {"question": "Q?", "answer": "#### many"}, {"question": " ", "answer": "#### 1"},
             {"question": "Q?", "answer": 7}, PROBLEMS[1], {**PROBLEMS[2], "id": "gsm8k-1"}]
    path = write(tmp_path, lines)
    res = load_gsm8k(path, errors="collect")
    assert isinstance(res, LoadResult)
    problems, errors = res
    assert [p.id for p in problems] == ["gsm8k-1", "gsm8k-10"]
    assert [e.line for e in errors] == [2, 4, 5, 6, 7, 8, 9, 11]
    whats = [e.what for e in errors]
    assert "not valid JSON" in whats[0] and "'answer'" in whats[1] and "####" in whats[2]
    assert "JSON object" in whats[3] and "not a number" in whats[4] and "'question'" in whats[5]
    assert "must be a string" in whats[6] and "duplicate id" in whats[7]
    assert all(str(path) in str(e) and f"line {e.line}" in str(e) for e in errors)
    with pytest.raises(TaskError, match="line 2: not valid JSON"):
        load_gsm8k(path)
    items = list(iter_gsm8k(path, limit=1))
    assert [type(x).__name__ for x in items] == ["Problem"]
    assert isinstance(list(iter_gsm8k(path))[1], Gsm8kLineError)


def test_missing_file_and_no_generation(tmp_path):
    with pytest.raises(TaskError, match="nope.jsonl.*not found.*JSONL"):
        load_gsm8k(tmp_path / "nope.jsonl")
    with pytest.raises(TaskError, match="not a file"):
        load_gsm8k(tmp_path)
    with pytest.raises(TaskError, match="errors must be"):
        load_gsm8k(write(tmp_path, PROBLEMS), errors="ignore")
    for call in (lambda: fam.generate(0), lambda: fam.sample(3), lambda: fam.generate(0, {"x": 1})):
        with pytest.raises(TaskError, match="use load_gsm8k"):
            call()


def test_injection(problems):
    assert fam.error_kinds == ("wrong_result", "answer_miscopy")
    seen = set()
    for p in problems:
        for kind in fam.injectable_kinds(p):
            for seed in range(5):
                chain = fam.inject(p, kind, seed=seed)
                check = fam.check(p, chain.text)
                assert check.first_error == chain.first_error >= 0, (kind, chain.text, check.steps)
                assert chain.error_kind == kind and chain.author == f"inject:{kind}"
                if kind == "answer_miscopy":
                    assert chain.first_error == len(chain.steps) and not check.answer_correct
                else:
                    k = chain.first_error
                    bad = chain.steps[k].text
                    v = chain.steps[k].value
                    assert bad != p.gold_steps[k].text and f"={v}>>{v}" in bad  # shown number changed too
                seen.add((p.id, kind))
    assert ("gsm8k-1", "wrong_result") in seen and ("gsm8k-3", "answer_miscopy") in seen
    assert ("gsm8k-8", "answer_miscopy") in seen  # inline equations give step results
    chain = fam.inject(problems[0], "wrong_result", seed=1)
    assert chain.text.count("<<") == 2 and chain.text.endswith("#### 72")
    no_ann = problems[5]
    for kind in ("wrong_result", "answer_miscopy"):
        with pytest.raises(InjectionUnsupported):
            fam.inject(no_ann, kind)
    with pytest.raises(InjectionUnsupported):
        fam.inject(problems[7], "wrong_result")
    for kind in ("dropped_step", "wrong_premise", "nonsense"):
        with pytest.raises(TaskError, match="unknown error kind"):
            fam.inject(problems[0], kind)


ADVERSARIAL = [
    "", "####", "#### ", "\n\n\n", "<<9**9**9=1>>", "<<1/0=1>>", "<<__import__('os')=1>>", "<<1+1=2",
    "<<1+1=2>> <<", "<<<<1+1=2>>>>", "<<1<<2=3>>>>", "<<10**10000=1>>", "<<(2**10)**10**10=1>>",
    "<<" + "(" * 150 + "1" + ")" * 150 + "=1>>", "<<" + "-" * 190 + "1=1>>", "<<1=" + "9" * 5000 + ">>",
    "<<" + "9" * 199 + "*" + "9" * 199 + "=1>>", "x = " + "9" * 10000, "1" + "+1" * 5000 + " = 5001",
    "١+١=٢ and ２+２=４", "<<١+١=٢>>", "<<1e999=1>>", "<<1.5e308*10=1>>", "<<1\x00=1>>",
    "<<'a'*3=1>>",
    "<<lambda: 1=1>>", "<<[1]*9=1>>", "<<True+1=2>>", "<<1j=1>>", "<<2+2=4>>4\n#### " + "9" * 10000,
    "#### ١٢", "#### -", "#### 1e5", "5 − 3 = 2 × 1 ÷ 1 = 2", "3 = = 3", "=5", "1+=2", "$$$ = $",
]


def test_adversarial_text_never_raises(problems):
    p = problems[0]
    long = "\n".join(f"step {i}: {i}+1 = <<{i}+1={i + 1}>>{i + 1}" for i in range(10_000))
    for text in ADVERSARIAL + [long]:
        check = fam.check(p, text)
        assert -1 <= check.first_error <= len(check.steps)
        assert all(s.parsed for s in check.steps)
        assert not any("internal checker error" in (s.reason or "") for s in check.steps), text[:80]
        fam.parse_chain(p, text, chain_id="c", author="test")
    check = fam.check(p, "<<9**9**9=1>>\n<<1/0=1>>\n<<__import__('os')=1>>\n<<1+1=2")
    assert [s.valid for s in check.steps] == [False] * 4 and check.first_error == 0
    assert all("cannot evaluate" in s.reason for s in check.steps)


ANNOTATION = st.builds(
    lambda expr, res, tail: f"<<{expr}={res}>>{tail}",
    st.text(alphabet="0123456789+-*/%().=<> ,$e_xj*", max_size=40),
    st.one_of(st.integers(-10**6, 10**6).map(str), st.text(max_size=10)),
    st.text(alphabet="0123456789 .,$", max_size=8),
)
LINE = st.lists(st.one_of(ANNOTATION, st.text(max_size=30), st.sampled_from(["<<", ">>", "=", "####", "\n"])),
                max_size=8).map("".join)


@ROBUST
@given(text=st.text())
def test_arbitrary_text_never_raises(text):
    check = fam.check(_PROBLEM, text)
    assert -1 <= check.first_error <= len(check.steps)
    fam.parse_chain(_PROBLEM, text, chain_id="c", author="test")


@ROBUST
@given(lines=st.lists(LINE, max_size=6), answer=st.one_of(st.none(), st.text(max_size=12)))
def test_adversarial_annotations_never_raise(lines, answer):
    text = "\n".join(lines) + ("" if answer is None else f"\n#### {answer}")
    check = fam.check(_PROBLEM, text)
    assert -1 <= check.first_error <= len(check.steps)
    assert not any("internal checker error" in (s.reason or "") for s in check.steps)
    for s in check.steps:
        assert all(0 <= q < s.index for q in s.premises)
