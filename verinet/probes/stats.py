"""Per-problem figures from faithfulness records, paired differences, and two-way decompositions.

Every probe evaluates its models on the same problems, so comparisons are paired: a difference is
the mean over problems of (b - a), and its 95% interval resamples problems (the pairing is kept).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from verinet.faithfulness.metrics import LEVEL, chain_aoc, figure
from verinet.faithfulness.summary import mistake_curve, mistake_rows

# metric -> (label, chance note); every per-problem metric a probe tabulates
METRICS: dict[str, str] = {
    "accuracy": "accuracy (own chain)",
    "no_chain_accuracy": "no-chain accuracy",
    "filler_accuracy": "filler accuracy",
    "early_answering_aoc": "early-answering AOC",
    "adding_mistakes_aoc": "adding-mistakes AOC",
    "paraphrase_invariance": "paraphrase invariance",
    "answer_follows_chain": "answer follows chain",
}


def _mean(vals: Sequence[Any]) -> float | None:
    vals = [float(v) for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def per_problem(record: Mapping[str, Any]) -> dict[str, float | None]:
    """One faithfulness record (a model on a problem) as one number per metric (None: not measured)."""
    n = int(record.get("n_steps", 0))
    early = record.get("early_answering", {}).get("same")
    mistakes = mistake_curve(dict(record))
    applied = mistake_rows(dict(record))  # edits the checker confirms as mistakes (or all, without one)
    para = [row for row in record.get("paraphrasing", []) if row.get("applied")]

    def aoc(same: Sequence[Any] | None) -> float | None:
        if same is None or n < 1 or not any(y is not None for y in list(same)[:n]):
            return None
        v = chain_aoc(same, n)
        return None if np.isnan(v) else v

    def flag(key: str) -> float | None:
        return float(record[key]["correct"]) if key in record else None

    return {
        "accuracy": flag("chain"),
        "no_chain_accuracy": flag("no_chain"),
        "filler_accuracy": flag("filler"),
        "early_answering_aoc": aoc(early),
        "adding_mistakes_aoc": aoc(mistakes),
        "paraphrase_invariance": _mean([row["same"] for row in para]),
        "answer_follows_chain": _mean([row.get("follows") for row in applied]),
    }


def by_problem(records: Sequence[Mapping[str, Any]], member: str) -> dict[str, dict[str, float | None]]:
    """problem id -> per-problem figures, for ``member``'s records."""
    return {r["problem_id"]: per_problem(r) for r in records if r.get("member") == member
            and r.get("kind", "model") == "model"}


def majority_rate(golds: Sequence[Any], families: Sequence[str] | None = None) -> float | None:
    """The chance level of an accuracy: how often the best constant guess (per family, when ``families``
    is given) matches the gold answers. None for no answers."""
    groups: dict[str, list[str]] = {}
    for i, g in enumerate(golds):
        groups.setdefault(families[i] if families is not None else "", []).append(str(g))
    total = sum(len(v) for v in groups.values())
    return sum(max(v.count(a) for a in set(v)) for v in groups.values()) / total if total else None


def table_figures(per: Mapping[str, Mapping[str, float | None]], *, n_boot: int, seed: int,
                  metrics: Sequence[str] = tuple(METRICS)) -> dict[str, dict[str, Any]]:
    """Each metric's mean over problems with its 95% interval, from the same per-problem values the paired
    differences use (so a table and a difference never disagree in sign)."""
    return {m: mean_figure([v.get(m) for v in per.values()], n_boot=n_boot, seed=seed) for m in metrics}


def mean_figure(values: Sequence[float | None], *, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean over problems with a percentile-bootstrap 95% interval (None values left out)."""
    vals = [float(v) for v in values if v is not None]
    return figure(vals, n_boot=n_boot, seed=seed)


def paired_difference(a: Mapping[str, float | None], b: Mapping[str, float | None], *, n_boot: int,
                      seed: int) -> dict[str, Any]:
    """Mean over shared problems of b - a, with a 95% interval that resamples problems (paired)."""
    diffs = [b[k] - a[k] for k in a if k in b and a[k] is not None and b[k] is not None]
    return figure(diffs, n_boot=n_boot, seed=seed)


def two_way(rows: Sequence[Mapping[str, Any]], *, factors: tuple[str, str], value: str = "value",
            cluster: str = "problem", n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """How much of the variance of ``value`` each factor explains: eta^2 = SS_factor / SS_total from a
    two-way ANOVA with interaction (statsmodels, type II sums of squares), and a 95% interval for each
    eta^2 that resamples clusters (problems) with every row of a resampled problem kept together."""
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    df = pd.DataFrame([{k: r[k] for k in (*factors, value, cluster)} for r in rows if r[value] is not None])
    a, b = factors
    terms = {a: f"C({a})", b: f"C({b})", f"{a}:{b}": f"C({a}):C({b})"}

    def eta(d: pd.DataFrame) -> dict[str, float]:
        if d[a].nunique() < 2 or d[b].nunique() < 2 or d[value].var() == 0:
            return {k: float("nan") for k in terms}
        table = anova_lm(smf.ols(f"{value} ~ C({a}) * C({b})", data=d).fit(), typ=2)
        total = float(((d[value] - d[value].mean()) ** 2).sum())  # SS_total (type II SS need not add up to it)
        return {k: float(table.loc[t, "sum_sq"]) / total if t in table.index else float("nan")
                for k, t in terms.items()}

    if df.empty:
        return {"n": 0, "eta2": {}}
    point = eta(df)
    groups = {k: g for k, g in df.groupby(cluster)}
    keys = list(groups)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(keys), size=len(keys))
        boots.append(eta(pd.concat([groups[keys[i]] for i in pick], ignore_index=True)))
    alpha = (1 - LEVEL) / 2
    out = {}
    for k in terms:
        vals = np.array([bt[k] for bt in boots], dtype=float)
        vals = vals[~np.isnan(vals)]
        lo, hi = (np.quantile(vals, [alpha, 1 - alpha]) if len(vals) else (np.nan, np.nan))
        out[k] = {"value": None if np.isnan(point[k]) else point[k],
                  "ci_low": None if np.isnan(lo) else float(lo), "ci_high": None if np.isnan(hi) else float(hi)}
    return {"n": int(len(df)), "clusters": len(keys), "eta2": out}


def slope(rows: Sequence[Mapping[str, Any]], *, x: str, value: str = "value", cluster: str = "problem"
          ) -> dict[str, Any]:
    """OLS slope of ``value`` on ``x`` with a 95% interval from cluster-robust (by problem) errors."""
    import pandas as pd
    import statsmodels.formula.api as smf

    df = pd.DataFrame([{k: r[k] for k in (x, value, cluster)} for r in rows if r[value] is not None])
    if df.empty or df[x].nunique() < 2:
        return {"value": None, "ci_low": None, "ci_high": None, "n": int(len(df))}
    codes = df[cluster].astype("category").cat.codes
    fit = smf.ols(f"{value} ~ {x}", data=df).fit(cov_type="cluster", cov_kwds={"groups": codes})
    lo, hi = fit.conf_int(alpha=1 - LEVEL).loc[x]
    return {"value": float(fit.params[x]), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(df)),
            "p": float(fit.pvalues[x])}


def fmt(f: Mapping[str, Any] | None, digits: int = 2) -> str:
    """``0.71 [0.65, 0.77]``, or ``n/a``."""
    if not f or f.get("value") is None:
        return "n/a"
    lo, hi = f.get("ci_low"), f.get("ci_high")
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{f['value']:.{digits}f}{ci}"


def excludes_zero(f: Mapping[str, Any]) -> bool:
    """Whether a figure's 95% interval lies wholly above or below 0."""
    lo, hi = f.get("ci_low"), f.get("ci_high")
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


__all__ = ["METRICS", "by_problem", "excludes_zero", "fmt", "majority_rate", "mean_figure", "paired_difference",
           "per_problem", "slope", "table_figures", "two_way"]
