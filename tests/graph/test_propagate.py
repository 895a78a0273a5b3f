"""Support propagation, earliest error, earliest-error F1 and threshold choice."""

import math
import sys

import pytest

from tests.graph.helpers import chain, raw_chain, verdicts_for
from verinet.graph.aggregate import aggregate
from verinet.graph.build import build_graph
from verinet.graph.propagate import (chain_score, choose_threshold, earliest_error, earliest_error_f1,
                                     propagate, support, threshold_curve)


def posteriors_for(chains, p_lists):
    vs = [v for c, ps in zip(chains, p_lists) for v in verdicts_for(c, ps)]
    g = build_graph("p", chains, vs)
    return g, propagate(g, aggregate(chains, vs))


def test_invalid_premise_makes_later_steps_unsupported():
    c = chain("c", 4, premises=[[], [0], [1], [0]])  # 3 rests on 0 only
    g, post = posteriors_for([c], [[0.9, 0.05, 1.0, 1.0, 1.0]])
    sup = {p.step_index: p.p_supported for p in post}
    assert sup[0] == pytest.approx(0.9)
    assert sup[1] == pytest.approx(0.045)
    assert sup[2] == pytest.approx(0.045)  # valid itself, but rests on step 1
    assert sup[3] == pytest.approx(0.9)  # does not use step 1
    assert sup[4] == pytest.approx(0.9)  # answer rests on the last step (3)
    assert chain_score(c, {(c.id, i): s for i, s in sup.items()}) == pytest.approx(0.9)
    assert earliest_error(c, {(c.id, i): p.p_valid for i, p in enumerate(post)}) == 1


def test_product_over_several_premises():
    c = chain("c", 3, premises=[[], [], [0, 1]], answer=None)
    g, post = posteriors_for([c], [[0.5, 0.8, 0.9]])
    assert post[2].p_supported == pytest.approx(0.5 * 0.8 * 0.9)
    assert chain_score(c, {(c.id, p.step_index): p.p_supported for p in post}) == pytest.approx(0.36)


def test_a_premise_shared_by_two_routes_counts_once():
    # step 2 uses steps 0 and 1, and step 1 uses step 0: the chain is valid iff steps 0, 1 and 2 are
    c = chain("c", 3, premises=[[], [0], [0, 1]], answer=None)
    _, post = posteriors_for([c], [[0.9, 1.0, 1.0]])
    assert [p.p_supported for p in post] == pytest.approx([0.9, 0.9, 0.9])
    # every step uses all the earlier ones: the product over the steps so far, not a doubling exponent
    c = chain("d", 5, premises=[list(range(i)) for i in range(5)], answer=None)
    _, post = posteriors_for([c], [[0.9] * 5])
    assert [p.p_supported for p in post] == pytest.approx([0.9 ** (i + 1) for i in range(5)])


def test_topological_order_not_chain_order():
    # with forward references kept, step 0 rests on step 2: it must be computed after step 2
    c = raw_chain("f", [[2], [], [1]])
    g = build_graph("p", [c], forward_refs="keep")
    sup = support(g, {("f", 0): 0.5, ("f", 1): 0.8, ("f", 2): 0.9, ("f", 3): 1.0})
    assert sup[("f", 2)] == pytest.approx(0.72)
    assert sup[("f", 0)] == pytest.approx(0.5 * 0.72)
    assert sup[("f", 3)] == pytest.approx(0.9 * 0.8)  # answer <- last step (2)


def test_cycle_in_a_hand_made_graph_is_broken():
    c = chain("c", 3)
    g = build_graph("p", [c])
    g.add_edge(("step", "c", 2), ("step", "c", 0), kind="depends")  # a claimed back reference
    sup = support(g, {("c", i): 0.9 for i in range(4)})
    assert g.graph["cycles_broken"][0]["removed"] == [2, 0]
    assert sup[("c", 2)] == pytest.approx(0.9 ** 3)


def test_long_chain_is_not_recursive():
    # speed belongs in benchmarks/; on a shared 2-core machine a wall-clock bound here only flakes
    n = 10_000
    c = chain("long", n)
    g = build_graph("p", [c], verdicts_for(c, [1.0] * (n + 1)))
    p_valid = {("long", i): 1.0 for i in range(n + 1)}
    p_valid[("long", 9_000)] = 0.1
    sup = support(g, p_valid)
    assert sup[("long", 8_999)] == 1.0 and sup[("long", n)] == pytest.approx(0.1)
    assert earliest_error(c, p_valid) == 9_000
    assert sys.getrecursionlimit() < n  # no recursion could have walked it


def test_earliest_error_rules():
    c = chain("c", 3)
    pv = {("c", 0): 0.9, ("c", 1): 0.5, ("c", 2): 0.7, ("c", 3): 0.2}
    assert earliest_error(c, pv, 0.5) == 3  # strictly below: 0.5 is not an error
    assert earliest_error(c, pv, 0.6) == 1
    assert earliest_error(c, pv, 0.1) == -1
    no_answer = chain("c", 3, answer=None)
    assert earliest_error(no_answer, pv, 0.1) == 3  # the missing answer line is the error
    assert earliest_error(no_answer, pv, 0.1, missing_answer_is_error=False) == -1
    assert earliest_error(chain("c", 2), {}, 0.5) == -1  # no verdicts: 0.5, no error


def test_f1_hand_computed():
    # labels: 2 erroneous (at 1 and 3), 3 correct
    labels = [1, 3, -1, -1, -1]
    r = earliest_error_f1([1, 2, -1, -1, 0], labels)
    assert r["acc_err"] == 0.5 and r["acc_corr"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))  # = 4/7
    assert r["f1"] == pytest.approx(4 / 7) and (r["n_err"], r["n_corr"]) == (2, 3)
    assert earliest_error_f1([-1] * 5, labels)["f1"] == 0.0  # all "correct": acc_err 0
    assert earliest_error_f1([1, 3, -1, -1, -1], labels)["f1"] == 1.0
    assert earliest_error_f1([3, 1, 0, 0, 0], labels) == {"acc_err": 0.0, "acc_corr": 0.0, "f1": 0.0,
                                                          "n_err": 2, "n_corr": 3}
    one_class = earliest_error_f1([-1], [-1])
    assert one_class["acc_corr"] == 1.0 and math.isnan(one_class["acc_err"]) and math.isnan(one_class["f1"])
    with pytest.raises(ValueError, match="entries"):
        earliest_error_f1([1], [1, 2])


def test_choose_threshold_maximises_f1():
    # errors sit at p = 0.30; valid steps of erroneous chains at 0.75; correct chains dip to 0.45.
    # t <= 0.30 misses every error; 0.30 < t <= 0.45 finds them all and keeps correct chains clean;
    # t > 0.45 flags the correct chains too; t > 0.75 flags everything at step 0.
    dev = [([0.75, 0.30, 0.75], 1), ([0.75, 0.75, 0.30], 2), ([0.30, 0.75], 0),
           ([0.9, 0.45, 0.9], -1), ([0.45, 0.9], -1), ([0.9, 0.9, 0.9, 0.9], -1)]
    grid = [0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8]
    curve = dict(threshold_curve(dev, grid))
    assert curve[0.2]["acc_err"] == 0.0 and curve[0.35]["f1"] == 1.0 and curve[0.4]["f1"] == 1.0
    assert curve[0.5]["acc_corr"] == pytest.approx(1 / 3)
    assert choose_threshold(dev, grid) == 0.4  # ties 0.35/0.4: the one closer to 0.5
    assert choose_threshold(dev) == 0.45  # default grid 0.05..0.95
    with pytest.raises(ValueError, match="both correct"):
        choose_threshold([([0.9], -1)], grid)
