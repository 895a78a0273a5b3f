"""Answer selection over the member chains of one problem.

Rules:

* ``majority`` -- the most common answer; ties go to the answer with the highest chain score,
  then to the lexicographically smallest;
* ``weighted`` -- verified-weighted vote: each chain's answer counts with its chain score
  (:func:`verinet.graph.propagate.chain_score`); ties go to the larger count, then the
  lexicographically smallest answer;
* ``best``     -- the answer of the best-supported chain; ties go to the lexicographically
  smallest answer.

*Accepted* chains are those whose answer equals the selected one -- for ``weighted`` and
``best`` only those whose score is also ``>= threshold`` (default 0.5): the vote may pick an
answer that no chain verifies well, and then no chain is accepted although ``answer`` is still
reported. (:func:`verinet.graph.pipeline.verify_problem` accepts by earliest error instead unless
it is given an ``accept_threshold``: a chain score is a product over the chain, which falls with
its length even when every step passes.) Chains without an answer never vote. Answers are normalised with the family's
``normalize_answer`` when a family is given, else stripped of surrounding blanks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from verinet.schema import Chain

Rule = Literal["majority", "weighted", "best"]
RULES: tuple[str, ...] = ("majority", "weighted", "best")


@dataclass
class Selection:
    answer: str | None
    accepted: list[str]
    table: dict[str, dict[str, Any]] = field(default_factory=dict)
    """answer -> {"count", "weight" (sum of scores), "best" (max score), "chains" (ids)}"""
    rule: str = "weighted"


def normalize(answer: str | None, family: Any = None) -> str | None:
    """The family's normal form of ``answer`` (``family`` is a TaskFamily or a family name)."""
    if answer is None:
        return None
    if family is not None:
        if isinstance(family, str):
            from verinet.tasks import get_family

            family = get_family(family)
        return family.normalize_answer(answer)
    return answer.strip()


def select_answer(chains: Sequence[Chain], scores: Mapping[str, float] | None = None, rule: Rule = "weighted",
                  *, threshold: float = 0.5, family: Any = None) -> Selection:
    """Pick the problem's answer from its chains; ``scores`` maps chain id -> chain score (0 if absent)."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose one of {list(RULES)}")
    scores = dict(scores or {})
    table: dict[str, dict[str, Any]] = {}
    norm: dict[str, str] = {}
    for c in chains:
        a = normalize(c.answer, family)
        if a is None:
            continue
        norm[c.id] = a
        s = float(scores.get(c.id, 0.0))
        row = table.setdefault(a, {"count": 0, "weight": 0.0, "best": float("-inf"), "chains": []})
        row["count"] += 1
        row["weight"] += s
        row["best"] = max(row["best"], s)
        row["chains"].append(c.id)
    if not table:
        return Selection(None, [], {}, rule)
    if rule == "majority":
        answer = min(table, key=lambda a: (-table[a]["count"], -table[a]["best"], a))
    elif rule == "weighted":
        answer = min(table, key=lambda a: (-table[a]["weight"], -table[a]["count"], a))
    else:
        answer = min(table, key=lambda a: (-table[a]["best"], a))
    if rule == "majority":
        accepted = [cid for cid in table[answer]["chains"]]
    else:
        accepted = [cid for cid in table[answer]["chains"] if float(scores.get(cid, 0.0)) >= threshold]
    return Selection(answer, accepted, table, rule)


__all__ = ["RULES", "Rule", "Selection", "normalize", "select_answer"]
