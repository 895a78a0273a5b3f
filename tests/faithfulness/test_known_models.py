"""Acceptance: the metrics recover the known faithfulness of real backends built for it.

``gold`` writes chains but answers the gold answer whatever they say (unfaithful);
``last`` answers the last value its chain states (faithful). See tests/faithfulness/known.py.
"""

import random

import pytest

from verinet.backends.base import Completion
from verinet.backends.formats import ZooFormat
from verinet.faithfulness import TESTS, evaluate_model, evaluate_models, figures
from verinet.orchestration import LocalMembers
from verinet.tasks import get_family

from tests.faithfulness.known import KnownBackend

PROBLEMS = get_family("arith").sample(80, seed=21, params={"steps": 3, "distractors": 1})


@pytest.fixture(scope="module")
def results():
    caller = LocalMembers({"gold": KnownBackend(PROBLEMS, "gold"), "last": KnownBackend(PROBLEMS, "last")})
    return evaluate_models(caller, {"gold": ZooFormat(), "last": ZooFormat()}, PROBLEMS, n_boot=1000)


def test_a_model_that_ignores_its_chain(results):
    s = results["gold"].summary
    assert s["early_answering_aoc"]["value"] == pytest.approx(0.0, abs=0.02)
    assert s["early_answering_aoc"]["ci_high"] <= 0.05
    assert s["adding_mistakes_aoc"]["value"] == pytest.approx(0.0, abs=0.02)
    # its answers match what its (corrupted) chains imply only by chance
    follows, chance = s["answer_follows_chain"], s["answer_follows_chain_chance"]
    assert follows["n"] >= 200
    assert abs(follows["value"] - chance["value"]) < 0.08
    assert follows["ci_low"] <= chance["value"] <= follows["ci_high"] + 0.05
    assert follows["value"] < 0.25
    # no accuracy is lost without the chain
    assert s["filler_accuracy"]["value"] == s["no_chain_accuracy"]["value"] == s["chain_accuracy"]["value"] == 1.0


def test_a_model_whose_answer_is_its_last_stated_value(results):
    s = results["last"].summary
    assert s["early_answering_aoc"]["value"] > 0.6 and s["early_answering_aoc"]["ci_low"] > 0.5
    # the trapezoid AOC of a fully faithful 3-step chain is 1 - 1/6 (the step rule would say 1)
    assert s["adding_mistakes_aoc"]["value"] > 0.75 and s["adding_mistakes_aoc_step"]["value"] > 0.9
    assert s["answer_follows_chain"]["value"] == 1.0 and s["answer_follows_chain"]["n"] >= 200
    assert s["answer_follows_chain"]["value"] > s["answer_follows_chain_chance"]["ci_high"]
    assert s["chain_accuracy"]["value"] == 1.0
    assert s["filler_accuracy"]["ci_high"] < 0.6  # the filler carries none of the chain's values
    golds = [str(r["gold"]) for r in results["last"].records]  # chance: always the commonest answer
    assert s["accuracy_chance"]["value"] == max(golds.count(g) for g in golds) / len(golds) < 0.5
    # rewording keeps every stated value, so the answer stays
    assert s["paraphrase_invariance"]["value"] == 1.0 and s["paraphrase_invariance"]["n"] >= 200
    gold = results["gold"].summary
    assert s["early_answering_aoc"]["ci_low"] > gold["early_answering_aoc"]["ci_high"]


def test_records_are_per_chain_and_complete(results):
    recs = results["last"].records
    assert [r["problem_id"] for r in recs] == [p.id for p in PROBLEMS]
    r = recs[0]
    n = r["n_steps"]
    assert n == 3 and len(r["early_answering"]["answers"]) == n + 1 and r["early_answering"]["same"][-1]
    assert [row["k"] for row in r["adding_mistakes"]] == list(range(n))
    assert [row["k"] for row in r["paraphrasing"]] == list(range(1, n + 1))
    assert all(row["how"] == "family" and row["step_valid_after"] is False for row in r["adding_mistakes"])
    assert set(r) >= {"chain", "with_chain", "follows", "filler", "no_chain"}
    s = results["last"].summary
    assert set(figures(s)) >= {"early_answering_aoc", "adding_mistakes_aoc", "paraphrase_invariance",
                               "filler_accuracy", "answer_follows_chain"}
    curve = s["curves"]["early_answering"]
    assert curve["x"][0] == 0.0 and curve["x"][-1] == 1.0 and curve["y"][-1] == 1.0
    imp = s["curves"]["step_causal_importance"]
    assert [x["k"] for x in imp] == [0, 1, 2] and all(x["n"] == len(PROBLEMS) for x in imp)
    assert s["info"]["usage"]["decode"] > 0


def test_tests_can_be_chosen_and_are_checked():
    caller = LocalMembers({"last": KnownBackend(PROBLEMS[:5], "last")})
    r = evaluate_model(caller, "last", ZooFormat(), PROBLEMS[:5], tests=["filler"], n_boot=100)
    assert "filler" in r.records[0] and "early_answering" not in r.records[0]
    assert r.summary["early_answering_aoc"]["n"] == 0 and r.summary["early_answering_aoc"]["value"] is None
    with pytest.raises(ValueError, match="unknown faithfulness tests"):
        evaluate_model(caller, "last", ZooFormat(), PROBLEMS[:5], tests=["early"])
    with pytest.raises(ValueError, match="unknown members"):
        evaluate_model(caller, "nobody", ZooFormat(), PROBLEMS[:5])
    assert set(TESTS) == {"early_answering", "adding_mistakes", "paraphrasing", "filler"}


class _Editing(ZooFormat):
    """A zoo format whose model also takes edit requests (as a chat model would, for free text)."""

    def edit_prompt(self, task, question, step):
        return f"<edit:{task}>{question}\n{step}"


class _EditingBackend(KnownBackend):
    """Rewrites a step on request: a mistake changes its result, a paraphrase swaps + and * operands."""

    def generate(self, prompts, **kw):
        res = super().generate([p for p in prompts if not p.startswith("<edit:")], **kw)
        texts = iter(res.completions)
        out = []
        for p in prompts:
            if not p.startswith("<edit:"):
                out.append(next(texts))
                continue
            task, rest = p[len("<edit:"):].split(">", 1)
            question, step = rest.split("\n", 1)
            fam, prob = get_family("arith"), self.by_question[question]
            # the family's own edits, read from the class (the test switches them off on the instance)
            hook = type(fam).corrupt_step if task == "mistake" else type(fam).paraphrase_step
            out.append([Completion(hook(fam, prob, [step], 0, random.Random(1)), 1)])
        res.completions = out
        return res


def test_free_text_edits_are_written_by_the_model(monkeypatch):
    """Where the family cannot edit a step, the model rewrites it, and the metrics hold."""
    fam = get_family("arith")
    monkeypatch.setattr(fam, "corrupt_step", lambda *a, **k: None)
    monkeypatch.setattr(fam, "paraphrase_step", lambda *a, **k: None)
    problems = PROBLEMS[:20]
    caller = LocalMembers({"last": _EditingBackend(problems, "last")})
    r = evaluate_model(caller, "last", _Editing(), problems, tests=["adding_mistakes", "paraphrasing"], n_boot=200)
    rows = [row for rec in r.records for row in rec["adding_mistakes"]]
    assert rows and all(row["how"] == "model" and row["applied"] for row in rows)
    assert r.summary["answer_follows_chain"]["value"] == 1.0
    assert r.summary["paraphrase_invariance"]["value"] == 1.0
    # a format whose models cannot edit: those interventions are left out, not faked
    r = evaluate_model(caller, "last", ZooFormat(), problems, tests=["adding_mistakes"], n_boot=200)
    assert all(not row["applied"] and row["how"] == "none" for rec in r.records for row in rec["adding_mistakes"])
    assert r.summary["adding_mistakes_aoc"]["n"] == 0


def test_max_steps_keeps_the_first_steps_and_the_count_written():
    from verinet.faithfulness.runner import run_models

    caller = LocalMembers({"last": KnownBackend(PROBLEMS[:4], "last")})
    recs = run_models(caller, {"last": ZooFormat()}, {"last": PROBLEMS[:4]}, tests=["early_answering"],
                      max_steps=2)["last"]
    assert all(r["n_steps"] == 2 and r["n_steps_written"] == 3 and len(r["chain"]["steps"]) == 2 for r in recs)
    assert all(len(r["early_answering"]["answers"]) == 3 for r in recs)
