"""`verinet zoo grade`: solving graded by size on held-out slices for checkpoints already trained, with its
grades written as it goes, and a file that gathers a ladder over several calls."""

import json
import shutil

from typer.testing import CliRunner

from verinet.cli import app
from verinet.zoo.evaluate import solve_held_out
from verinet.zoo.model import load_checkpoint
from verinet.zoo.registry import resolve

SLICE = "logic:hops=1,distractors=1"


def _grade(*args):
    return CliRunner(env={"COLUMNS": "300"}).invoke(app, ["zoo", "grade", *args])


def _marked(out, name):
    """Mark a graded row in the file: a regrade would overwrite the mark."""
    g = json.loads(out.read_text())
    g["models"][name]["accuracy"][0]["value"] = 0.123
    out.write_text(json.dumps(g))


def test_grade_reports_every_model_with_intervals_and_whether_size_grades_the_slice(tmp_path):
    out = tmp_path / "new" / "grades.json"  # its directory is made
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


def test_a_file_gathers_the_ladder_over_calls_and_regrades_only_new_or_changed_weights(tmp_path):
    out, mine = tmp_path / "grades.json", tmp_path / "runs" / "xs"
    shutil.copytree(resolve("zoo-xs-s0"), mine)
    assert _grade(str(mine), "--slices", SLICE, "--n", "10", "--out", str(out)).exit_code == 0
    assert json.loads(out.read_text())["graded"] is None  # one size: nothing to grade by
    _marked(out, "xs")
    r = _grade("zoo-s", "--slices", SLICE, "--n", "10", "--out", str(out))  # a stage graded later
    assert r.exit_code == 0, r.output
    g = json.loads(out.read_text())
    assert set(g["models"]) == {"xs", "zoo-s"} and g["largest"] == ["zoo-s"] and g["smallest"] == ["xs"]
    assert g["models"]["xs"]["accuracy"][0]["value"] == 0.123  # kept, not named again
    r = _grade(str(mine), "zoo-s", "--slices", SLICE, "--n", "10", "--out", str(out))
    assert "kept xs" in r.output and json.loads(out.read_text())["models"]["xs"]["accuracy"][0]["value"] == 0.123
    info = json.loads((mine / "training.json").read_text())
    info["wall_s"] += 1  # another run's weights at the same path
    (mine / "training.json").write_text(json.dumps(info))
    r = _grade(str(mine), "--slices", SLICE, "--n", "10", "--out", str(out))
    assert "graded xs" in r.output and json.loads(out.read_text())["models"]["xs"]["accuracy"][0]["value"] != 0.123
    other = _grade("zoo-s", "--slices", SLICE, "--n", "12", "--out", str(out))  # other problems: not mixed in
    assert other.exit_code == 2 and "other problems" in other.output and "n=10" in other.output
    assert json.loads(out.read_text())["n"] == 10  # and the file is kept


def test_models_sharing_a_name_are_told_apart_and_one_named_twice_is_graded_once(tmp_path):
    shutil.copytree(resolve("zoo-xs-s0"), tmp_path / "mine" / "zoo-xs-s0")
    out = tmp_path / "g.json"
    r = _grade("zoo-xs-s0", str(tmp_path / "mine" / "zoo-xs-s0"), "zoo-xs-s0", "--slices", SLICE, "--n", "10",
               "--out", str(out))
    assert r.exit_code == 0, r.output
    assert set(json.loads(out.read_text())["models"]) == {"models/zoo-xs-s0", "mine/zoo-xs-s0"}


def test_grade_bad_input_says_what_is_wrong_before_grading_anything(tmp_path):
    r = _grade("zoo-nope", "--slices", SLICE)
    assert r.exit_code == 2 and "no zoo checkpoint 'zoo-nope'" in r.output
    r = _grade("zoo-xs-s0", "--slices", "chess:moves=3")
    assert r.exit_code == 2 and "not a task family" in r.output
    (tmp_path / "running" / "train_state").mkdir(parents=True)
    r = _grade("zoo-xs-s0", str(tmp_path / "running"), "--slices", SLICE)
    assert r.exit_code == 2 and "holds no finished checkpoint" in r.output and "graded" not in r.output
    r = _grade("zoo-xs-s0", "--slices", SLICE, "--out", str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.output
    for text, says in (("{not json", "not a grade file"), ("[]", "not a grade file"),
                       ('{"grades": {}, "runs": {}}', "its grades are under 'grades'")):
        (tmp_path / "bad.json").write_text(text)
        r = _grade("zoo-xs-s0", "--slices", SLICE, "--out", str(tmp_path / "bad.json"))
        assert r.exit_code == 2 and says in r.output and "graded" not in r.output, r.output
