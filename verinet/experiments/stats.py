"""Statistics of the comparison, resampling problems (never steps): rates with intervals, earliest-error F1
with an interval, chance levels, and paired tests of two arms on the same problems.

* Rates over problems (one observation per problem): Wilson intervals.
* Rates over steps or chains: a cluster bootstrap that resamples problems, since the steps of
  one chain (and the chains of one problem) are not independent.
* Earliest-error F1 (ProcessBench): percentile bootstrap over problems.
* Paired tests: McNemar's exact test (statsmodels) for accuracy; a paired bootstrap over
  problems for differences in F1, step validity and AOC, with a two-sided bootstrap p-value.

Pure functions over plain numbers. JSON-ready: nothing here returns NaN (undefined is None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from verinet.faithfulness.metrics import figure
from verinet.graph.propagate import earliest_error_f1

LEVEL = 0.95
Pair = tuple[int | None, int, int]  # (predicted first error, labelled first error, positions in the chain)


def _none(x: float) -> float | None:
    return None if x is None or x != x else float(x)


def rate(successes: int, n: int, chance: float | None = None) -> dict[str, Any]:
    """A proportion over independent units with its 95% Wilson interval (and its chance level)."""
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0, "chance": _none(chance)}
    lo, hi = proportion_confint(successes, n, alpha=1 - LEVEL, method="wilson")
    return {"value": successes / n, "ci_low": float(lo), "ci_high": float(hi), "n": n, "chance": _none(chance)}


def cluster_rate(num: Sequence[float], den: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
                 chance: float | None = None) -> dict[str, Any]:
    """Σ num / Σ den over problems (e.g. valid steps / steps), CI by resampling problems."""
    keep = [(a, b) for a, b in zip(num, den) if b > 0]
    f = figure([a for a, _ in keep], [b for _, b in keep], n_boot=n_boot, seed=seed)
    f["problems"] = len(keep)
    f["chance"] = _none(chance)
    return f


def _f1(pairs: Sequence[Pair]) -> dict[str, Any]:
    ok = [(p, y) for p, y, _ in pairs if p is not None]
    if not ok:
        return {"f1": None, "acc_err": None, "acc_corr": None, "n": 0, "n_err": 0, "n_corr": 0}
    out = earliest_error_f1([p for p, _ in ok], [y for _, y in ok])
    return {"f1": _none(out["f1"]), "acc_err": _none(out["acc_err"]), "acc_corr": _none(out["acc_corr"]),
            "n": len(ok), "n_err": out["n_err"], "n_corr": out["n_corr"]}


def ee_chance(pairs: Sequence[Pair]) -> float | None:
    """F1 of a guesser that names the first error uniformly among "none" and each of a chain's positions."""
    err = [1 / (n + 1) for p, y, n in pairs if p is not None and y != -1]
    corr = [1 / (n + 1) for p, y, n in pairs if p is not None and y == -1]
    if not err or not corr:
        return None
    a, b = float(np.mean(err)), float(np.mean(corr))
    return 2 * a * b / (a + b)


def ee_counts(per_problem: Sequence[Sequence[Pair]]) -> np.ndarray:
    """Per problem: (erroneous chains, of them found exactly, correct chains, of them called correct)."""
    rows = []
    for ps in per_problem:
        ok = [(p, y) for p, y, _ in ps if p is not None]
        rows.append([sum(y != -1 for _, y in ok), sum(y != -1 and p == y for p, y in ok),
                     sum(y == -1 for _, y in ok), sum(y == -1 and p == -1 for p, y in ok)])
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def f1_from_counts(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """F1 for each row of ``weights`` (resample counts per problem); nan where undefined."""
    s = np.atleast_2d(weights) @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = s[:, 1] / s[:, 0], s[:, 3] / s[:, 2]
        f = np.where(a + b > 0, 2 * a * b / (a + b), 0.0)
    return np.where(np.isnan(a) | np.isnan(b), np.nan, f)


def resamples(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_units) counts: how often each unit is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_units, size=(n_boot, n_units))
    w = np.zeros((n_boot, n_units))
    np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)
    return w


def _interval(vals: np.ndarray) -> tuple[float | None, float | None]:
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return None, None
    lo, hi = np.quantile(vals, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return float(lo), float(hi)


def ee_f1(per_problem: Sequence[Sequence[Pair]], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Earliest-error F1 over all chains, with a percentile CI resampling problems, and its chance level.

    F1 is undefined (None) when the chains hold no erroneous or no correct chain: the report says so.
    """
    flat = [x for ps in per_problem for x in ps]
    out = _f1(flat)
    out["chance"] = ee_chance(flat)
    out["ci_low"] = out["ci_high"] = None
    if out["f1"] is not None and len(per_problem) > 1:
        out["ci_low"], out["ci_high"] = _interval(f1_from_counts(resamples(len(per_problem), n_boot, seed),
                                                                 ee_counts(per_problem)))
    return out


def mcnemar_test(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's test of paired correctness (same problems): exact binomial when discordant pairs < 25."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    both = sum(x and y for x, y in zip(a, b))
    a_only = sum(x and not y for x, y in zip(a, b))
    b_only = sum(y and not x for x, y in zip(a, b))
    neither = len(a) - both - a_only - b_only
    out = {"test": "mcnemar", "n": len(a), "a_only": a_only, "b_only": b_only, "both": both, "neither": neither,
           "diff": (sum(map(bool, a)) - sum(map(bool, b))) / len(a) if len(a) else None}
    if a_only + b_only == 0:
        return {**out, "exact": True, "statistic": 0.0, "p_value": 1.0}
    exact = a_only + b_only < 25
    res = mcnemar([[both, a_only], [b_only, neither]], exact=exact, correction=True)
    return {**out, "exact": exact, "statistic": float(res.statistic), "p_value": float(res.pvalue)}


def paired_bootstrap(stat: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], n_units: int, *,
                     n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Difference a - b of a statistic of two arms on the same units (problems), resampled together.

    ``stat(weights)`` returns arrays (a, b), one value per row of ``weights`` (how often each unit
    is drawn). The p-value is two-sided: twice the smaller share of resampled differences on
    either side of 0 (capped at 1).
    """
    a, b = (float(v[0]) for v in stat(np.ones((1, n_units))))
    out: dict[str, Any] = {"test": "paired_bootstrap", "n": n_units, "a": _none(a), "b": _none(b),
                           "diff": None, "ci_low": None, "ci_high": None, "p_value": None, "n_boot": n_boot}
    if a != a or b != b or n_units < 2:
        return out
    xa, xb = stat(resamples(n_units, n_boot, seed))
    d = np.asarray(xa - xb, dtype=float)
    d = d[~np.isnan(d)]
    if not len(d):
        return out
    lo, hi = _interval(d)
    p = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    return {**out, "diff": a - b, "ci_low": lo, "ci_high": hi, "p_value": p}


def paired_ratio(num_a, den_a, num_b, den_b, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of Σnum/Σden of two arms over the same problems (e.g. step validity)."""
    arr = np.asarray([num_a, den_a, num_b, den_b], dtype=float).T

    def stat(w):
        s = np.atleast_2d(w) @ arr
        with np.errstate(invalid="ignore", divide="ignore"):
            return s[:, 0] / s[:, 1], s[:, 2] / s[:, 3]

    return paired_bootstrap(stat, len(arr), n_boot=n_boot, seed=seed)


def paired_f1(per_problem_a, per_problem_b, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap of the earliest-error F1 of two arms on the same problems."""
    ca, cb = ee_counts(per_problem_a), ee_counts(per_problem_b)
    return paired_bootstrap(lambda w: (f1_from_counts(w, ca), f1_from_counts(w, cb)), len(ca), n_boot=n_boot,
                            seed=seed)


def accuracy_chance(answers: Sequence[str]) -> float | None:
    """Accuracy of always giving the most common gold answer (the best constant guess)."""
    if not answers:
        return None
    _, counts = np.unique(np.asarray(answers, dtype=object).astype(str), return_counts=True)
    return float(counts.max() / len(answers))


__all__ = ["accuracy_chance", "cluster_rate", "ee_chance", "ee_counts", "ee_f1", "f1_from_counts", "mcnemar_test",
           "paired_bootstrap", "paired_f1", "paired_ratio", "rate", "resamples"]
