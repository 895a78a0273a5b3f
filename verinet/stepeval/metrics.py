"""ProcessBench's metrics with bootstrap intervals over problems, and step AUROC by error kind."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


def _f1(err: float | None, corr: float | None) -> float | None:
    if err is None or corr is None:
        return None
    return 0.0 if err + corr == 0 else 2 * err * corr / (err + corr)


def _point(labels: np.ndarray, hits: np.ndarray) -> tuple[float | None, float | None, float | None]:
    e, c = labels >= 0, labels < 0
    acc_err = float(hits[e].mean()) if e.any() else None
    acc_corr = float(hits[c].mean()) if c.any() else None
    return acc_err, acc_corr, _f1(acc_err, acc_corr)


def earliest_error_scores(labels: Sequence[int], predicted: Sequence[int], problems: Sequence[str], *,
                          n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """acc_err, acc_corr and F1 (ProcessBench) with 95% percentile intervals.

    The bootstrap resamples *problems* (all chains of a drawn problem go in together), since the
    chains of one problem are not independent."""
    if not (len(labels) == len(predicted) == len(problems)) or not labels:
        raise ValueError("labels, predicted and problems must be non-empty and of one length")
    lab = np.asarray(labels)
    hits = np.asarray(predicted) == lab
    acc_err, acc_corr, f1 = _point(lab, hits)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        groups[p].append(i)
    idx = list(groups.values())
    rng = np.random.default_rng(seed)
    draws: list[tuple[float | None, ...]] = []
    for _ in range(n_boot):
        take = np.concatenate([idx[j] for j in rng.integers(0, len(idx), len(idx))])
        draws.append(_point(lab[take], hits[take]))

    def figure(value: float | None, col: int) -> dict[str, Any]:
        xs = [d[col] for d in draws if d[col] is not None]
        lo, hi = (float(np.percentile(xs, 2.5)), float(np.percentile(xs, 97.5))) if xs and value is not None \
            else (None, None)
        return {"value": value, "ci_low": lo, "ci_high": hi}

    return {"acc_err": figure(acc_err, 0), "acc_corr": figure(acc_corr, 1), "f1": figure(f1, 2),
            "n_chains": len(labels), "n_erroneous": int((lab >= 0).sum()), "n_correct": int((lab < 0).sum()),
            "n_problems": len(idx)}


def step_auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """AUROC of P(valid) separating valid steps (``negatives``: gold steps) from wrong ones
    (``positives``: the first wrong step of injected chains): P(a gold step scores higher), ties half."""
    if not positives or not negatives:
        return None
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    greater = (neg[:, None] > pos[None, :]).sum()
    ties = (neg[:, None] == pos[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))
