"""`verinet faithfulness` end to end on a tiny config with zoo-xs models: files, tables, resume."""

import json

import pytest
from typer.testing import CliRunner

from verinet.cli import app
from verinet.results import ResultsLog

TINY = """
name: tiny
models: [zoo-xs-s0, zoo-xs-s1]
tasks:
  - {family: arith, n: 2, params: {steps: 2, distractors: 0}}
  - {family: logic, n: 2, params: {hops: 2, distractors: 1}}
n_boot: 200
batch_size: 2
answer_tokens: 8
pipeline: {members: [zoo-xs-s0, zoo-xs-s1], label: pair, selection: majority}
"""


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    where = tmp_path_factory.mktemp("faith")
    cfg = where / "tiny.yaml"
    cfg.write_text(TINY)
    out = where / "out"
    result = CliRunner().invoke(app, ["faithfulness", "--config", str(cfg), "--out", str(out)])
    return cfg, out, result


def test_writes_records_summary_and_plots(run):
    cfg, out, result = run
    assert result.exit_code == 0, result.output
    recs = _lines(out / "records.jsonl")
    assert len(recs) == 2 * 4 + 4 and len({r["id"] for r in recs}) == len(recs)
    assert {r["kind"] for r in recs} == {"model", "pipeline"}
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == ["zoo-xs-s0", "zoo-xs-s1"]
    s = summary["models"]["zoo-xs-s0"]
    assert s["parameters"] > 0 and s["summary"]["info"]["records"] == 4
    assert set(s["summary"]["by_family"]) == {"arith", "logic"}
    for key in ("early_answering_aoc", "adding_mistakes_aoc", "paraphrase_invariance", "filler_accuracy",
                "answer_follows_chain"):
        assert set(s["summary"][key]) == {"value", "ci_low", "ci_high", "n"}
    assert summary["pipeline"]["summary"]["accuracy"]["n"] == 4
    for png in ("curves.png", "bars.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert (out / "config.yaml").is_file()
    for needle in ("faithfulness: all families", "faithfulness: logic", "early-ans. AOC", "zoo-xs-s1",
                   "ensemble pipeline pair"):
        assert needle in result.output


def test_rerun_skips_finished_records_and_n_extends(run):
    cfg, out, _ = run
    before = (out / "records.jsonl").read_text()
    result = CliRunner().invoke(app, ["faithfulness", "--config", str(cfg), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "records.jsonl").read_text() == before  # nothing redone, nothing duplicated
    result = CliRunner().invoke(app, ["faithfulness", "--config", str(cfg), "--out", str(out), "--n", "3"])
    assert result.exit_code == 0, result.output
    recs = _lines(out / "records.jsonl")
    assert len(recs) == 3 * 6 and len({r["id"] for r in recs}) == len(recs)
    assert (out / "records.jsonl").read_text().startswith(before)


def test_a_different_config_is_refused_in_the_same_directory(run):
    cfg, out, _ = run
    other = cfg.parent / "other.yaml"
    other.write_text(TINY.replace("name: tiny", "name: tiny\nseed: 3"))
    result = CliRunner().invoke(app, ["faithfulness", "--config", str(other), "--out", str(out)])
    assert result.exit_code == 2
    assert "different config (seed differ)" in " ".join(result.output.split())


def test_bad_config_exits_with_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [zoo-xs-s0]\ntests: [filer]\n")
    result = CliRunner().invoke(app, ["faithfulness", "--config", str(bad)])
    assert result.exit_code == 2 and "tests.0: Input should be" in " ".join(result.output.split())


def test_store_cuts_a_torn_line_and_refuses_duplicates(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsLog(path, key="id") as s:
        s.append({"id": "a", "x": 1})
        s.append({"id": "b", "x": 2})
    path.write_bytes(path.read_bytes() + b'{"id": "c", "x"')  # a crash mid-write
    with ResultsLog(path, key="id") as s:
        assert list(s.records) == ["a", "b"] and "c" not in s
        with pytest.raises(ValueError, match="duplicate id"):
            s.append({"id": "a"})
        s.append({"id": "c", "x": 3})
    assert [r["id"] for r in _lines(path)] == ["a", "b", "c"]
