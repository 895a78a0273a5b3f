"""Every zoo size as a verifier of the chains an ensemble's members wrote: earliest-error F1 by kind.

    python benchmarks/own_errors.py [--writers zoo-xs-s0,zoo-xs-s1,zoo-xs-s2]
        [--verifiers zoo-xs-s0,zoo-s,zoo-m,zoo-l,...] [--n 100] [--families arith,logic]
        [--out runs/own_errors.json]

The real-error measure of `verinet zoo eval` (docs/metrics.md), run for many verifiers on one
labelled set. The writers (default: the members of the default comparison, configs/compare-local.yaml)
solve held-out problems greedily on each family's real-error slices (verinet.zoo.verifiers.OWN_ERROR_SLICES:
arith 4 and 6 steps and 4 steps among 2 distractors, logic 1-3 hops; ``--arith-slices``/``--logic-slices``
replace them, e.g. ``steps=2;steps=3`` for writers that err on short chains); the exact checker labels each chain's first wrong line; the set is
balanced between correct and erroneous chains. Each verifier scores every line by each verifier kind
it has (likelihood, the trained verdict, and its token-level PRM where one is committed); the
threshold is fitted on the problems of even rank and F1 reported on the others, with a 95% bootstrap
interval over problems and the F1 of a uniform guesser. The first errors are sorted into kinds by
the checker's reason (ERROR_KINDS), and for each verifier and kind the share of the reported half's
erroneous chains whose first error it finds (acc_err by kind). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from verinet.experiments.config import CompareConfig
from verinet.zoo.model import load_checkpoint
from verinet.zoo.registry import ladder, resolve
from verinet.zoo.token_prm import companion, load_token_prm
from verinet.zoo.verifiers import METHODS, OWN_ERROR_SEED, OWN_ERROR_SLICES, own_error_f1, own_error_set
from verinet.zoo.evaluate import EVAL_SEED


#: the exact checker's reasons for a first wrong line, by family, as kinds of error: anchored patterns on
#: the checkers' fixed texts (verinet/tasks/arith.py, logic.py), the answer ones first because only they
#: quote what the model wrote
ERROR_KINDS = {
    "arith": [(r"no '#### N' answer line", "no answer"), (r"answer .* is not a number$", "no answer"),
              (r"answer \d+ differs from", "answer miscopy"),
              (r"the query \S+ is never computed", "answer before the query is computed"),
              (r"cannot parse", "unparsable line"), (r"\S+ is a given, not", "wrong name"),
              (r"\S+ is not defined in the problem", "wrong name"),
              (r"operands .* do not restate", "inconsistent restatement"),
              (r"restatement ", "inconsistent restatement"),
              (r"premise \S+ is not established", "premise not yet computed"),
              (r"\S+ is \d+ \(.*\), but the step reads", "miscopied value"),
              (r"\S+ is defined as", "wrong premise"), (r"\S+ is \d+ mod \d+, not \d+$", "wrong result")],
    "logic": [(r"no answer line", "no answer"), (r"answer .* is not True or False$", "no answer"),
              (r"no step concludes", "answer not concluded"), (r"cannot parse", "unparsable line"),
              (r"rule not in the problem", "invented rule"), (r"the step is about", "wrong entity"),
              (r"the rule gives", "wrong conclusion"), (r"premise .* not established", "premise not yet concluded")],
}


def error_kind(family: str, reason: str | None) -> str | None:
    """The kind of a chain's first error, from the checker's reason (None for a correct chain)."""
    if reason is None:
        return None
    return next((kind for pattern, kind in ERROR_KINDS[family] if re.match(pattern, reason)), "other")


def parse_slices(text: str | None, family: str) -> list[dict]:
    """'steps=4;steps=6,distractors=2' -> [{'steps': 4, 'distractors': 0}, ...] (defaults filled in)."""
    if not text:
        return OWN_ERROR_SLICES[family]
    base = dict(OWN_ERROR_SLICES[family][0])
    out = []
    for part in text.split(";"):
        d = dict(base)
        for kv in part.split(","):
            key, _, value = kv.partition("=")
            if key.strip() not in base or not value.strip().isdigit():
                raise SystemExit(f"--{family}-slices: {kv!r} is not KEY=INT with KEY one of {sorted(base)}")
            d[key.strip()] = int(value)
        out.append(d)
    return out


def main(argv: list[str] | None = None) -> dict:
    default_writers = ",".join(m.model for m in CompareConfig().ensemble_config().members)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", default=default_writers)
    ap.add_argument("--verifiers", default=None, help="default: the size ladder, then the writers")
    ap.add_argument("--n", type=int, default=100, help="problems per slice and writer")
    ap.add_argument("--seed", type=int, default=EVAL_SEED + OWN_ERROR_SEED, help="the cards' real-error seed")
    ap.add_argument("--arith-slices", default=None)
    ap.add_argument("--logic-slices", default=None)
    ap.add_argument("--families", default="arith,logic", help="comma-separated: arith, logic")
    ap.add_argument("--out", default="runs/own_errors.json")
    a = ap.parse_args(argv)
    writers = [w.strip() for w in a.writers.split(",") if w.strip()]
    verifiers = ([v.strip() for v in a.verifiers.split(",") if v.strip()] if a.verifiers else
                 [n for n, _, _ in ladder()] + [w for w in writers if w not in {n for n, _, _ in ladder()}])
    given = {"arith": a.arith_slices, "logic": a.logic_slices}
    families = [f.strip() for f in a.families.split(",") if f.strip()]
    if not families or set(families) - set(given):
        raise SystemExit(f"--families: {a.families!r} must name some of {sorted(given)}")
    slices = {fam: parse_slices(given[fam], fam) for fam in families}
    t0 = time.perf_counter()
    loaded = [(w, *load_checkpoint(resolve(w))) for w in writers]
    chains = {fam: own_error_set(loaded, fam, a.n, seed=a.seed, slices=sl) for fam, sl in slices.items()}
    print(f"labelled chains written by {', '.join(writers)}: "
          + ", ".join(f"{fam} {len(c)} (half correct)" for fam, c in chains.items()), flush=True)
    kinds = {fam: [error_kind(fam, c["reason"]) for c in cs] for fam, cs in chains.items()}
    for fam, ks in kinds.items():
        print(f"{fam} first errors by kind: " + ", ".join(f"{k} {ks.count(k)}" for k in sorted(set(ks) - {None},
                                                                                              key=ks.count, reverse=True)))
    rows = []
    for v in verifiers:
        path = resolve(v)
        model, tok = load_checkpoint(path)
        prm = load_token_prm(companion(path)) if companion(path) is not None else None
        for method in METHODS + (("prm",) if prm is not None else ()):
            for fam, cs in chains.items():
                r = own_error_f1(*(prm if method == "prm" else (model, tok)), method, cs, per_chain=True)
                predicted = r.pop("predicted", {})
                r["acc_err_by_kind"] = by_kind = {}  # the reported half's erroneous chains, first error found
                for i, pred in predicted.items():
                    if kinds[fam][i] is not None:
                        hit, n = by_kind.get(kinds[fam][i], (0, 0))
                        by_kind[kinds[fam][i]] = (hit + (pred == cs[i]["label"]), n + 1)
                r["acc_err_by_kind"] = {k: {"found": h, "n": n} for k, (h, n) in sorted(by_kind.items())}
                rows.append({"verifier": v, "method": method, "family": fam, **r})
                ci = "" if r["ci_low"] is None else f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                f1 = "n/a" if r["f1"] is None else f"{r['f1']:.2f}{ci}"
                print(f"{v:14s} {method:10s} {fam:5s} F1 {f1:20s} acc_err {r['acc_err']} acc_corr {r['acc_corr']} "
                      f"chance {r.get('chance')} n_test {r.get('n_chains')}", flush=True)
                print("    first error found, by kind: " + ", ".join(
                    f"{k} {d['found']}/{d['n']}" for k, d in r["acc_err_by_kind"].items()), flush=True)
    out = {"writers": writers, "verifiers": verifiers, "slices": slices, "n_per_slice": a.n, "seed": a.seed,
           "chains": {fam: len(c) for fam, c in chains.items()},
           "error_kinds": {fam: {k: ks.count(k) for k in set(ks) - {None}} for fam, ks in kinds.items()}, "rows": rows,
           "wall_s": round(time.perf_counter() - t0, 1)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"wrote {a.out} ({out['wall_s']} s)")
    return out


if __name__ == "__main__":
    main()
