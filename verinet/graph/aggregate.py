"""Aggregation: many verifiers' P(valid) for one item -> one posterior P(valid).

Per-item rules (each verifier counts once per item: its repeated verdicts are averaged first):

* ``mean``    -- the mean of the verifiers' P(valid);
* ``vote``    -- the share of verifiers with P(valid) >= 0.5 mapped to 1 (majority valid),
  0 (majority invalid) or 0.5 (tie);
* ``logodds`` -- pooled log-odds: sigmoid(mean of logit(p)), p clipped to [1e-4, 1 - 1e-4].

Batch rules (fitted over *all* items of a batch of problems, items = (chain, step) pairs):

* ``dawid_skene`` -- Dawid & Skene (1979) EM for binary labels with one sensitivity
  (P(says valid | valid)) and one specificity (P(says invalid | invalid)) per verifier;
* ``one_coin``    -- the same with a single accuracy per verifier (sensitivity = specificity).

The EM is our own numpy code rather than crowd-kit's ``DawidSkene`` because we need three
things crowd-kit does not offer: the sensitivity/specificity parametrisation reported
per verifier, a warm start of those parameters from a few gold labels (crowd-kit only clamps
gold items' posteriors), and optionally soft verdicts (P(valid) used as a fractional vote).
On hard labels with ``smoothing=0`` it is the same algorithm as crowd-kit's (same majority-vote
initialisation, same updates); ``tests/graph/test_aggregate.py`` checks that their posteriors
agree.

Items without any verdict get ``missing`` (0.5 by default: no evidence either way) for the
per-item rules and the fitted prior for the batch rules.

:func:`aggregate` returns :class:`~verinet.schema.StepPosterior` records whose ``p_supported``
is still the local ``p_valid`` (an upper bound); :func:`verinet.graph.propagate.propagate`
fills in the real value.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from verinet.graph.build import chain_items, collect_ratings
from verinet.schema import Chain, StepPosterior, Verdict

Method = Literal["mean", "vote", "logodds", "dawid_skene", "one_coin"]
METHODS: tuple[str, ...] = ("mean", "vote", "logodds", "dawid_skene", "one_coin")
ITEM_METHODS: tuple[str, ...] = ("mean", "vote", "logodds")
LOGIT_CLIP = 1e-4
_PARAM_CLIP = 1e-6


# ---- per-item pooling ------------------------------------------------------------------------
def pool(ps: Sequence[float], method: str = "mean", missing: float = 0.5) -> float:
    """Pool one item's P(valid) values (one per verifier) with ``mean``, ``vote`` or ``logodds``."""
    if method not in ITEM_METHODS:
        raise ValueError(
            f"pool: unknown method {method!r}; choose one of {list(ITEM_METHODS)} "
            "(dawid_skene and one_coin are fitted over a batch: use dawid_skene())"
        )
    if not len(ps):
        return missing
    if method == "mean":
        return float(sum(ps) / len(ps))
    if method == "vote":
        yes = sum(p >= 0.5 for p in ps)
        no = len(ps) - yes
        return 1.0 if yes > no else 0.0 if no > yes else 0.5
    z = [math.log(min(max(p, LOGIT_CLIP), 1 - LOGIT_CLIP) / (1 - min(max(p, LOGIT_CLIP), 1 - LOGIT_CLIP)))
         for p in ps]
    return 1.0 / (1.0 + math.exp(-sum(z) / len(z)))


# ---- Dawid-Skene -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reliability:
    """One verifier's estimated reliability.

    ``accuracy`` is the expected share of its verdicts that match the truth on the items it
    rated, under the fitted posteriors.
    """

    sensitivity: float  # P(says valid | valid)
    specificity: float  # P(says invalid | invalid)
    accuracy: float
    n_items: int
    cutoff: float = 0.5  # its P(valid) >= cutoff is a "valid" vote (see fit_cutoffs)


@dataclass
class ReliabilityTable:
    """Fitted Dawid-Skene parameters: the prior P(valid) and each verifier's reliability."""

    method: Literal["dawid_skene", "one_coin"]
    prior: float
    verifiers: dict[str, Reliability]
    soft: bool = False
    n_items: int = 0
    n_iter: int = 0
    converged: bool = False
    log_likelihood: float = float("nan")

    def posterior(self, votes: Mapping[str, float]) -> float:
        """P(valid) of one item from its verifiers' P(valid), with the parameters held fixed.

        Verifiers the table does not know are ignored; with none left the prior is returned.
        """
        la, lb = math.log(_clip(self.prior)), math.log(_clip(1 - self.prior))
        for name, p in votes.items():
            r = self.verifiers.get(name)
            if r is None:
                continue
            y = float(p) if self.soft else float(p >= r.cutoff)
            se, sp = _clip(r.sensitivity), _clip(r.specificity)
            la += y * math.log(se) + (1 - y) * math.log(1 - se)
            lb += y * math.log(1 - sp) + (1 - y) * math.log(sp)
        return _sigmoid(la - lb)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per verifier, for printing or JSON."""
        return [{"verifier": v, "sensitivity": r.sensitivity, "specificity": r.specificity,
                 "accuracy": r.accuracy, "n_items": r.n_items, "cutoff": r.cutoff} for v, r in self.verifiers.items()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: what :meth:`from_dict` reads back (a run's ``reliabilities.json``)."""
        ll = self.log_likelihood
        return {"method": self.method, "prior": self.prior, "soft": self.soft, "n_items": self.n_items,
                "n_iter": self.n_iter, "converged": self.converged, "log_likelihood": None if ll != ll else ll,
                "verifiers": self.rows()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReliabilityTable:
        """A table written by :meth:`to_dict`; a malformed one is a ``ValueError`` that says what is wrong."""
        try:
            method = d["method"]
            if method not in ("dawid_skene", "one_coin"):
                raise ValueError(f"method must be dawid_skene or one_coin, got {method!r}")
            prior = float(d["prior"])
            verifiers = {}
            for row in d["verifiers"]:
                r = Reliability(float(row["sensitivity"]), float(row["specificity"]), float(row["accuracy"]),
                                int(row["n_items"]), float(row.get("cutoff", 0.5)))
                if not all(0.0 <= x <= 1.0 for x in (r.sensitivity, r.specificity, prior, r.cutoff)):
                    raise ValueError(f"verifier {row['verifier']!r}: probabilities must lie in [0, 1]")
                verifiers[str(row["verifier"])] = r
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a reliability table (method, prior, verifiers: [{{verifier, sensitivity, "
                             f"specificity, accuracy, n_items}}]): missing or bad {e}") from None
        if not verifiers:
            raise ValueError("a reliability table needs at least one verifier")
        ll = d.get("log_likelihood")
        return cls(method, prior, verifiers, bool(d.get("soft", False)), int(d.get("n_items", 0)),
                   int(d.get("n_iter", 0)), bool(d.get("converged", False)),
                   float("nan") if ll is None else float(ll))


@dataclass
class DSResult:
    posteriors: dict[Hashable, float]
    table: ReliabilityTable
    history: list[float] = field(default_factory=list)  # log-likelihood per iteration


def dawid_skene(
    ratings: Mapping[Hashable, Mapping[str, float]],
    *,
    one_coin: bool = False,
    gold: Mapping[Hashable, bool] | None = None,
    soft: bool = False,
    smoothing: float = 0.5,
    max_iter: int = 500,
    tol: float = 1e-8,
    clamp_gold: bool = True,
    cutoffs: Mapping[str, float] | None = None,
) -> DSResult:
    """Fit binary Dawid-Skene (or one-coin) by EM without labels; return posteriors and reliabilities.

    ``ratings`` maps each item to ``{verifier: P(valid)}``. With ``soft=False`` (the classic
    model) each P(valid) becomes a vote ``p >= 0.5``; with ``soft=True`` it is used as a
    fractional vote. ``smoothing`` adds that many pseudo-counts to each cell of every
    confusion estimate (0 reproduces crowd-kit; the default keeps a verifier that was never
    wrong on a small batch off exactly 0/1).

    ``gold`` (item -> valid) warm-starts EM: sensitivities, specificities and the prior are first
    estimated from the gold items alone (with at least Laplace smoothing), falling back to the
    majority-vote start for a parameter no gold item informs; with ``clamp_gold`` the gold
    items' posteriors stay fixed at their labels throughout. Without gold, EM starts from the
    majority-vote shares, as crowd-kit does, which assumes verifiers are better than chance
    on average.

    ``cutoffs`` (verifier -> P(valid) cutoff, default 0.5) say where each verifier's vote turns
    "valid": a likelihood verifier scores right steps far below 0.5, so its cutoff is fitted on
    labelled items (:func:`fit_cutoffs`). The table records them; its posteriors use them.
    """
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    items = list(ratings)
    workers: list[str] = list(dict.fromkeys(w for it in items for w in ratings[it]))
    method: Literal["dawid_skene", "one_coin"] = "one_coin" if one_coin else "dawid_skene"
    gold = dict(gold or {})
    if not items or not workers:
        prior = float(np.mean([float(v) for v in gold.values()])) if gold else 0.5
        return DSResult({it: prior for it in items}, ReliabilityTable(method, prior, {}, soft))
    w_index = {w: j for j, w in enumerate(workers)}
    cut = dict(cutoffs or {})
    oi, ow, oy = [], [], []
    for i, it in enumerate(items):
        for w, p in ratings[it].items():
            oi.append(i)
            ow.append(w_index[w])
            oy.append(float(p) if soft else float(p >= cut.get(w, 0.5)))
    oi_a, ow_a, y = np.asarray(oi), np.asarray(ow), np.asarray(oy)
    n_items, n_workers = len(items), len(workers)
    rated = np.bincount(oi_a, minlength=n_items) > 0
    n_per_worker = np.bincount(ow_a, minlength=n_workers)

    g_idx = np.asarray([i for i, it in enumerate(items) if it in gold], dtype=int)
    g_val = np.asarray([float(bool(gold[items[i]])) for i in g_idx])

    def m_step(q: np.ndarray, mask: np.ndarray | None = None, s: float = smoothing):
        qo = q[oi_a]
        wts = np.ones_like(qo) if mask is None else mask[oi_a].astype(float)
        if one_coin:
            hit = np.bincount(ow_a, wts * (qo * y + (1 - qo) * (1 - y)), n_workers)
            tot = np.bincount(ow_a, wts, n_workers)
            acc = (hit + s) / np.maximum(tot + 2 * s, 1e-300)
            se = sp = acc
            se_n = sp_n = tot
        else:
            se_n = np.bincount(ow_a, wts * qo, n_workers)
            sp_n = np.bincount(ow_a, wts * (1 - qo), n_workers)
            se = (np.bincount(ow_a, wts * qo * y, n_workers) + s) / np.maximum(se_n + 2 * s, 1e-300)
            sp_hit = np.bincount(ow_a, wts * (1 - qo) * (1 - y), n_workers)
            sp = (sp_hit + s) / np.maximum(sp_n + 2 * s, 1e-300)
        qm = q if mask is None else q[mask]
        prior = float(qm.mean()) if qm.size else 0.5
        return np.clip(se, _PARAM_CLIP, 1 - _PARAM_CLIP), np.clip(sp, _PARAM_CLIP, 1 - _PARAM_CLIP), \
            float(np.clip(prior, _PARAM_CLIP, 1 - _PARAM_CLIP)), se_n, sp_n

    def e_step(se: np.ndarray, sp: np.ndarray, prior: float) -> tuple[np.ndarray, float]:
        la = np.log(prior) + np.bincount(oi_a, y * np.log(se[ow_a]) + (1 - y) * np.log(1 - se[ow_a]), n_items)
        lb = np.log(1 - prior) + np.bincount(oi_a, y * np.log(1 - sp[ow_a]) + (1 - y) * np.log(sp[ow_a]),
                                             n_items)
        q = 1.0 / (1.0 + np.exp(np.clip(lb - la, -700, 700)))
        ll = float(np.logaddexp(la, lb)[rated].sum())
        if clamp_gold and g_idx.size:
            q[g_idx] = g_val
        return q, ll

    # initialisation: majority-vote shares (unrated items at 0.5, excluded from the prior)
    q = np.full(n_items, 0.5)
    q[rated] = (np.bincount(oi_a, y, n_items) / np.maximum(np.bincount(oi_a, minlength=n_items), 1))[rated]
    se, sp, prior, _, _ = m_step(q, rated)
    if g_idx.size:
        gmask = np.zeros(n_items, dtype=bool)
        gmask[g_idx] = True
        qg = q.copy()
        qg[g_idx] = g_val
        gse, gsp, gprior, gse_n, gsp_n = m_step(qg, gmask, max(smoothing, 1.0))
        if one_coin:
            se = sp = np.where(gse_n > 0, gse, se)
        else:
            se, sp = np.where(gse_n > 0, gse, se), np.where(gsp_n > 0, gsp, sp)
        if 0 < g_val.sum() < g_val.size:
            prior = gprior
        q, _ = e_step(se, sp, prior)
        se, sp, prior, _, _ = m_step(q, rated)

    history: list[float] = []
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        q_new, ll = e_step(se, sp, prior)
        history.append(ll)
        se_new, sp_new, prior_new, _, _ = m_step(q_new, rated)
        delta = max(np.abs(q_new - q).max(), np.abs(se_new - se).max(), np.abs(sp_new - sp).max(),
                    abs(prior_new - prior))
        q, se, sp, prior = q_new, se_new, sp_new, prior_new
        if delta < tol:
            converged = True
            break
    q[~rated] = prior
    if clamp_gold and g_idx.size:
        q[g_idx] = g_val
    qo = q[oi_a]
    acc = np.bincount(ow_a, qo * y + (1 - qo) * (1 - y), n_workers) / np.maximum(n_per_worker, 1)
    table = ReliabilityTable(
        method=method, prior=prior, soft=soft, n_items=int(rated.sum()), n_iter=it, converged=converged,
        log_likelihood=history[-1] if history else float("nan"),
        verifiers={w: Reliability(float(se[j]), float(sp[j]), float(acc[j]), int(n_per_worker[j]),
                                  float(cut.get(w, 0.5))) for j, w in enumerate(workers)},
    )
    return DSResult({it_: float(q[i]) for i, it_ in enumerate(items)}, table, history)


def fit_cutoffs(ratings: Mapping[Hashable, Mapping[str, float]], gold: Mapping[Hashable, bool]
                ) -> dict[str, float]:
    """Per verifier, the P(valid) cutoff that best separates its scores on labelled items (Youden's J:
    sensitivity + specificity - 1, the midpoint between adjacent scores; 0.5 when its items hold one
    class only). A verifier's votes then mean "valid" where its own scores say so."""
    by_w: dict[str, list[tuple[float, bool]]] = {}
    for it, per in ratings.items():
        if it in gold:
            for w, p in per.items():
                by_w.setdefault(w, []).append((float(p), bool(gold[it])))
    out = {}
    for w, rows in by_w.items():
        pos = np.sort([p for p, y in rows if y])
        neg = np.sort([p for p, y in rows if not y])
        if not len(pos) or not len(neg):
            out[w] = 0.5
            continue
        scores = np.unique([p for p, _ in rows])
        cands = np.concatenate([(scores[:-1] + scores[1:]) / 2, [0.5]]) if len(scores) > 1 else np.array([0.5])
        se = 1 - np.searchsorted(pos, cands, side="left") / len(pos)  # share of valid items scored >= cutoff
        sp = np.searchsorted(neg, cands, side="left") / len(neg)  # share of invalid items scored < cutoff
        out[w] = float(cands[int(np.argmax(se + sp))])
    return out


# ---- records ---------------------------------------------------------------------------------
def aggregate(
    chains: Sequence[Chain],
    verdicts: Iterable[Verdict],
    method: Method = "mean",
    *,
    reliabilities: ReliabilityTable | None = None,
    missing: float = 0.5,
) -> list[StepPosterior]:
    """One StepPosterior per step and answer line of every chain, in chain order.

    ``dawid_skene``/``one_coin`` need the parameters fitted over a batch (``reliabilities``, from
    :func:`dawid_skene` or :func:`verinet.graph.pipeline.verify_batch`); the item's posterior is
    then computed with them held fixed. ``n_verdicts`` counts raw verdicts (repeats included).
    ``p_supported`` is the local ``p_valid`` until :func:`verinet.graph.propagate.propagate` runs.
    """
    if method not in METHODS:
        raise ValueError(f"unknown aggregation {method!r}; choose one of {list(METHODS)}")
    if method in ("dawid_skene", "one_coin") and reliabilities is None:
        raise ValueError(
            f"aggregation {method!r} is fitted over a batch of problems: call verify_batch(), or fit "
            "dawid_skene() on the batch and pass its table as reliabilities="
        )
    ratings = collect_ratings(chains, verdicts)
    means, counts = ratings.means(), ratings.counts()
    out = []
    for chain in chains:
        for key in chain_items(chain):
            votes = means.get(key, {})
            if method in ITEM_METHODS:
                p = pool(list(votes.values()), method, missing)
            else:
                assert reliabilities is not None
                p = reliabilities.posterior(votes)
            p = min(max(float(p), 0.0), 1.0)
            out.append(StepPosterior(chain_id=key[0], step_index=key[1], p_valid=p, p_supported=p,
                                     n_verdicts=counts.get(key, 0), method=method))
    return out


def _clip(p: float) -> float:
    return min(max(p, _PARAM_CLIP), 1 - _PARAM_CLIP)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


__all__ = [
    "DSResult",
    "ITEM_METHODS", "fit_cutoffs",
    "METHODS",
    "Method",
    "Reliability",
    "ReliabilityTable",
    "aggregate",
    "dawid_skene",
    "pool",
]
