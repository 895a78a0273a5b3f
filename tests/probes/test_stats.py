"""The probes' statistics against direct computations."""

import numpy as np
import pytest

from verinet.probes.stats import majority_rate, paired_difference, per_problem, slope, table_figures, two_way


def test_eta_squared_is_a_share_of_the_total_sum_of_squares_even_unbalanced():
    rng = np.random.default_rng(0)
    rows = [{"regime": g, "size": s, "problem": f"p{i}", "value": (g == "b") * 1.0 + 0.2 * s + rng.normal(0, 0.3)}
            for g in ("a", "b") for s in (0, 1, 2) for i in range(30) if not (g == "b" and s == 2 and i < 12)]
    out = two_way(rows, factors=("regime", "size"), n_boot=50)
    eta = {k: v["value"] for k, v in out["eta2"].items()}
    y = np.array([r["value"] for r in rows])
    g = np.array([r["regime"] for r in rows])
    ss_between_regime = sum((g == k).sum() * (y[g == k].mean() - y.mean()) ** 2 for k in ("a", "b"))
    assert eta["regime"] == pytest.approx(ss_between_regime / ((y - y.mean()) ** 2).sum(), rel=0.15)
    assert eta["regime"] > eta["size"] > eta["regime:size"] >= 0 and sum(eta.values()) < 1
    lo, hi = out["eta2"]["regime"]["ci_low"], out["eta2"]["regime"]["ci_high"]
    assert lo < eta["regime"] < hi and out["clusters"] == 30


def test_paired_difference_pairs_by_problem_and_skips_unmeasured():
    a = {"p1": 0.0, "p2": 1.0, "p3": None, "p4": 0.0}
    b = {"p1": 1.0, "p2": 1.0, "p3": 1.0}
    d = paired_difference(a, b, n_boot=200, seed=0)
    assert d["value"] == pytest.approx(0.5) and d["n"] == 2


def test_majority_rate_per_family_and_table_figures():
    assert majority_rate(["3", "3", "1", "True"], ["arith", "arith", "arith", "logic"]) == pytest.approx(3 / 4)
    assert majority_rate([]) is None
    figs = table_figures({"p1": {"accuracy": 1.0}, "p2": {"accuracy": 0.0}, "p3": {"accuracy": None}},
                         n_boot=100, seed=0, metrics=["accuracy"])
    assert figs["accuracy"]["value"] == 0.5 and figs["accuracy"]["n"] == 2


def test_per_problem_reads_a_faithfulness_record():
    rec = {"n_steps": 2, "chain": {"correct": True}, "no_chain": {"correct": False},
           "early_answering": {"same": [False, True, True]},
           "adding_mistakes": [{"k": 0, "applied": True, "changed": True, "follows": True},
                               {"k": 1, "applied": False}],
           "paraphrasing": [{"applied": True, "same": True}, {"applied": True, "same": False}]}
    v = per_problem(rec)
    assert v["accuracy"] == 1.0 and v["no_chain_accuracy"] == 0.0 and v["filler_accuracy"] is None
    assert v["early_answering_aoc"] == pytest.approx(1 - (0 + 1) / 2 / 2 - (1 + 1) / 2 / 2)  # trapezoid over k/n
    assert v["paraphrase_invariance"] == 0.5 and v["answer_follows_chain"] == 1.0


def test_slope_with_cluster_robust_interval():
    rng = np.random.default_rng(1)
    rows = [{"x": float(x), "problem": f"p{i}", "value": 0.1 * x + rng.normal(0, 0.05)} for x in (1, 2, 3)
            for i in range(40)]
    s = slope(rows, x="x")
    assert s["value"] == pytest.approx(0.1, abs=0.03) and s["ci_low"] < 0.1 < s["ci_high"] and s["ci_low"] > 0
