"""Verdict-scoring throughput (steps/s) for zoo models, directly and through a Ray actor.

    python benchmarks/backends.py [--models zoo-xs-s0 zoo-l] [--problems 32] [--threads 2]

Four ways to get one verdict per step, on the same gold + injected arith chains:

* likelihood — one teacher-forced pass per chain, log P of every token (verification by likelihood,
               the members' default kind);
* tagged     — one forward pass per chain, P(valid) read at every ``<v>`` (PRM style);
* per-step   — one prompt per step (the chain prefix up to that step), verdict log-probs;
* generate   — per step, the judge writes up to 8 tokens that are then parsed; zoo models write
               their verdict as a special token, so this is the cheapest generate-then-parse.

With ``--judge smollm2-135m-instruct`` (a real chat model, prepared with `verinet models prepare`)
it also measures what users run as an LLM-as-judge, on the same chains in its chat format:

* judge-rationale — per step, the judge writes a short rationale and then "Verdict: Yes/No"
                    (greedy, up to ``--judge-tokens``), parsed from the text;
* judge-verdict   — per step, the Yes/No log-probs right after the question (no rationale);
* judge-likelihood — one teacher-forced pass per chain (verification by likelihood).

It also measures the peak fp32 matmul rate of this machine and reports the roofline fraction
of each path: achieved FLOP/s (2 x non-embedding parameters x tokens/s) over that peak. What
bounds a narrow model is shown beside it: the rate of the model's own linear layers on one
batch's tokens ("shape peak"; a 64-wide layer cannot run at the square-matrix peak), and with
``--compile`` the member option ``compile: true`` (one-pass scoring through ``torch.compile``)
against eager, with the seconds its load and warm-up took.
Each timing is the median of ``--repeats`` runs; ratios are measured in the same run, since the
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import time
from pathlib import Path

import torch

from verinet.backends import MemberSpec, make_backend
from verinet.tasks import get_family
from verinet.zoo import formats
from verinet.zoo.registry import list_checkpoints
from verinet.zoo.tokenizer import INVALID, TAG, VALID

_VERDICT = re.compile(r"<\+>|<->|valid|invalid", re.IGNORECASE)


def peak_matmul_flops(n: int = 1024, reps: int = 10, trials: int = 5) -> float:
    """The best of ``trials`` timings of ``reps`` square fp32 matmuls: a peak, so noise (other
    work on a shared machine) only ever lowers a trial, and the best one is kept."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * reps / best


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls of ``fn`` (and the last call's result)."""
    times, r = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), r


def shape_peak(model, tokens: int, repeats: int = 5) -> float:
    """FLOP/s of the model's own linear layers applied to ``tokens`` rows (one batch): the matmul
    rate at the shapes the forward pass runs, eager, with nothing else around it."""
    linears = [m for m in model.model.modules() if isinstance(m, torch.nn.Linear)]
    xs = {m.in_features: torch.randn(tokens, m.in_features, device=m.weight.device, dtype=m.weight.dtype)
          for m in linears}

    def run() -> None:
        for m in linears:
            torch.nn.functional.linear(xs[m.in_features], m.weight)

    with torch.inference_mode():
        run()
        dt = min(median_seconds(run, 1)[0] for _ in range(repeats))  # a peak: the best run, as for the square one
    return 2 * tokens * sum(m.in_features * m.out_features for m in linears) / dt


def workload(n: int) -> tuple[list[str], int]:
    fam = get_family("arith")
    texts = []
    for p in fam.sample(n, seed=123, params={"steps": 3}):
        for chain in [fam.gold_chain(p)] + [fam.inject(p, k) for k in fam.injectable_kinds(p)]:
            texts.append(formats.verify_text(p.question, [s.text for s in chain.steps], chain.answer))
    return texts, sum(t.count(TAG) for t in texts)


def prefixes(texts: list[str]) -> list[str]:
    out = []
    for t in texts:
        i = t.find(TAG)
        while i >= 0:
            out.append(t[: i + len(TAG)])
            i = t.find(TAG, i + 1)
    return out


def run_paths(call, texts: list[str], steps: int, non_embedding: int, peak: float, repeats: int = 5,
              only: tuple[str, ...] | None = None) -> dict:
    """``call(method, *args, **kw)`` runs a protocol method on the backend (directly or via Ray)."""
    pre = prefixes(texts)
    paths = {
        "likelihood": lambda: call("token_logprobs", texts),
        "tagged": lambda: call("score_tagged", texts, TAG, VALID, INVALID),
        "per_step": lambda: call("score", pre, [VALID, INVALID]),
        "generate": lambda: call("generate", pre, max_tokens=8),
    }
    out = {}
    for name, fn in paths.items():
        if only and name not in only:
            continue
        fn() if name != "generate" else None  # warm-up (generate is slow enough to skip it)
        dt, r = median_seconds(fn, 1 if name == "generate" else repeats)
        tokens = r.usage.total
        flops = 2 * non_embedding * tokens / dt
        row = {"seconds": dt, "steps_per_s": steps / dt, "tokens": tokens, "flop_per_s": flops,
               "roofline_fraction": flops / peak}
        if name == "generate":
            row["parsed_share"] = sum(bool(_VERDICT.search(t)) for t in r.texts) / len(r.texts)
        out[name] = row
    return out


JUDGE_ASK = ("Check Step {k} against the problem and the steps before it. In one or two short sentences, "
             "recompute what it claims; then end with a last line 'Verdict: Yes' if it is correct or "
             "'Verdict: No' if it is not.")
_JUDGED = re.compile(r"verdict\W*(yes|no)", re.IGNORECASE)


def judge_paths(name: str, n_problems: int, max_tokens: int) -> dict:
    """A real chat model as the judge: rationale-then-verdict against one-pass scoring, same steps."""
    from verinet.backends.formats import format_for

    spec = MemberSpec(name="judge", backend="hf", model=name, format="chat", batch_size=8)
    backend = make_backend(spec)
    fmt = format_for(spec, backend)
    fam = get_family("arith")
    items = []
    for p in fam.sample(n_problems, seed=321, params={"steps": 2}):
        for chain in [fam.gold_chain(p), fam.inject(p, "wrong_result")]:
            items.append((p.question, [s.text for s in chain.steps], chain.answer))
    steps = sum(len(s) + 1 for _, s, _ in items)
    prompts = []
    for q, ss, a in items:
        lines = ss + [f"The final answer is {a}."]
        for k in range(len(lines)):
            ask = fmt.verify_prompt(q, lines, k)  # the verdict question; the rationale request replaces its ending
            question = f"Is Step {k + 1} correct, given the problem and the steps before it? Answer Yes or No."
            assert question in ask, "ChatFormat.verify_prompt changed: update the judge's request"
            prompts.append(ask.replace(question, JUDGE_ASK.format(k=k + 1)))
    out = {}
    t0 = time.perf_counter()
    r = backend.generate(prompts, max_tokens=max_tokens)
    dt = time.perf_counter() - t0
    parsed = [_JUDGED.search(t) for t in r.texts]
    out["judge-rationale"] = {"seconds": dt, "steps_per_s": steps / dt, "tokens": r.usage.total,
                              "decode_tokens": r.usage.decode, "parsed_share": sum(bool(m) for m in parsed) / len(parsed)}
    for path, verifier in (("judge-verdict", "verdict"), ("judge-likelihood", "likelihood")):
        f = format_for(spec.model_copy(update={"verifier": verifier}), backend)
        call = f.verify_call(items)
        t0 = time.perf_counter()
        res = getattr(backend, call.method)(*call.args, **call.kwargs)
        dt = time.perf_counter() - t0
        out[path] = {"seconds": dt, "steps_per_s": steps / dt, "tokens": res.usage.total}
    return {"model": name, "steps": steps, "chains": len(items), "max_tokens": max_tokens, "paths": out,
            "sample": r.texts[0][:300]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [n for n, _, _ in list_checkpoints()]
    ap.add_argument("--models", nargs="+", default=[names[0], names[-1]])
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per path (the median is reported)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray actor measurements")
    ap.add_argument("--compile", action="store_true",
                    help="also time members with compile: true against eager (15-25 s of warm-up each)")
    ap.add_argument("--judge", default=None,
                    help="a chat model (e.g. smollm2-135m-instruct) also measured as a rationale-then-verdict judge")
    ap.add_argument("--judge-problems", type=int, default=6)
    ap.add_argument("--judge-tokens", type=int, default=64, help="longest rationale the judge may write")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/backends.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts, steps = workload(args.problems)
    peak = peak_matmul_flops()
    print(f"workload: {len(texts)} chains, {steps} verdicts; peak fp32 matmul {peak / 1e9:.1f} GFLOP/s "
          f"({args.threads} threads)")
    results = []
    for name in args.models:
        spec = MemberSpec(name=Path(name).name, backend="hf", model=name, batch_size=64,
                          resources={"num_cpus": args.threads})
        backend = make_backend(spec)
        ne = backend.info()["non_embedding_parameters"]
        direct = run_paths(lambda m, *a, **k: getattr(backend, m)(*a, **k), texts, steps, ne, peak, args.repeats)
        batch_tokens = sum(map(len, backend.tok(texts[:64], add_special_tokens=False)["input_ids"]))
        row = {"model": name, "non_embedding": ne, "via": "direct", "paths": direct,
               "shape_peak_flop_per_s": shape_peak(backend.model, batch_tokens, args.repeats)}
        results.append(row)
        if args.compile:  # the member option: one-pass scoring compiled at load, decoding eager
            t0 = time.perf_counter()
            compiled = make_backend(spec.model_copy(update={"compile": True}))
            load_s = time.perf_counter() - t0
            paths = run_paths(lambda m, *a, **k: getattr(compiled, m)(*a, **k), texts, steps, ne, peak,
                              args.repeats, only=("likelihood", "tagged", "per_step"))
            results.append({"model": name, "non_embedding": ne, "via": "compiled", "load_s": load_s, "paths": paths})
        if not args.no_ray:
            from verinet.backends import EnsembleConfig
            from verinet.cluster import Ensemble
            from verinet.cluster.local import init_ray

            init_ray(num_cpus=args.threads)
            with Ensemble(EnsembleConfig(members=[spec], quorum=1)) as ens:
                via = run_paths(lambda m, *a, **k: ens.call(m, *a, **k)[spec.name], texts, steps, ne, peak,
                                args.repeats)
            results.append({"model": name, "non_embedding": ne, "via": "ray", "paths": via})
    shape = {r["model"]: r["shape_peak_flop_per_s"] for r in results if r["via"] == "direct"}
    print(f"\n{'model':<12} {'via':<7} {'path':<10} {'steps/s':>9} {'tokens':>9} {'GFLOP/s':>8} {'roofline':>9} "
          f"{'of shape peak':>14}")
    for r in results:
        for path, row in r["paths"].items():
            row["shape_peak_fraction"] = row["flop_per_s"] / shape[r["model"]]
            print(f"{r['model']:<12} {r['via']:<7} {path:<10} {row['steps_per_s']:>9.1f} {row['tokens']:>9} "
                  f"{row['flop_per_s'] / 1e9:>8.2f} {row['roofline_fraction']:>9.2%} {row['shape_peak_fraction']:>14.2%}")
    print("\nshape peak: the model's linear layers alone on one batch's tokens, against the square-matrix peak")
    for name, f in shape.items():
        print(f"  {name:<12} {f / 1e9:8.2f} GFLOP/s = {f / peak:6.2%} of {peak / 1e9:.1f}")
    for r in results:
        if r["via"] == "compiled":
            eager = next(e["paths"] for e in results if e["model"] == r["model"] and e["via"] == "direct")
            ratios = "  ".join(f"{p} {eager[p]['seconds'] / row['seconds']:.2f}x" for p, row in r["paths"].items())
            print(f"  {r['model']:<12} compile: true over eager (same run): {ratios}; "
                  f"loading with its warm-up took {r['load_s']:.0f} s")
    print("\nratios (same run): tagged over per-step and over generate, and direct over Ray")
    for r in results:
        p = r["paths"]
        if "generate" not in p:
            continue
        print(f"  {r['model']:<12} {r['via']:<6} tagged/per-step {p['tagged']['steps_per_s'] / p['per_step']['steps_per_s']:6.1f}x"
              f"   tagged/generate {p['tagged']['steps_per_s'] / p['generate']['steps_per_s']:6.1f}x")
    by = {(r["model"], r["via"]): r["paths"] for r in results}
    for name in args.models:
        if (name, "ray") in by:
            for path in ("likelihood", "tagged"):
                d, v = by[(name, "direct")][path], by[(name, "ray")][path]
                print(f"  {name:<12} {path} ray/direct time {d['steps_per_s'] / v['steps_per_s']:6.2f}x")
    judge = None
    if args.judge:
        judge = judge_paths(args.judge, args.judge_problems, args.judge_tokens)
        jp = judge["paths"]
        print(f"\njudge {judge['model']} on {judge['chains']} chat-format chains, {judge['steps']} steps "
              f"(rationale up to {judge['max_tokens']} tokens; verdict parsed from {jp['judge-rationale']['parsed_share']:.0%})")
        for path, row in jp.items():
            print(f"  {path:<17} {row['steps_per_s']:>8.2f} steps/s  {row['tokens']:>7} tokens")
        rat = jp["judge-rationale"]["steps_per_s"]
        print(f"  ratios (same run): one-pass likelihood / rationale {jp['judge-likelihood']['steps_per_s'] / rat:.1f}x, "
              f"per-step verdict / rationale {jp['judge-verdict']['steps_per_s'] / rat:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": args.threads,
                                    "peak_flop_per_s": peak, "chains": len(texts), "steps": steps,
                                    "results": results, "judge": judge}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
