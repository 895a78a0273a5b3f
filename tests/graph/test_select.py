"""Answer selection rules, tie-breaks and acceptance."""

import pytest

from tests.graph.helpers import chain
from verinet.graph.select import select_answer

CHAINS = [chain("a", 1, answer="7"), chain("b", 1, answer=" 7"), chain("c", 1, answer="3"),
          chain("d", 1, answer=None)]
SCORES = {"a": 0.2, "b": 0.3, "c": 0.9, "d": 1.0}


def test_majority():
    s = select_answer(CHAINS, SCORES, "majority")
    assert s.answer == "7" and s.accepted == ["a", "b"]  # no threshold for majority
    assert s.table["7"]["count"] == 2 and s.table["7"]["weight"] == pytest.approx(0.5)
    assert "d" not in [c for row in s.table.values() for c in row["chains"]]


def test_weighted_and_best():
    s = select_answer(CHAINS, SCORES, "weighted")
    assert s.answer == "3" and s.accepted == ["c"]  # 0.9 > 0.2 + 0.3
    s = select_answer(CHAINS, {**SCORES, "a": 0.7}, "weighted")
    assert s.answer == "7" and s.accepted == ["a"]  # b's 0.3 is under the 0.5 threshold
    s = select_answer(CHAINS, SCORES, "best")
    assert s.answer == "3" and s.accepted == ["c"]
    s = select_answer(CHAINS, SCORES, "best", threshold=0.95)
    assert s.answer == "3" and s.accepted == []


def test_ties_are_deterministic():
    two = [chain("x", 1, answer="5"), chain("y", 1, answer="4")]
    assert select_answer(two, {"x": 0.5, "y": 0.5}, "majority").answer == "4"  # lexicographic
    assert select_answer(two, {"x": 0.6, "y": 0.5}, "majority").answer == "5"  # higher score
    assert select_answer(two, {"x": 0.5, "y": 0.5}, "weighted").answer == "4"
    assert select_answer(two, {}, "best").answer == "4"
    assert select_answer(list(reversed(two)), {}, "best").answer == "4"


def test_family_normalisation_and_empty():
    cs = [chain("a", 1, answer="007"), chain("b", 1, answer="7"), chain("c", 1, answer="3")]
    assert select_answer(cs, {}, "majority").answer == "007"  # a 3-way tie without a family: lexicographic
    assert select_answer(cs, {}, "majority", family="arith").answer == "7"
    none = select_answer([chain("d", 1, answer=None)], {}, "weighted")
    assert (none.answer, none.accepted, none.table) == (None, [], {})
    with pytest.raises(ValueError, match="unknown selection"):
        select_answer(cs, {}, "plurality")
