"""`verinet zoo grade`: solving graded by size on held-out slices for checkpoints already trained, with its
grades written as it goes and reused when the same call runs again."""

import json

from typer.testing import CliRunner

from verinet.cli import app
from verinet.zoo.evaluate import solve_held_out
from verinet.zoo.model import load_checkpoint
from verinet.zoo.registry import resolve

SLICE = "logic:hops=1,distractors=1"


def _grade(*args):
    return CliRunner().invoke(app, ["zoo", "grade", *args])


def test_grade_reports_every_model_with_intervals_and_whether_size_grades_the_slice(tmp_path):
    out = tmp_path / "grades.json"
    r = _grade("zoo-xs-s0", str(resolve("zoo-l")), "--slices", SLICE, "--n", "10", "--out", str(out))
    assert r.exit_code == 0, r.output
    g = json.loads(out.read_text())
    assert set(g["models"]) == {"zoo-xs-s0", "zoo-l"}  # a directory is reported under its name
    assert g["smallest"] == ["zoo-xs-s0"] and g["largest"] == ["zoo-l"]
    assert len(g["graded"]) == len(g["graded_valid"]) == 1 and isinstance(g["graded"][0], bool)
    model, tok = load_checkpoint(resolve("zoo-xs-s0"))
    _, checks = solve_held_out(model, tok, "logic", {"hops": 1, "distractors": 1}, 10, seed=g["seed"])
    acc, valid = g["models"]["zoo-xs-s0"]["accuracy"][0], g["models"]["zoo-xs-s0"]["valid"][0]
    assert acc["value"] == sum(c.answer_correct for c in checks) / 10  # the same problems as the zoo's evaluation
    assert valid["value"] == sum(c.first_error == -1 for c in checks) / 10
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"] and 0 < acc["chance"] <= 1
    assert "graded zoo-l" in r.output and "graded by size" in r.output


def test_grade_run_again_on_its_file_grades_only_the_new_models(tmp_path):
    out = tmp_path / "grades.json"
    assert _grade("zoo-xs-s0", "--slices", SLICE, "--n", "10", "--out", str(out)).exit_code == 0
    g = json.loads(out.read_text())
    assert g["graded"] is None  # one size: nothing to grade by
    g["models"]["zoo-xs-s0"]["accuracy"][0]["value"] = 0.123  # marks the row: a regrade would overwrite it
    out.write_text(json.dumps(g))
    r = _grade("zoo-xs-s0", "zoo-s", "--slices", SLICE, "--n", "10", "--out", str(out))
    assert r.exit_code == 0, r.output
    g = json.loads(out.read_text())
    assert g["models"]["zoo-xs-s0"]["accuracy"][0]["value"] == 0.123
    assert set(g["models"]) == {"zoo-xs-s0", "zoo-s"} and g["largest"] == ["zoo-s"]
    other = _grade("zoo-xs-s0", "--slices", SLICE, "--n", "12", "--out", str(out))  # other problems: not mixed in
    assert other.exit_code == 2 and "other problems" in other.output and "n=10" in other.output
    assert json.loads(out.read_text())["n"] == 10  # and the file is kept


def test_grade_bad_input_says_what_is_wrong(tmp_path):
    r = _grade("zoo-nope", "--slices", SLICE)
    assert r.exit_code == 2 and "no zoo checkpoint 'zoo-nope'" in r.output
    r = _grade("zoo-xs-s0", "--slices", "chess:moves=3")
    assert r.exit_code == 2 and "not a task family" in r.output
    (tmp_path / "a" / "zoo-xs-s0").mkdir(parents=True)
    r = _grade("zoo-xs-s0", str(tmp_path / "a" / "zoo-xs-s0"), "--slices", SLICE)
    assert r.exit_code == 2 and "both be reported as 'zoo-xs-s0'" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = _grade("zoo-xs-s0", "--slices", SLICE, "--out", str(bad))
    assert r.exit_code == 2 and "not a grade file" in r.output
