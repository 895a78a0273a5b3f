"""Records round-trip through JSON and reject bad values naming the field."""

import pytest
from pydantic import ValidationError

from verinet.schema import (
    FORMAT_VERSION, Chain, ChainCheck, Problem, Step, StepCheck, StepPosterior, Verdict, VerificationReport,
)
from verinet.tasks import get_family


def _report() -> VerificationReport:
    fam = get_family("arith")
    p = fam.generate(0)
    gold = fam.gold_chain(p)
    bad = fam.inject(p, "wrong_result")
    verdicts = [Verdict(verifier="m1", chain_id=bad.id, step_index=i, p_valid=0.25 * (i % 4))
                for i in range(len(bad.steps))]
    posts = [StepPosterior(chain_id=bad.id, step_index=i, p_valid=0.5, p_supported=0.4, n_verdicts=1)
             for i in range(len(bad.steps))]
    return VerificationReport(problem_id=p.id, chains=[gold, bad], verdicts=verdicts, posteriors=posts,
                              earliest_error={bad.id: 1, gold.id: -1}, accepted=[gold.id],
                              final_answer=p.answer, agreement={"fleiss_kappa": None, "pairwise": 0.8},
                              graph={"nodes": [], "links": []}, timings_s={"total": 0.1})


def test_all_records_round_trip_through_json():
    fam = get_family("arith")
    p = fam.generate(4, {"steps": 5})
    check = fam.check(p, fam.gold_chain(p).text)
    for rec in [p, fam.gold_chain(p), fam.inject(p, "dropped_step"), check, check.steps[0], _report(),
                Verdict(verifier="v", chain_id="c", step_index=0, p_valid=1.0)]:
        again = type(rec).model_validate_json(rec.model_dump_json())
        assert again == rec
        assert again.format_version == FORMAT_VERSION


@pytest.mark.parametrize("make, field", [
    (lambda: Verdict(verifier="v", chain_id="c", step_index=0, p_valid=1.5), "p_valid"),
    (lambda: Verdict(verifier="", chain_id="c", step_index=0, p_valid=0.5), "verifier"),
    (lambda: Step(index=-1, text="x"), "index"),
    (lambda: Step(index=1, text="x", premises=[1]), "premises"),
    (lambda: Step(index=2, text="x", premises=[-1]), "premises"),
    (lambda: Problem(id="p", family="chess", question="q", answer="a"), "family"),
    (lambda: Problem(id="p", family="arith", question="", answer="a"), "question"),
    (lambda: Problem(id="p", family="arith", question="q", answer="a",
                     gold_steps=[Step(index=1, text="x")]), "gold_steps"),
    (lambda: Chain(id="c", problem_id="p", text="", first_error=3), "first_error"),
    (lambda: Chain(id="c", problem_id="p", text="", error_kind="typo"), "error_kind"),
    (lambda: StepPosterior(chain_id="c", step_index=0, p_valid=0.5, p_supported=-0.1, n_verdicts=1),
     "p_supported"),
    (lambda: StepCheck(index=0, text="", parsed=True, valid=True, supported=True, surprise=1), "surprise"),
    (lambda: VerificationReport(problem_id="p", chains=[], accepted=["nope"]), "accepted"),
])
def test_invalid_values_name_the_field(make, field):
    with pytest.raises(ValidationError) as e:
        make()
    assert field in str(e.value)


def test_chain_check_all_valid_property():
    fam = get_family("arith")
    p = fam.generate(1)
    assert fam.check(p, fam.gold_chain(p).text).all_valid
    assert not ChainCheck.model_validate(fam.check(p, "").model_dump()).all_valid
