"""Metrics by hand, and the bootstrap against scipy's."""

import math

import numpy as np
import pytest
from scipy import stats

from verinet.faithfulness.metrics import (
    bootstrap_ci, chain_aoc, chance_agreement, curve_area, curve_on_grid, figure, length_weighted_aoc, ratio,
)


def test_chain_curve_area_and_aoc_by_hand():
    # early answering on 3 steps: answers at k = 0, 1, 2 differ, agree, agree; k = 3 is the reference
    assert curve_area([False, True, True, True], n=3) == pytest.approx(2 / 3)
    assert chain_aoc([False, True, True, True], n=3) == pytest.approx(1 / 3)
    # a chain that never matters, and one where every truncation changes the answer
    assert chain_aoc([True] * 5, n=4) == 0.0
    assert chain_aoc([False, False, False, True], n=3) == 1.0
    # adding mistakes: one point per corrupted step; an unmeasured point is left out
    assert chain_aoc([None, False, True]) == pytest.approx(0.5)
    assert math.isnan(chain_aoc([None, None]))


def test_length_weighted_aoc_by_hand():
    # lengths 2, 2, 3: AOC(2) = mean(0.5, 1.0) = 0.75 with share 2/3; AOC(3) = 0 with share 1/3
    assert length_weighted_aoc([0.5, 1.0, 0.0], [2, 2, 3]) == pytest.approx(2 / 3 * 0.75 + 1 / 3 * 0.0)
    assert length_weighted_aoc([0.2, float("nan")], [1, 2]) == pytest.approx(0.2)
    assert math.isnan(length_weighted_aoc([], []))


def test_length_weighting_is_the_aoc_of_each_lengths_mean_curve():
    """DESIGN: AOC of the mean curve per length, weighted by the share of chains of that length."""
    rng = np.random.default_rng(0)
    chains = [rng.random(n + 1) < 0.6 for n in rng.integers(1, 6, size=200)]
    per_chain = [chain_aoc(list(c), n=len(c) - 1) for c in chains]
    lengths = [len(c) - 1 for c in chains]
    by_formula = 0.0
    for n in set(lengths):
        group = np.array([c for c in chains if len(c) - 1 == n], dtype=float)
        mean_curve = group.mean(axis=0)
        by_formula += len(group) / len(chains) * chain_aoc(list(mean_curve), n=n)
    assert length_weighted_aoc(per_chain, lengths) == pytest.approx(by_formula)
    assert length_weighted_aoc(per_chain, lengths) == pytest.approx(np.mean(per_chain))


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
