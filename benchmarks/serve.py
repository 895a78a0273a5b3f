"""Throughput and latency of the verification endpoint, and what Ray Serve costs over the engine.

    python benchmarks/serve.py [--config configs/serve-local.yaml] [--clients 1 8 32] [--seconds 10]

The same requests (gold and injected-error arith chains, one chain per request, the graph
included as by default) go three ways, each with 1, 8 and 32 closed-loop clients:

* direct  -- ``VerifyEngine.verify`` called in this process on in-process members (no HTTP, no
             Ray): the engine itself, with clients as asyncio tasks;
* http    -- the same engine behind the FastAPI app under uvicorn (HTTP, no Ray);
* serve   -- the Ray Serve application (proxy -> ingress -> one deployment per member), as
             ``verinet serve`` runs it;
* coloc   -- the Ray Serve application with ``colocate: true`` (proxy -> one ingress replica that
             runs every member in its own process);
* floor   -- a no-op FastAPI route (reads the body, answers ``{}``) under uvicorn in this process
             and as a one-replica Ray Serve app: what any Serve app pays on this machine for the
             proxy hop, whatever it computes (``--no-floor`` skips it);
* coloc-opt -- the same with Ray Serve's throughput-optimized mode (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``
             in the cluster's environment: user code and the router on the replica's main event loop,
             no per-request logs to stderr).

The members autoscale as configured (serve-local.yaml: 1 to 2 replicas each); the serve rows
record the running replicas after each level. For each mode and level: requests/s, chains/s, p50
and p99 latency. The Ray Serve overhead is serve minus direct (p50 and p99 at each level, and the
throughput ratio), measured in the same run since the machine is shared and noisy. Prints a table
and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path

for _k, _v in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
               "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

from fastapi import FastAPI, Request  # noqa: E402

from verinet.serve.api import VerifyRequest  # noqa: E402
from verinet.serve.config import ServeConfig, load_serve_config  # noqa: E402
from verinet.serve.loadgen import LoadResult, run_load  # noqa: E402
from verinet.serve.ports import free_port  # noqa: E402
from verinet.tasks import get_family  # noqa: E402


def workload(n: int, graph: bool) -> list[dict]:
    fam = get_family("arith")
    out = []
    for p in fam.sample(n, seed=123, params={"steps": 3, "distractors": 1}):
        for c in [fam.gold_chain(p)] + [fam.inject(p, k) for k in fam.injectable_kinds(p)]:
            out.append({"question": p.question, "steps": [s.text for s in c.steps], "answer": c.answer,
                        "format": "arith", "include_graph": graph})
    return out


def direct(engine, bodies: list[dict], clients: int, seconds: float) -> LoadResult:
    """Closed-loop clients as asyncio tasks calling the engine in this process."""
    reqs = [VerifyRequest.model_validate(b) for b in bodies]
    res = LoadResult(clients, 0.0)

    async def client(k: int, stop_at: float) -> None:
        i = k
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            try:
                with engine.admit():
                    await engine.verify(reqs[i % len(reqs)])
                res.statuses[200] += 1
                res.items += 1
            except Exception as e:  # noqa: BLE001 - counted as an error, like a non-2xx
                res.statuses[type(e).__name__] += 1
            res.latencies_s.append(time.monotonic() - t0)
            i += clients

    async def main() -> None:
        t0 = time.monotonic()
        await asyncio.gather(*(client(k, t0 + seconds) for k in range(clients)))
        res.seconds = time.monotonic() - t0

    asyncio.run(main())
    return res


def measure(name: str, fn, levels: list[int], seconds: float, warmup: float, after=None) -> list[dict]:
    rows = []
    for c in levels:
        fn(c, warmup)
        r = fn(c, seconds)
        row = {"mode": name, **r.row(), **(after() if after else {})}
        rows.append(row)
        print(f"  {name:<6} {c:>3} clients: {row['throughput_rps']:>7.1f} req/s  "
              f"p50 {row['p50_ms']:>8.1f} ms  p99 {row['p99_ms']:>8.1f} ms  errors {row['errors']}",
              flush=True)
    return rows


def replicas(app_name: str) -> dict[str, int]:
    """Running replicas per deployment (members autoscale under load)."""
    from ray import serve

    deps = serve.status().applications[app_name].deployments
    return {name: sum(n for state, n in d.replica_states.items() if str(state).endswith("RUNNING"))
            for name, d in deps.items()}


def noop_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/verify")
    async def verify(request: Request) -> dict:
        await request.body()
        return {}

    return app


def floor(bodies: list[dict], levels: list[int], seconds: float, warmup: float) -> list[dict]:
    """The no-op app under uvicorn (this process) and as a Ray Serve deployment (proxy -> replica)."""
    import ray
    from ray import serve

    from verinet.backends.server import start_in_thread
    from verinet.cluster.local import init_ray

    server, thread, sock, port = start_in_thread(noop_app(), "127.0.0.1", 0)
    try:
        rows = measure("noop-http", lambda c, s: run_load(f"http://127.0.0.1:{port}", bodies, clients=c, seconds=s),
                       levels, seconds, warmup)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)  # as the ingress: no queue
    @serve.ingress(noop_app())
    class Noop:
        pass

    init_ray(num_cpus=os.cpu_count())
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Noop.bind(), name="noop", route_prefix="/")
        rows += measure("noop-serve", lambda c, s: run_load(f"http://127.0.0.1:{port}", bodies, clients=c, seconds=s),
                        levels, seconds, warmup)
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


# mode -> (colocate, environment of the Ray cluster started for it)
RAY_MODES = {"serve": (False, {}), "coloc": (True, {}), "coloc-opt": (True, {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/serve-local.yaml"))
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each level")
    ap.add_argument("--problems", type=int, default=16, help="arith problems (each gives 4-5 chains)")
    ap.add_argument("--no-graph", action="store_true", help="requests without the node-link graph")
    ap.add_argument("--modes", nargs="*", default=list(RAY_MODES), choices=list(RAY_MODES),
                    help="Ray Serve modes to measure (direct and http always run; none: only those and the floor)")
    ap.add_argument("--no-floor", action="store_true", help="skip the no-op app under uvicorn and Ray Serve")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/serve.json"))
    args = ap.parse_args()

    cfg: ServeConfig = load_serve_config(args.config)
    cfg = cfg.model_copy(update={"port": free_port(), "host": "127.0.0.1", "auth": cfg.auth.model_copy(
        update={"mode": "none"}), "max_queue": max(cfg.max_queue, 2 * max(args.clients))})
    bodies = workload(args.problems, graph=not args.no_graph)
    names = [m.name for m in cfg.ensemble.members]
    print(f"{len(bodies)} chains, {len(names)} members ({', '.join(names)}), levels {args.clients}, "
          f"{args.seconds:g} s each")

    from verinet.serve.local import local_engine, serve_local

    engine = local_engine(cfg)
    rows = measure("direct", lambda c, s: direct(engine, bodies, c, s), args.clients, args.seconds,
                   args.warmup)
    with serve_local(cfg, None, engine=engine, port=0) as srv:  # bound in-process: no race
        rows += measure("http", lambda c, s: run_load(srv.url, bodies, clients=c, seconds=s), args.clients,
                        args.seconds, args.warmup)

    import ray
    from ray import serve

    from verinet.serve.app import start

    start_s = {}
    if os.environ.get("RAY_ADDRESS") and any(RAY_MODES[m][1] for m in args.modes):
        raise SystemExit("RAY_ADDRESS is set: the modes that change the cluster's environment (coloc-opt) need "
                         "a cluster started here; unset RAY_ADDRESS or leave those modes out (--modes)")
    for mode in args.modes:
        colocate, env = RAY_MODES[mode]
        mcfg = cfg.model_copy(update={"colocate": colocate, "port": free_port()})
        saved = {k: os.environ.get(k) for k in env}
        try:
            os.environ.update(env)  # the cluster started next (its raylet, proxy and replicas) inherits it
            t0 = time.monotonic()
            url = start(mcfg, None)
            start_s[mode] = round(time.monotonic() - t0, 2)
            print(f"  Ray Serve application ({mode}) ready in {start_s[mode]:.1f} s")
            rows += measure(mode, lambda c, s, url=url: run_load(url, bodies, clients=c, seconds=s),
                            args.clients, args.seconds, args.warmup,
                            after=lambda: {"replicas": replicas(cfg.app_name)})
        finally:
            serve.shutdown()
            ray.shutdown()
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

    if not args.no_floor:
        rows += floor(bodies, args.clients, args.seconds, args.warmup)
    by = {(r["mode"], r["clients"]): r for r in rows}
    overhead: dict[str, dict] = {}
    for mode in args.modes:
        for c in args.clients:
            d, s = by[("direct", c)], by[(mode, c)]
            overhead.setdefault(mode, {})[str(c)] = {
                "p50_ms": round(s["p50_ms"] - d["p50_ms"], 2), "p99_ms": round(s["p99_ms"] - d["p99_ms"], 2),
                "p50_ratio": round(s["p50_ms"] / d["p50_ms"], 2) if d["p50_ms"] else None,
                "p99_over_p50": round(s["p99_ms"] / s["p50_ms"], 2) if s["p50_ms"] else None,
                "throughput_ratio": (round(s["throughput_rps"] / d["throughput_rps"], 3)
                                     if d["throughput_rps"] else None),
                "http_p50_ms": round(by[("http", c)]["p50_ms"] - d["p50_ms"], 2)}
    print()
    print(f"{'mode':<7}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in rows:
        print(f"{r['mode']:<7}{r['clients']:>8}{r['throughput_rps']:>9.1f}{r['p50_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['errors']:>8}")
    for mode, by_c in overhead.items():
        print(f"\nRay Serve ({mode}) over the engine called directly ({mode} - direct):")
        for c, o in by_c.items():
            print(f"  {c:>3} clients: p50 {o['p50_ms']:+.1f} ms ({o['p50_ratio']}x), p99 {o['p99_ms']:+.1f} ms, "
                  f"p99/p50 {o['p99_over_p50']}, throughput x{o['throughput_ratio']}  "
                  f"(HTTP alone: p50 {o['http_p50_ms']:+.1f} ms)")
    if not args.no_floor:
        print("\nthe floor: a no-op route under Ray Serve over the same route under uvicorn (no model, no engine)")
        for c in args.clients:
            h, v = by[("noop-http", c)], by[("noop-serve", c)]
            overhead.setdefault("floor", {})[str(c)] = {"p50_ms": round(v["p50_ms"] - h["p50_ms"], 2),
                                                        "throughput_rps": [h["throughput_rps"], v["throughput_rps"]]}
            print(f"  {c:>3} clients: p50 {h['p50_ms']:.1f} -> {v['p50_ms']:.1f} ms ({v['p50_ms'] - h['p50_ms']:+.1f} ms), "
                  f"{h['throughput_rps']:.0f} -> {v['throughput_rps']:.0f} req/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "config": str(args.config), "members": names,
        "chains": len(bodies), "graph": not args.no_graph, "seconds_per_level": args.seconds,
        "serve_start_s": start_s, "rows": rows, "serve_overhead": overhead}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
