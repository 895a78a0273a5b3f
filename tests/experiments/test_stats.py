"""Statistics of the comparison against references: McNemar by hand, F1 and its chance level by
hand, paired bootstraps that find a real difference and not a null one."""

import numpy as np
import pytest
from scipy import stats as sst

from verinet.experiments.stats import (
    accuracy_chance, cluster_rate, ee_chance, ee_f1, mcnemar_test, paired_f1, paired_ratio, rate,
)


def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs():
    a = [True] * 30 + [True] * 9 + [False] * 2 + [False] * 9
    b = [True] * 30 + [False] * 9 + [True] * 2 + [False] * 9
    t = mcnemar_test(a, b)
    assert (t["a_only"], t["b_only"], t["both"], t["neither"]) == (9, 2, 30, 9)
    assert t["exact"] and t["p_value"] == pytest.approx(sst.binomtest(2, 11, 0.5).pvalue)
    assert t["diff"] == pytest.approx(7 / 50)
    assert mcnemar_test([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar_test([True], [])


def test_rates_carry_chance_and_intervals():
    r = rate(30, 100, chance=0.25)
    assert r["value"] == 0.3 and r["ci_low"] < 0.3 < r["ci_high"] and r["chance"] == 0.25
    assert rate(0, 0)["value"] is None
    assert accuracy_chance(["1", "1", "2", "3"]) == 0.5
    # steps of one problem move together: the interval of 10 problems x 10 identical steps is wide
    c = cluster_rate([10, 0] * 5, [10, 10] * 5, n_boot=2000)
    assert c["value"] == 0.5 and c["problems"] == 10 and c["ci_high"] - c["ci_low"] > 0.4


def test_ee_f1_by_hand_with_interval_and_chance():
    # (predicted, labelled, positions): 2 erroneous chains (1 found), 2 correct (1 called correct)
    per_problem = [[(1, 1, 3), (-1, -1, 3)], [(0, 2, 3), (2, -1, 3)]]
    f = ee_f1(per_problem, n_boot=200)
    assert f["acc_err"] == 0.5 and f["acc_corr"] == 0.5 and f["f1"] == 0.5
    assert f["chance"] == pytest.approx(0.25)  # uniform over 'none' and 3 positions
    assert f["ci_low"] <= 0.5 <= f["ci_high"]
    none = ee_f1([[(-1, 2, 3)], [(1, 0, 3)]], n_boot=50)
    assert none["f1"] is None and none["n_corr"] == 0 and none["ci_low"] is None  # undefined, said so
    assert ee_chance([(1, 1, 4)]) is None


def test_paired_bootstraps_see_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    good = [[(y, y, 3)] for y in rng.integers(-1, 3, 200)]
    bad = [[(-1 if y != -1 else 0, y, 3)] for (_, y, _), in good]
    t = paired_f1(good, bad, n_boot=500)
    assert t["a"] == 1.0 and t["b"] == 0.0 and t["p_value"] < 0.01 and t["ci_low"] > 0.5
    same = paired_f1(good, good, n_boot=200)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    n = 150
    valid_a = rng.binomial(5, 0.6, n)
    valid_b = rng.binomial(5, 0.6, n)
    t = paired_ratio(valid_a, [5] * n, valid_b, [5] * n, n_boot=1000, seed=1)
    assert t["p_value"] > 0.05 and t["ci_low"] < 0 < t["ci_high"]


def test_own_chains_count_the_answer_line_among_the_positions_a_first_error_can_take():
    """The checker labels a wrong or missing answer with index n_steps, so a 3-step chain has 4 positions and
    the uniform guesser names each of 'none' and them with 1/5 (chance 0.2, not the 0.25 of 3 positions)."""
    from verinet.experiments.summary import own_pairs

    chains = [{"chain_id": "a", "predicted_error": 3, "first_error": 3, "n_steps": 3},
              {"chain_id": "b", "predicted_error": -1, "first_error": -1, "n_steps": 3}]
    r = {"ensemble": {"chains": chains}, "arms": {"weighted": {"predicted": {"a": 3, "b": 0}}}}
    assert own_pairs(r, "ensemble") == [(3, 3, 4), (-1, -1, 4)]
    assert own_pairs(r, "weighted") == [(3, 3, 4), (0, -1, 4)]
    f = ee_f1([own_pairs(r, "ensemble")], n_boot=20)
    assert f["f1"] == 1.0 and f["chance"] == pytest.approx(0.2)


def test_the_verifiers_said_valid_rate_resamples_problems_and_leaves_answer_lines_out():
    """Like the checker's true validity beside it in the report: steps only, interval over problems."""
    from verinet.experiments.summary import agreement_summary

    def record(k, said_valid):  # one chain of 4 steps and an answer line, two verifiers
        ps = [0.9 if said_valid else 0.1] * 4 + [0.1]  # counted, the answer lines would make it 0.4
        return {"ensemble": {"chains": [{"chain_id": f"c{k}", "n_steps": 4, "n_valid": 2}],
                             "verdicts": {f"c{k}": {"a": ps, "b": ps}}}}

    records = [record(k, k % 2 == 0) for k in range(10)]
    ag = agreement_summary(records)
    said = ag["said_valid_rate"]
    assert said["value"] == pytest.approx(0.5)  # answer lines (said the opposite) left out
    assert said["problems"] == 10 and said["ci_high"] - said["ci_low"] > 0.3  # 10 problems, not 80 verdicts
    assert ag["true_validity"]["value"] == pytest.approx(0.5)
