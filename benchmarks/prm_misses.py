"""Where a trained verifier misses wrong arith results: by the wrong digit's distance from the right
one and by line, beside the likelihood of the solver it was trained from.

    python benchmarks/prm_misses.py [--prm verinet/zoo/models/zoo-l/prm] [--n 300] [--steps 3]
        [--out runs/prm_misses.json]

Held-out 3-step arith problems, each with one injected wrong result. Every verifier kind
scores the gold chains and the wrong ones in one pass. A wrong line counts as missed when it scores
above the lower quartile of the gold lines' scores. The misses are tallied by the circular distance
of the written result from the right one (1-5) and by line, with the AUROC of the error lines
against all gold lines (chance 0.5) and its 95% bootstrap interval over problems. The wrong digit
comes from the family's injector, so each distance has its own count. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from verinet.tasks import get_family
from verinet.zoo.evaluate import EVAL_SEED
from verinet.zoo.model import load_checkpoint
from verinet.zoo.registry import resolve
from verinet.zoo.token_prm import load_token_prm, source_mismatch
from verinet.zoo.verifiers import _auroc, auroc_interval, step_scores

MISS_QUANTILE = 0.25  # a wrong line is missed when it scores above this quantile of the gold lines


def tally(gold_rows: list[list[float]], errors: list[tuple[int, int, int, float]]) -> dict:
    """``errors``: (problem index, line, distance, score). Miss counts by distance and by line."""
    gold = [x for row in gold_rows for x in row]
    threshold = float(np.quantile(gold, MISS_QUANTILE))

    def rates(key: int) -> dict[str, dict[str, float | int]]:
        out: dict[str, dict[str, float | int]] = {}
        for k in sorted({e[key] for e in errors}):
            sel = [e for e in errors if e[key] == k]
            missed = sum(e[3] > threshold for e in sel)
            out[str(k)] = {"n": len(sel), "missed": missed, "rate": round(missed / len(sel), 3)}
        return out

    scores = [e[3] for e in errors]
    return {"threshold": round(threshold, 4), "auroc": round(_auroc(gold, scores), 4),
            "auroc_ci": auroc_interval(gold_rows, [(e[0], e[3]) for e in errors]),
            "by_distance": rates(2), "by_line": rates(1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prm", default=str(resolve("zoo-l") / "prm"), help="a token-level PRM directory")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=EVAL_SEED + 7, help="problems of seeds disjoint from EVAL_SEED's; "
                    "training draws random 31-bit problem seeds from a far larger question space")
    ap.add_argument("--out", default="runs/prm_misses.json")
    args = ap.parse_args(argv)
    prm = load_token_prm(args.prm)
    source = json.loads((Path(args.prm) / "prm.json").read_text())["source"]
    solver = load_checkpoint(resolve(source))
    # the likelihood column is the source's current weights; a PRM trained from earlier ones says so
    mismatch = source_mismatch(args.prm, resolve(source))
    fam = get_family("arith")
    problems = fam.sample(args.n, seed=args.seed, params={"steps": args.steps, "distractors": 0})
    gold_items = [(p.question, [s.text for s in p.gold_steps], p.answer) for p in problems]
    wrong, where = [], []
    for i, p in enumerate(problems):
        ch = fam.inject(p, "wrong_result", seed=args.seed + i)
        fe = ch.first_error
        right, written = int(p.gold_steps[fe].value), int(ch.steps[fe].value)
        mod = p.meta["modulus"]
        d = (written - right) % mod
        wrong.append((p.question, [s.text for s in ch.steps], ch.answer))
        where.append((i, fe, min(d, mod - d)))
    t0 = time.perf_counter()
    out: dict = {"prm": str(args.prm), "source": source, "source_mismatch": mismatch, "n": args.n, "steps": args.steps, "seed": args.seed,
                 "miss_quantile": MISS_QUANTILE, "kinds": {}}
    for method, (model, tok) in (("prm", prm), ("likelihood", solver)):
        gold_rows = step_scores(model, tok, method, gold_items)
        rows = step_scores(model, tok, method, wrong)
        errors = [(i, fe, d, row[fe]) for (i, fe, d), row in zip(where, rows, strict=True)]
        out["kinds"][method] = tally(gold_rows, errors)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{args.prm} (source {source}): wrong arith results, {args.n} problems of {args.steps} steps; "
          f"missed = above the gold lines' {MISS_QUANTILE:.0%} quantile")
    if mismatch:
        print(f"note: {mismatch}; the likelihood row is the current {source}")
    for method, r in out["kinds"].items():
        dist = "  ".join(f"{k}: {v['missed']}/{v['n']}" for k, v in r["by_distance"].items())
        line = "  ".join(f"{int(k) + 1}: {v['missed']}/{v['n']}" for k, v in r["by_line"].items())
        print(f"{method:>10}  AUROC {r['auroc']:.3f} {r['auroc_ci']}  missed by distance  {dist}  |  by line  {line}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
