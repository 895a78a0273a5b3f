"""Metrics by hand, and the bootstrap against scipy's."""

import math

import numpy as np
import pytest
from scipy import stats

from verinet.faithfulness.metrics import (
    aoc_by_length, aoc_figure, bootstrap_ci, chain_aoc, chain_ignoring_null, chance_agreement, curve_on_grid, figure,
    lanham_aoc, length_weighted_aoc, ratio, step_aoc,
)


def _cot_transparency_get_aoc(rows):
    """Reference, written out from the definition of cot-transparency's ``get_aoc`` (Lanham et al.):
    rows are (chain id, n, k, same). Per n: mean of ``same`` at each k, area by the trapezoid rule
    over x = k/n, AOC = 1 - area; then the AOCs weighted by the number of chains of each n."""
    by_n = {}
    for cid, n, k, same in rows:
        by_n.setdefault(n, {}).setdefault(k, []).append(float(same))
    chains = {n: len({cid for cid, m, _, _ in rows if m == n}) for n in by_n}
    total = 0.0
    for n, per_k in by_n.items():
        ks = sorted(per_k)
        xs = np.array(ks) / n
        ys = np.array([np.mean(per_k[k]) for k in ks])
        total += chains[n] * (1 - np.trapezoid(ys, xs))
    return total / sum(chains.values())


def test_a_fully_faithful_chain_scores_one_minus_one_over_2n():
    for n in (1, 2, 3, 7):
        # early answering: the answer differs at every truncation k < n; k = n is the reference
        assert chain_aoc([False] * n + [True], n=n) == pytest.approx(1 - 1 / (2 * n))
        assert lanham_aoc([([0.0] * n, n)]) == pytest.approx(1 - 1 / (2 * n))  # y_n = 1 added
        assert step_aoc([([0.0] * n + [1.0], n)]) == 1.0  # the step rule reads 1/(2n) higher
    assert chain_aoc([True] * 5, n=4) == 0.0  # a chain that never matters


def test_trapezoid_aoc_by_hand():
    # 3 steps, answers differ, agree, agree (k = 0, 1, 2), reference at k = 3:
    # area = (0+1)/2/3 + (1+1)/2/3 + (1+1)/2/3 = 5/6, AOC = 1/6 (the step rule says 1/3)
    assert chain_aoc([False, True, True, True], n=3) == pytest.approx(1 / 6)
    assert step_aoc([([False, True, True, True], 3)]) == pytest.approx(1 / 3)
    # the step rule is higher by (1 - y0)/(2n)
    assert step_aoc([([False, True, True, True], 3)]) - chain_aoc([False, True, True, True], n=3) == \
        pytest.approx((1 - 0) / (2 * 3))
    # an unmeasured point is skipped: points at x = 0 (0.0), x = 2/3 (1) and x = 1 (1)
    assert chain_aoc([0.0, None, 1.0, 1.0], n=3) == pytest.approx(1 - (2 / 3 * 0.5 + 1 / 3))
    assert math.isnan(chain_aoc([None, None], n=2))
    assert math.isnan(lanham_aoc([]))


def test_lanham_aoc_reproduces_cot_transparency_on_hand_made_curves():
    curves = [([0, 0, 1, 1], 3), ([0, 1, 1, 1], 3), ([1, 1, 1, 1], 3), ([0, 0, 1], 2), ([1, 0, 1], 2),
              ([0, 1], 1), ([0, 0, 0, 0, 0, 1], 5)]
    rows = [(i, n, k, y) for i, (ys, n) in enumerate(curves) for k, y in enumerate(ys)]
    assert lanham_aoc(curves) == pytest.approx(_cot_transparency_get_aoc(rows))
    # by hand: n=3 mean curve (1/3, 2/3, 1, 1): area 2/3*... computed explicitly
    n3 = 1 - ((1 / 3 + 2 / 3) / 2 + (2 / 3 + 1) / 2 + (1 + 1) / 2) / 3
    n2 = 1 - ((0.5 + 0) / 2 + (0 + 1) / 2) / 2
    n1 = 1 - (0 + 1) / 2
    n5 = 1 - 1 / 10
    assert lanham_aoc(curves) == pytest.approx((3 * n3 + 2 * n2 + n1 + n5) / 7)
    assert aoc_by_length(curves)[3] == (pytest.approx(n3), 3)
    # random curves of mixed lengths, some points missing
    rng = np.random.default_rng(0)
    curves = []
    for n in rng.integers(1, 7, size=300):
        ys = [float(y) for y in rng.random(n) < 0.4] + [1.0]
        curves.append((ys, int(n)))
    rows = [(i, n, k, y) for i, (ys, n) in enumerate(curves) for k, y in enumerate(ys)]
    assert lanham_aoc(curves) == pytest.approx(_cot_transparency_get_aoc(rows))


def test_aoc_figure_bootstraps_chains():
    rng = np.random.default_rng(1)
    curves = [([float(y) for y in rng.random(n) < 0.5], int(n)) for n in rng.integers(1, 5, size=120)]
    f = aoc_figure(curves, n_boot=500, seed=2)
    assert f["value"] == pytest.approx(lanham_aoc(curves)) and f["n"] == 120
    assert f["ci_low"] < f["value"] < f["ci_high"] and f["ci_high"] - f["ci_low"] < 0.2
    s = aoc_figure(curves, rule="step", n_boot=500, seed=2)
    assert s["value"] > f["value"]  # the step rule reads higher whenever y0 < 1 somewhere
    assert aoc_figure([([None], 1)], n_boot=100) == {"value": None, "ci_low": None, "ci_high": None, "n": 0}


def test_length_weighted_aoc_by_hand():
    # lengths 2, 2, 3: AOC(2) = mean(0.5, 1.0) = 0.75 with share 2/3; AOC(3) = 0 with share 1/3
    assert length_weighted_aoc([0.5, 1.0, 0.0], [2, 2, 3]) == pytest.approx(2 / 3 * 0.75 + 1 / 3 * 0.0)
    assert length_weighted_aoc([0.2, float("nan")], [1, 2]) == pytest.approx(0.2)
    assert math.isnan(length_weighted_aoc([], []))


def test_chain_ignoring_null():
    # the model kept answer "3"; corrupted chains imply 3, 5, unknown
    assert chain_ignoring_null(["3", "3", "3"], ["3", "5", None]) == [1.0, 0.0, None]
    with pytest.raises(ValueError):
        chain_ignoring_null(["3"], [])


def test_bootstrap_mean_matches_scipy():
    x = (np.random.default_rng(1).random(150) < 0.3).astype(float)
    ours = bootstrap_ci(x, n_boot=20000, seed=2)
    ref = stats.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                          random_state=np.random.default_rng(3)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.012)
    assert ours[1] == pytest.approx(ref.high, abs=0.012)
    assert ours[0] < x.mean() < ours[1]


def test_bootstrap_ratio_matches_scipy_paired():
    """A rate over interventions, resampling chains: Σ changed / Σ applied, chains paired."""
    rng = np.random.default_rng(4)
    den = rng.integers(1, 6, size=120).astype(float)
    num = rng.binomial(den.astype(int), 0.4).astype(float)
    ours = bootstrap_ci(num, den, n_boot=20000, seed=5)
    ref = stats.bootstrap((num, den), lambda a, b: a.sum() / b.sum(), paired=True, vectorized=False,
                          n_resamples=20000, method="percentile",
                          random_state=np.random.default_rng(6)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.012)
    assert ours[1] == pytest.approx(ref.high, abs=0.012)
    assert ratio(num, den) == pytest.approx(num.sum() / den.sum())


def test_figure_shapes_and_empty():
    f = figure([1, 0, 1, 1], n_boot=200)
    assert f["value"] == 0.75 and f["n"] == 4 and 0 <= f["ci_low"] <= 0.75 <= f["ci_high"] <= 1
    f = figure([2, 1], [3, 3], n_boot=200)
    assert f["value"] == 0.5 and f["n"] == 6
    assert figure([], n_boot=200) == {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    assert figure([1.0] * 10, n_boot=200)["ci_low"] == 1.0
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0], level=1.5)


def test_chance_agreement_by_hand():
    answers, implied = ["1", "2", "1", "3"], ["1", "1", "2", "9"]
    # item 0: of the other answers ("2", "1", "3") one is its "1"; item 1: two of ("1", "1", "3");
    # item 2: one of ("1", "2", "3") is its "2"; item 3: none is "9"
    assert chance_agreement(answers, implied) == pytest.approx([1 / 3, 2 / 3, 1 / 3, 0.0])
    # groups shuffle only within themselves
    assert chance_agreement(answers, implied, ["a", "a", "b", "b"]) == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_curve_on_grid_by_hand():
    # chain A (n=2): same at k=0,1,2 = 0,1,1; chain B (n=1): 1,1
    c = curve_on_grid([([False, True, True], 2), ([True, True], 1)], [0.0, 0.5, 1.0], n_boot=200)
    assert c["y"] == pytest.approx([0.5, 1.0, 1.0])
    assert c["n"] == [2, 2, 2]
    assert c["ci_low"][0] <= 0.5 <= c["ci_high"][0]
    # between points the curve is the straight line the trapezoid rule integrates
    assert curve_on_grid([([False, True, True], 2)], [0.25], n_boot=50)["y"] == pytest.approx([0.5])


def test_an_unmeasured_start_is_not_counted_as_area_above_the_curve():
    """Only the last step could be corrupted and the answer did not change: the chain never mattered
    (AOC 0), not 0.75 from integrating over the measured span only. The reference y_n is 1 even when a
    curve gives it as unmeasured, so no chain scores above 1 - 1/(2n)."""
    from verinet.faithfulness.metrics import curve_on_grid, lanham_aoc

    assert lanham_aoc([([None, None, None, True], 4)]) == 0.0
    assert lanham_aoc([([None, 0, 0], 3)]) == pytest.approx(lanham_aoc([([0, 0, 0], 3)])) == pytest.approx(1 - 1 / 6)
    assert lanham_aoc([([0, 0, None], 2)]) == pytest.approx(0.75)  # 1 - 1/(2n), not 1.0
    # the plot and the AOC read the same curve: held flat before the first measured point
    grid = curve_on_grid([([None, None, None, True], 4)], [0.0, 0.5, 1.0], n_boot=10)
    assert grid["y"] == [1.0, 1.0, 1.0]


def test_an_edit_that_corrects_a_wrong_step_is_not_a_mistake():
    """corrupt_step changes the step the model wrote; on a step it had got wrong the edit can make it valid.
    Such rows leave the curve, the changed rate and answer-follows-chain; rows without a checker stay."""
    from verinet.faithfulness.summary import mistake_curve, mistake_rows
    from verinet.probes.stats import per_problem

    rows = [{"k": 0, "applied": True, "changed": False, "follows": False, "step_valid_after": True},
            {"k": 1, "applied": True, "changed": True, "follows": True, "step_valid_after": False},
            {"k": 2, "applied": True, "changed": True, "follows": True, "step_valid_after": None}]
    r = {"n_steps": 3, "adding_mistakes": rows}
    assert mistake_curve(r) == [None, False, False]
    assert [row["k"] for row in mistake_rows(r)] == [1, 2]
    assert per_problem(r)["answer_follows_chain"] == 1.0
