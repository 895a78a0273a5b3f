"""benchmarks/prm_misses.py: where a token-level PRM misses wrong arith results, beside its solver's likelihood."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_prm_misses", ROOT / "benchmarks" / "prm_misses.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)
    spec.loader.exec_module(mod)
    return mod


def test_misses_are_tallied_by_distance_and_line_for_both_kinds(bench, tmp_path):
    out = bench.main(["--n", "40", "--out", str(tmp_path / "m.json")])
    assert json.loads((tmp_path / "m.json").read_text())["kinds"] == out["kinds"]
    assert out["source"] == "zoo-l" and set(out["kinds"]) == {"prm", "likelihood"}
    for r in out["kinds"].values():
        assert sum(v["n"] for v in r["by_distance"].values()) == 40 == sum(v["n"] for v in r["by_line"].values())
        assert set(r["by_distance"]) <= {"1", "2", "3", "4", "5"} and set(r["by_line"]) <= {"0", "1", "2"}
        assert r["auroc_ci"][0] <= r["auroc"] <= r["auroc_ci"][1]
    # the committed solver rules every wrong result out; its PRM misses some (docs/guide.md)
    lik = out["kinds"]["likelihood"]
    assert lik["auroc"] > 0.99 and not any(v["missed"] for v in lik["by_distance"].values())
    assert sum(v["missed"] for v in out["kinds"]["prm"]["by_distance"].values()) > 0


def test_the_tally_counts_a_line_above_the_quantile_as_missed(bench):
    gold = [[0.9, 0.8], [0.7, 0.6]]  # lower quartile 0.675
    r = bench.tally(gold, [(0, 1, 2, 0.1), (1, 2, 2, 0.95), (1, 0, 1, 0.65)])
    assert r["threshold"] == pytest.approx(0.675)
    assert r["by_distance"] == {"1": {"n": 1, "missed": 0, "rate": 0.0}, "2": {"n": 2, "missed": 1, "rate": 0.5}}
    assert r["by_line"]["2"] == {"n": 1, "missed": 1, "rate": 1.0}
