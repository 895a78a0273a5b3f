"""Agreement among verifiers: do they see the same errors?

Every statistic works on binary verdicts (``P(valid) >= 0.5`` means "valid"), one per verifier
and item (repeated verdicts are averaged first). Items are (chain id, step index) pairs; an item
counts only where at least two verifiers rated it.

* ``pairwise``           -- share of agreeing verifier pairs, pooled over items;
* ``fleiss_kappa``       -- Fleiss' kappa (statsmodels) on the items that have the most common
  number of raters (>= 2): Fleiss needs an equal number of raters per item, not the same raters,
  and in the ``all_pairs`` topology no item is rated by *every* verifier (authors do not verify
  themselves), so "items rated by all" would be empty;
* ``krippendorff_alpha`` -- Krippendorff's alpha (krippendorff, nominal), missing ratings as nan;
* per verifier: ``consensus`` -- share of its verdicts equal to the majority of the *other*
  verifiers on the item (ties among the others skipped); ``consensus_sensitivity`` and
  ``consensus_specificity`` -- the same split by what the others' majority said (valid /
  invalid), a label-free reliability estimate; and ``sensitivity``/``specificity``/``accuracy``
  from a Dawid-Skene table when one is given.

Undefined values (one verifier, no shared item, all verdicts identical so that chance agreement
is 1) are ``None``, never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from verinet.graph.aggregate import ReliabilityTable
from verinet.graph.build import collect_ratings
from verinet.schema import Chain, Verdict

Votes = Mapping[Hashable, Mapping[str, float]]
"""item -> {verifier: P(valid)}"""


@dataclass
class VerifierAgreement:
    n_items: int
    consensus: float | None = None
    consensus_sensitivity: float | None = None
    consensus_specificity: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    accuracy: float | None = None


@dataclass
class AgreementReport:
    n_verifiers: int
    n_items: int  # items rated by >= 2 verifiers
    pairwise: float | None = None
    fleiss_kappa: float | None = None
    fleiss_items: int = 0
    fleiss_raters: int = 0
    krippendorff_alpha: float | None = None
    verifiers: dict[str, VerifierAgreement] = field(default_factory=dict)

    def flat(self) -> dict[str, float | None]:
        """A flat ``name -> number`` dict (VerificationReport.agreement); per verifier ``key/verifier``."""
        out: dict[str, float | None] = {
            "n_verifiers": float(self.n_verifiers), "n_items": float(self.n_items), "pairwise": self.pairwise,
            "fleiss_kappa": self.fleiss_kappa, "fleiss_items": float(self.fleiss_items),
            "krippendorff_alpha": self.krippendorff_alpha,
        }
        for v, a in self.verifiers.items():
            for key in ("consensus", "consensus_sensitivity", "consensus_specificity", "sensitivity",
                        "specificity", "accuracy"):
                out[f"{key}/{v}"] = getattr(a, key)
        return out


Cutoffs = Mapping[str, float] | None


def binarize(votes: Votes, threshold: float = 0.5, cutoffs: Cutoffs = None) -> dict[Hashable, dict[str, int]]:
    """A vote of "valid" (1) where P(valid) >= the verifier's cutoff (``cutoffs``, else ``threshold``): a
    likelihood verifier scores right steps far below 0.5, and its fitted cutoff (``Reliability.cutoff``)
    is where its votes turn, as in the Dawid-Skene fit."""
    cut = cutoffs or {}
    return {it: {v: int(p >= cut.get(v, threshold)) for v, p in per.items()} for it, per in votes.items()}


def pairwise_agreement(votes: Votes, cutoffs: Cutoffs = None) -> float | None:
    """Share of agreeing pairs of verdicts on the same item, over all items and pairs; None if no pair."""
    agree = pairs = 0
    for per in binarize(votes, cutoffs=cutoffs).values():
        k = len(per)
        ones = sum(per.values())
        agree += ones * (ones - 1) // 2 + (k - ones) * (k - ones - 1) // 2
        pairs += k * (k - 1) // 2
    return agree / pairs if pairs else None


def fleiss(votes: Votes, cutoffs: Cutoffs = None) -> tuple[float | None, int, int]:
    """(Fleiss' kappa, items used, raters per item) on the items with the most common rater count >= 2."""
    b = binarize(votes, cutoffs=cutoffs)
    counts = [len(per) for per in b.values() if len(per) >= 2]
    if not counts:
        return None, 0, 0
    m = max(set(counts), key=lambda c: (counts.count(c), c))
    rows = [list(per.values()) for per in b.values() if len(per) == m]
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    table, _ = aggregate_raters(np.asarray(rows), n_cat=2)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            k = float(fleiss_kappa(table, method="fleiss"))
        except (ZeroDivisionError, ValueError, FloatingPointError):
            k = math.nan
    return (None if not math.isfinite(k) else k), len(rows), m


def krippendorff_alpha(votes: Votes, verifiers: Sequence[str] | None = None,
                       cutoffs: Cutoffs = None) -> float | None:
    """Nominal Krippendorff's alpha over all items rated by >= 2 verifiers (missing = nan)."""
    b = {it: per for it, per in binarize(votes, cutoffs=cutoffs).items() if len(per) >= 2}
    if not b:
        return None
    if verifiers is None:
        verifiers = list(dict.fromkeys(v for per in b.values() for v in per))
    names = list(verifiers)
    if len(names) < 2 or len({x for per in b.values() for x in per.values()}) < 2:
        return None  # one coder, or one value everywhere: expected disagreement is 0, alpha undefined
    data = np.full((len(names), len(b)), np.nan)
    row = {v: i for i, v in enumerate(names)}
    for j, per in enumerate(b.values()):
        for v, x in per.items():
            if v in row:
                data[row[v], j] = x
    import krippendorff

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            a = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal",
                                         value_domain=[0.0, 1.0]))
        except (ValueError, ZeroDivisionError):
            return None
    return a if math.isfinite(a) else None


def verifier_agreement(votes: Votes,
                       reliabilities: ReliabilityTable | None = None) -> dict[str, VerifierAgreement]:
    """Per verifier: agreement with the majority of the others, and DS reliability when given (its
    votes cut where the table's fitted cutoffs say)."""
    b = binarize(votes, cutoffs=cutoffs_of(reliabilities))
    stats: dict[str, list[int]] = {}  # v -> [n_items, n_cons, agree, cons_valid, says_valid|cons_valid,
    #                                        cons_invalid, says_invalid|cons_invalid]
    for per in b.values():
        total = sum(per.values())
        for v, x in per.items():
            s = stats.setdefault(v, [0] * 7)
            s[0] += 1
            k_others = len(per) - 1
            ones = total - x
            if k_others == 0 or 2 * ones == k_others:
                continue
            cons = int(2 * ones > k_others)
            s[1] += 1
            s[2] += int(x == cons)
            if cons:
                s[3] += 1
                s[4] += x
            else:
                s[5] += 1
                s[6] += 1 - x
    out = {}
    for v, s in stats.items():
        r = reliabilities.verifiers.get(v) if reliabilities is not None else None
        out[v] = VerifierAgreement(
            n_items=s[0],
            consensus=s[2] / s[1] if s[1] else None,
            consensus_sensitivity=s[4] / s[3] if s[3] else None,
            consensus_specificity=s[6] / s[5] if s[5] else None,
            sensitivity=r.sensitivity if r else None,
            specificity=r.specificity if r else None,
            accuracy=r.accuracy if r else None,
        )
    return out


def agreement(votes: Votes, reliabilities: ReliabilityTable | None = None) -> AgreementReport:
    """All agreement statistics for ``votes`` (item -> {verifier: P(valid)}); with ``reliabilities``
    each verifier's votes are cut at its fitted cutoff, else at 0.5."""
    names = list(dict.fromkeys(v for per in votes.values() for v in per))
    cut = cutoffs_of(reliabilities)
    kappa, n_f, m_f = fleiss(votes, cutoffs=cut)
    return AgreementReport(
        n_verifiers=len(names),
        n_items=sum(len(per) >= 2 for per in votes.values()),
        pairwise=pairwise_agreement(votes, cutoffs=cut),
        fleiss_kappa=kappa, fleiss_items=n_f, fleiss_raters=m_f,
        krippendorff_alpha=krippendorff_alpha(votes, names, cutoffs=cut),
        verifiers=verifier_agreement(votes, reliabilities),
    )


def cutoffs_of(reliabilities: ReliabilityTable | None) -> dict[str, float] | None:
    """Each verifier's fitted vote cutoff in ``reliabilities`` (None without a table: 0.5 for all)."""
    return {v: r.cutoff for v, r in reliabilities.verifiers.items()} if reliabilities is not None else None


def agreement_from_verdicts(chains: Sequence[Chain], verdicts: Iterable[Verdict],
                            reliabilities: ReliabilityTable | None = None) -> AgreementReport:
    """:func:`agreement` over the verdicts on the steps and answer lines of ``chains``."""
    return agreement(collect_ratings(chains, verdicts).means(), reliabilities)

__all__ = [
    "AgreementReport",
    "VerifierAgreement",
    "agreement",
    "agreement_from_verdicts",
    "binarize",
    "cutoffs_of",
    "fleiss",
    "krippendorff_alpha",
    "pairwise_agreement",
    "verifier_agreement",
]
