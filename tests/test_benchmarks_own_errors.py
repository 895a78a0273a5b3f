"""benchmarks/own_errors.py: every verifier kind of every verifier on one labelled set of chains that
the writers wrote, with intervals and chance levels, written as JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_own_errors", ROOT / "benchmarks" / "own_errors.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)
    spec.loader.exec_module(mod)
    return mod


def test_every_verifier_and_kind_on_the_same_chains(bench, tmp_path):
    out = bench.main(["--writers", "zoo-xs-s0,zoo-l", "--verifiers", "zoo-xs-s0,zoo-l", "--n", "6",
                      "--logic-slices", "hops=1;hops=2", "--out", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == out["rows"]
    assert out["slices"]["logic"] == [{"hops": 1, "distractors": 1}, {"hops": 2, "distractors": 1}]
    kinds = {(r["verifier"], r["method"]) for r in out["rows"]}
    assert kinds == {("zoo-xs-s0", "likelihood"), ("zoo-xs-s0", "verdict"), ("zoo-l", "likelihood"),
                     ("zoo-l", "verdict"), ("zoo-l", "prm")}  # zoo-l has a committed token-level PRM
    assert len(out["rows"]) == 2 * len(kinds)  # both families each
    for r in out["rows"]:
        assert r["f1"] is None or (0 <= r["f1"] <= 1 and (r["ci_low"] is None or r["ci_low"] <= r["f1"] <= r["ci_high"]))
    assert any(r["f1"] is not None for r in out["rows"])
    for fam, counts in out["error_kinds"].items():  # every erroneous chain has a kind: half the set
        assert sum(counts.values()) * 2 == out["chains"][fam] and "other" not in counts, counts
    for r in out["rows"]:
        if r["f1"] is not None:  # by kind, the same erroneous chains as acc_err
            found = sum(d["found"] for d in r["acc_err_by_kind"].values())
            n = sum(d["n"] for d in r["acc_err_by_kind"].values())
            assert n == r["n_err"] and found / n == pytest.approx(r["acc_err"]), r


def test_checker_reasons_sort_into_kinds(bench):
    from verinet.tasks import get_family

    fam = get_family("arith")
    p = fam.sample(1, seed=5, params={"steps": 3, "distractors": 0})[0]
    for kind, want in [("wrong_result", "wrong result"), ("wrong_premise", "wrong premise"),
                       ("answer_miscopy", "answer miscopy"), ("dropped_step", "premise not yet computed")]:
        ch = fam.inject(p, kind, seed=1)
        check = fam.check(p, ch.text)
        wrong = (check.steps + [check.answer])[check.first_error]
        assert bench.error_kind("arith", wrong.reason) == want, wrong.reason
    assert bench.error_kind("arith", None) is None and bench.error_kind("logic", "something new") == "other"
    # only answer reasons quote the model; they are matched first and anchored, so an echo cannot mis-sort
    assert bench.error_kind("arith", "answer '5 mod 97, not 3' is not a number") == "no answer"
    assert bench.error_kind("logic", "answer 'the rule gives' is not True or False") == "no answer"
    assert bench.error_kind("arith", "restatement a5 differs from the result a6") == "inconsistent restatement"
    assert bench.error_kind("arith", "b is 5 (stated at step 1), but the step reads 6") == "miscopied value"


def test_bad_slices_are_named(bench):
    with pytest.raises(SystemExit, match="--arith-slices: 'stepz=4'"):
        bench.parse_slices("stepz=4", "arith")
    assert bench.parse_slices("steps=6", "arith") == [{"steps": 6, "distractors": 0}]
    with pytest.raises(SystemExit, match="--families"):
        bench.main(["--families", "algebra"])
