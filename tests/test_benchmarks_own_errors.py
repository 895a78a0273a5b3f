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


def test_bad_slices_are_named(bench):
    with pytest.raises(SystemExit, match="--arith-slices: 'stepz=4'"):
        bench.parse_slices("stepz=4", "arith")
    assert bench.parse_slices("steps=6", "arith") == [{"steps": 6, "distractors": 0}]
    with pytest.raises(SystemExit, match="--families"):
        bench.main(["--families", "algebra"])
