"""Earliest-error metrics (ProcessBench, arXiv:2412.06559) over plain data.

A chain's label is the index of its first wrong line (steps, then the answer line at index
``len(steps)``) or -1. A verifier's prediction is the first line it scores below a threshold.
acc_err is the accuracy on erroneous chains, acc_corr on correct ones, F1 their harmonic mean.
The threshold is chosen on a labelled dev split, as ProcessBench does for process reward models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

#: thresholds tried on a dev split: a log-spaced low end for likelihood scores (the probability
#: of a step's least likely token, which sits far below 0.05 at real errors), then steps of 0.05
DEFAULT_GRID: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02) + tuple(
    round(0.05 * i, 2) for i in range(1, 20))


def first_below(p_valid: Sequence[float], threshold: float) -> int:
    """Index of the first value below ``threshold``, or -1."""
    return next((i for i, p in enumerate(p_valid) if p < threshold), -1)


def earliest_error_f1(predicted: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """ProcessBench's metric: accuracy on erroneous chains (label != -1, prediction must equal the
    label), accuracy on correct chains (prediction must be -1), and their harmonic mean.

    An accuracy over no chains is nan, and so is F1 then; F1 is 0 when both accuracies are 0.
    """
    if len(predicted) != len(labels):
        raise ValueError(f"predicted has {len(predicted)} entries but labels has {len(labels)}")
    err = [(p, y) for p, y in zip(predicted, labels) if y != -1]
    corr = [p for p, y in zip(predicted, labels) if y == -1]
    acc_err = sum(p == y for p, y in err) / len(err) if err else math.nan
    acc_corr = sum(p == -1 for p in corr) / len(corr) if corr else math.nan
    if math.isnan(acc_err) or math.isnan(acc_corr):
        f1 = math.nan
    elif acc_err + acc_corr == 0:
        f1 = 0.0
    else:
        f1 = 2 * acc_err * acc_corr / (acc_err + acc_corr)
    return {"acc_err": acc_err, "acc_corr": acc_corr, "f1": f1, "n_err": len(err), "n_corr": len(corr)}


DevItem = tuple[Sequence[float], int]
"""(p_valid of each item in chain order -- steps, then the answer line --, labelled first error).
For a chain without answer line append 0.0 so that the missing answer counts as the error."""


def threshold_curve(dev_items: Iterable[DevItem], grid: Sequence[float] = DEFAULT_GRID
                    ) -> list[tuple[float, dict[str, float]]]:
    """Earliest-error F1 (and its parts) at each threshold of ``grid``."""
    items = list(dev_items)
    labels = [y for _, y in items]
    return [(float(t), earliest_error_f1([first_below(ps, t) for ps, _ in items], labels)) for t in grid]


def choose_threshold(dev_items: Iterable[DevItem], grid: Sequence[float] = DEFAULT_GRID) -> float:
    """The threshold of ``grid`` that maximises earliest-error F1 on a dev split (ProcessBench's
    recipe for PRMs). Ties go to the threshold closest to 0.5, then to the smaller one.

    Raises ValueError when the dev split lacks erroneous or correct chains (F1 is undefined).
    """
    items = list(dev_items)
    if not grid:
        raise ValueError("choose_threshold: empty grid")
    labels = [y for _, y in items]
    if not any(y == -1 for y in labels) or not any(y != -1 for y in labels):
        raise ValueError(
            "choose_threshold: the dev split needs both correct (label -1) and erroneous chains; "
            f"got {sum(y == -1 for y in labels)} correct and {sum(y != -1 for y in labels)} erroneous"
        )
    curve = threshold_curve(items, grid)
    best = max(curve, key=lambda tf: (tf[1]["f1"], -abs(tf[0] - 0.5), -tf[0]))
    return best[0]


