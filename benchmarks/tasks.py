"""Task-family throughput: generator problems/s and exact-checker chains/s.

    python benchmarks/tasks.py [--n 2000] [--out runs/bench/tasks.json]

Checker throughput is measured on a mix of gold chains and chains with each injected
error kind, so both the happy path and the error paths are timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from verinet.tasks import get_family

CASES = [
    ("arith", {"steps": 3, "distractors": 1}),
    ("arith", {"steps": 8, "distractors": 4, "branching": 0.5}),
    ("logic", {"hops": 3, "distractors": 2}),
    ("logic", {"hops": 6, "distractors": 6, "vocabulary": "real"}),
]


def bench(family: str, knobs: dict, n: int) -> dict:
    fam = get_family(family)
    t0 = time.perf_counter()
    problems = fam.sample(n, seed=1, params=knobs)
    gen_s = time.perf_counter() - t0
    pairs = []
    for p in problems:
        pairs.append((p, fam.gold_chain(p).text))
        pairs += [(p, fam.inject(p, k).text) for k in fam.injectable_kinds(p)]
    t0 = time.perf_counter()
    steps = 0
    for p, c in pairs:
        steps += len(fam.check(p, c).steps)
    check_s = time.perf_counter() - t0
    return {"family": family, "knobs": knobs, "problems": n, "problems_per_s": n / gen_s,
            "chains": len(pairs), "chains_per_s": len(pairs) / check_s, "steps_per_s": steps / check_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="problems per case")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/tasks.json"))
    args = ap.parse_args()
    rows = [bench(f, k, args.n) for f, k in CASES]
    print(f"{'family':<7} {'knobs':<52} {'problems/s':>11} {'chains/s':>10} {'steps/s':>10}")
    for r in rows:
        print(f"{r['family']:<7} {json.dumps(r['knobs']):<52} {r['problems_per_s']:>11.0f} "
              f"{r['chains_per_s']:>10.0f} {r['steps_per_s']:>10.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                    "python": platform.python_version(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
