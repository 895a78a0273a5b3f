"""`verinet eval-steps`: ProcessBench's metrics, record reading, generated data, and a real run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from verinet.cli import app
from verinet.stepeval import StepsDataError, earliest_error_scores, family_records, read_records, step_auroc
from verinet.tasks import get_family


def test_processbench_metrics_by_hand():
    labels = [-1, -1, 2, 0, 1]
    predicted = [-1, 1, 2, 1, 1]  # correct chains: 1 of 2 kept; erroneous: 2 of 3 found at their step
    m = earliest_error_scores(labels, predicted, ["a", "b", "c", "d", "e"], n_boot=200)
    assert m["acc_corr"]["value"] == 0.5 and m["acc_err"]["value"] == pytest.approx(2 / 3)
    assert m["f1"]["value"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    for k in ("acc_err", "acc_corr", "f1"):
        assert m[k]["ci_low"] <= m[k]["value"] <= m[k]["ci_high"]
    perfect = earliest_error_scores(labels, labels, list("abcde"), n_boot=100)
    assert perfect["f1"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}


def test_bootstrap_resamples_problems_not_chains():
    # two problems, each with a right and a wrong prediction: a chain-level bootstrap would vary,
    # but every resample of whole problems keeps acc_err at 0.5
    m = earliest_error_scores([0, 1, 0, 1], [0, 0, 0, 0], ["p", "p", "q", "q"], n_boot=300)
    assert m["acc_err"]["ci_low"] == m["acc_err"]["ci_high"] == 0.5 and m["n_problems"] == 2


def test_step_auroc():
    assert step_auroc([0.1, 0.2], [0.9, 0.8]) == 1.0
    assert step_auroc([0.9], [0.1]) == 0.0
    assert step_auroc([0.5], [0.5]) == 0.5
    assert step_auroc([], [0.5]) is None


def test_read_records_errors(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"problem": "q", "steps": ["a", "b"], "label": 2}\n')
    with pytest.raises(StepsDataError, match="line 1: record: label 2 is past the last step"):
        read_records(p)
    p.write_text('{"problem": "q", "steps": ["a"], "label": -1, "generator": "x"}\n\nnot json\n')
    with pytest.raises(StepsDataError, match="line 3: not valid JSON"):
        read_records(p)
    assert read_records(p, limit=1)[0].subset == "all"  # extra keys are kept, subset defaults
    with pytest.raises(StepsDataError, match="no such file"):
        read_records(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("family", ["arith", "logic", "arith_nl", "logic_nl"])
def test_generated_records_carry_the_checkers_labels(family):
    recs = family_records(family, 5, seed=3)
    fam = get_family(family)
    assert {r["label"] for r in recs} >= {-1} and any(r["label"] >= 0 for r in recs)
    kinds = {r["error_kind"] for r in recs if r["label"] >= 0}
    assert kinds <= set(fam.error_kinds)
    for r in recs:  # the appended answer step is where an answer miscopy is labelled
        assert r["steps"][-1].startswith("The final answer is ")
        if r["error_kind"] == "answer_miscopy":
            assert r["label"] == len(r["steps"]) - 1


def test_eval_steps_end_to_end_on_zoo_verifiers(tmp_path):
    data, out = tmp_path / "arith.jsonl", tmp_path / "metrics.json"
    r = CliRunner().invoke(app, ["tasks", "processbench", "--family", "arith", "--n", "2", "--out", str(data),
                                 "--knob", "steps=2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["eval-steps", "--config", "configs/ensemble-local.yaml", "--data", str(data),
                                 "--out", str(out), "--n-boot", "100"])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    m = result["metrics"]["arith"]
    assert m["n_chains"] == len(data.read_text().splitlines()) and m["n_problems"] == 2
    assert set(m["step_auroc"]) <= {"wrong_result", "wrong_premise", "dropped_step", "answer_miscopy"}
    assert len(result["members"]) == 3 and len(result["predictions"]) == m["n_chains"]
    for p in result["predictions"]:
        assert -1 <= p["predicted"] < len(p["p_valid"]) and all(0 <= x <= 1 for x in p["p_valid"])


def test_eval_steps_bad_inputs(tmp_path):
    r = CliRunner().invoke(app, ["eval-steps", "--config", "configs/ensemble-local.yaml",
                                 "--data", str(tmp_path / "nope.jsonl")])
    assert r.exit_code == 2 and "no such file" in r.output
    bad = tmp_path / "cfg.yaml"
    bad.write_text("name: x\n")
    d = tmp_path / "d.jsonl"
    d.write_text('{"problem": "q", "steps": ["a"], "label": -1}\n')
    r = CliRunner().invoke(app, ["eval-steps", "--config", str(bad), "--data", str(d)])
    assert r.exit_code == 2 and "not a serve config" in r.output
