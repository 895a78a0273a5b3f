"""Agreement statistics against statsmodels and krippendorff; degenerate inputs."""

import krippendorff
import numpy as np
import pytest
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from tests.graph.helpers import chain, verdicts_for
from verinet.graph.aggregate import dawid_skene
from verinet.graph.agreement import (agreement, agreement_from_verdicts, fleiss, krippendorff_alpha,
                                     pairwise_agreement)

# 6 items x 3 verifiers, binary
TABLE = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1], [0, 1, 0]])


def as_votes(table, names=("a", "b", "c")):
    return {i: {n: float(x) for n, x in zip(names, row) if not np.isnan(x)} for i, row in enumerate(table)}


def test_fleiss_matches_statsmodels():
    votes = as_votes(TABLE)
    k, n_items, m = fleiss(votes)
    want = fleiss_kappa(aggregate_raters(TABLE)[0])
    assert (n_items, m) == (6, 3) and k == pytest.approx(want)
    # by hand: P_bar = (1 + 1/3 + 1 + 1/3 + 1 + 1/3)/6 = 2/3; p(1) = 10/18 -> P_e = 41/81;
    # kappa = (2/3 - 41/81) / (1 - 41/81) = 13/40
    assert k == pytest.approx(13 / 40)


def test_alpha_matches_krippendorff_with_missing():
    t = TABLE.astype(float)
    t[0, 2] = np.nan
    t[3, 0] = np.nan
    votes = as_votes(t)
    want = krippendorff.alpha(reliability_data=t.T, level_of_measurement="nominal")
    assert krippendorff_alpha(votes) == pytest.approx(want)
    # Fleiss uses only the 4 items all three rated
    k, n_items, m = fleiss(votes)
    keep = [1, 2, 4, 5]
    assert (n_items, m) == (4, 3) and k == pytest.approx(fleiss_kappa(aggregate_raters(TABLE[keep])[0]))


def test_pairwise_and_consensus():
    votes = as_votes(TABLE)
    # pairs per item: 3; agreeing pairs: 3,1,3,1,3,1 -> 12/18
    assert pairwise_agreement(votes) == pytest.approx(12 / 18)
    rep = agreement(votes)
    # a vs majority of (b, c): items 0..5 others = (1,1),(1,0)tie,(0,0),(0,0),(1,1),(1,0)tie
    assert rep.verifiers["a"].consensus == pytest.approx(3 / 4)
    assert rep.verifiers["a"].consensus_sensitivity == 1.0  # said valid both times the others did
    assert rep.verifiers["a"].consensus_specificity == pytest.approx(1 / 2)
    assert rep.verifiers["a"].sensitivity is None
    flat = rep.flat()
    assert flat["pairwise"] == pytest.approx(12 / 18) and flat["consensus/a"] == pytest.approx(0.75)


def test_reliabilities_from_dawid_skene():
    votes = as_votes(TABLE)
    fit = dawid_skene(votes)
    rep = agreement(votes, fit.table)
    assert rep.verifiers["b"].sensitivity == fit.table.verifiers["b"].sensitivity


@pytest.mark.parametrize("votes", [
    {},  # nothing
    {0: {"a": 1.0}},  # one verifier, one item
    {i: {"a": 1.0} for i in range(5)},  # one verifier
    {0: {"a": 1.0, "b": 1.0}},  # one item
    {i: {"a": 1.0, "b": 1.0, "c": 1.0} for i in range(4)},  # all identical
    {0: {"a": 1.0}, 1: {"b": 0.0}},  # nobody shares an item
    {0: {"a": 1.0, "b": 0.0}},  # one item, disagreement
])
def test_degenerate_inputs_do_not_raise(votes):
    rep = agreement(votes)
    flat = rep.flat()
    assert all(v is None or np.isfinite(v) for v in flat.values())
    if len({x for per in votes.values() for x in per.values()}) < 2:
        assert rep.krippendorff_alpha is None and rep.fleiss_kappa is None


def test_from_verdicts():
    c = chain("c", 2)
    vs = verdicts_for(c, [1, 1, 0], "a") + verdicts_for(c, [1, 0, 0], "b")
    rep = agreement_from_verdicts([c], vs)
    assert rep.n_items == 3 and rep.pairwise == pytest.approx(2 / 3)


def test_a_verifiers_fitted_cutoff_decides_its_votes():
    # a likelihood verifier (valid steps 0.1, invalid 0.001) ranks exactly as a token verifier (0.9 / 0.1):
    # cut at 0.5 they disagree on every valid step; cut where the fit says its votes turn, they agree
    ok = [True, False, True, True, False, True]
    votes = {i: {"lik": 0.1 if v else 0.001, "tok": 0.9 if v else 0.1} for i, v in enumerate(ok)}
    assert agreement(votes).pairwise == pytest.approx(2 / 6)
    fit = dawid_skene(votes, cutoffs={"lik": 0.01})
    rep = agreement(votes, fit.table)
    assert rep.pairwise == 1.0 and rep.krippendorff_alpha == pytest.approx(1.0)
    assert rep.fleiss_kappa == pytest.approx(1.0) and rep.verifiers["lik"].consensus == 1.0
