"""The HTTP API over real zoo members in this process (no Ray): contract, auth, limits, bad inputs, metrics.

The same FastAPI app is the Ray Serve ingress (tests/serve/test_serve.py runs it there). The three
zoo members are loaded once for the module; each server below is a cheap engine over them.
"""

import asyncio
import contextlib
import json
import math
import re
import threading
import time

import pytest
import requests
from typer.testing import CliRunner

from verinet.cli import app as cli_app
from verinet.serve.engine import VerifyEngine
from verinet.serve.members import LocalMember
from verinet.serve.local import serve_local
from verinet.tasks import get_family

from .conftest import MEMBERS, REQUIRED_METRICS, arith_requests, body, promtool_check, serve_config

TOKEN = "a-test-token-0123456789"


@pytest.fixture(scope="module")
def members():
    cfg = serve_config()
    return {m.name: LocalMember(m) for m in cfg.ensemble.members}


@contextlib.contextmanager
def server(members, token=None, **updates):
    cfg = serve_config(**updates)
    engine = VerifyEngine(cfg, members, cfg.ensemble.members, quorum=cfg.ensemble.quorum)
    with serve_local(cfg, token, engine=engine, port=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def srv(members):
    with server(members, limits={"max_steps": 12, "max_chars": 1500, "max_body_bytes": 64 * 1024,
                                 "max_batch": 4}) as s:
        yield s


def post(srv, payload, path="/v1/verify", **kw):
    return requests.post(srv.url + path, json=payload, timeout=60, **kw)


def err(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    e = r.json()["error"]
    assert e["code"] == code, e
    assert e["message"]
    return e


# ---- the contract ---------------------------------------------------------------------------------
def test_verify_returns_everything_the_issue_lists(srv):
    req = arith_requests(1, seed=1, inject=False)[0]
    r = post(srv, body(req) | {"id": "p1"})
    assert r.status_code == 200, r.text
    d = r.json()
    n = len(req["steps"])
    assert d["id"] == "p1" and len(d["steps"]) == n + 1
    assert [s["kind"] for s in d["steps"]] == ["step"] * n + ["answer"]
    assert d["steps"][-1]["text"] == f"#### {req['answer']}"
    for s in d["steps"]:
        assert set(s["scores"]) == set(MEMBERS)  # all_pairs: every member verifies a client's chain
        assert 0 <= s["p_valid"] <= 1 and 0 <= s["p_supported"] <= 1
        assert s["p_valid"] == pytest.approx(sum(s["scores"].values()) / 3)  # aggregation mean
        assert s["verdict"] == ("valid" if s["p_valid"] >= 0.5 else "invalid")
    first_bad = next((s["index"] for s in d["steps"] if s["p_valid"] < 0.5), -1)
    assert d["earliest_error"] == first_bad
    assert d["supported_answer"] == (req["answer"] if d["accepted"] else None)
    a = d["agreement"]
    assert a["n_verifiers"] == 3 and a["n_items"] == n + 1 and 0 <= a["pairwise"] <= 1
    assert {(p["a"], p["b"]) for p in a["pairs"]} == {(MEMBERS[0], MEMBERS[1]), (MEMBERS[0], MEMBERS[2]),
                                                       (MEMBERS[1], MEMBERS[2])}
    kinds = {node["kind"] for node in d["graph"]["nodes"]}
    assert {"problem", "step", "answer", "verifier"} <= kinds
    assert sum(1 for e in d["graph"]["links"] if e["kind"] == "verifies") == 3 * (n + 1)
    assert d["verifiers"] == MEMBERS and d["missing"] == []
    assert [m["name"] for m in d["members"]] == MEMBERS
    assert all(m["answered"] and m["version"].startswith("sha256:") and m["seconds"] > 0
               for m in d["members"])
    assert len({m["version"] for m in d["members"]}) == 3  # three different seeds, three fingerprints
    assert d["timings_s"]["total_s"] > 0 and d["timings_s"]["members_s"] > 0
    assert d["checker"] is None  # free text by default: each step read as using the one before
    assert [s["premises"] for s in d["steps"]] == [[]] + [[i] for i in range(n)]


def test_chain_text_form_and_steps_form_agree(srv):
    req = arith_requests(1, seed=2, inject=False)[0]
    text = "\n".join(req["steps"] + [f"#### {req['answer']}"])
    a = post(srv, body(req) | {"include_graph": False}).json()
    b = post(srv, {"question": req["question"], "chain": text, "include_graph": False}).json()
    assert [s["p_valid"] for s in a["steps"]] == pytest.approx([s["p_valid"] for s in b["steps"]])
    assert a["graph"] is None and b["answer"] == req["answer"]


def test_family_format_reads_premises_and_reports_the_exact_checker(srv):
    for req in arith_requests(2, seed=3):
        d = post(srv, body(req) | {"format": "arith", "include_graph": False}).json()
        assert d["checker"]["family"] == "arith"
        assert d["checker"]["first_error"] == req["_first_error"]  # the injected label
        assert len(d["checker"]["valid"]) == len(d["steps"])
    arith = get_family("arith")
    p = next(p for p in arith.sample(20, seed=4, params={"steps": 5, "branching": 1.0})
             if any(s.premises not in ([], [s.index - 1]) for s in p.gold_steps))
    d = post(srv, {"question": p.question, "steps": [s.text for s in p.gold_steps], "format": "arith"}).json()
    assert [s["premises"] for s in d["steps"]] == [s.premises for s in p.gold_steps]  # the real DAG
    # steps that use only givens have no premises, and their support is their own validity: the graph
    # does not fall back to 'each step depends on the one before' as for free text
    givens = post(srv, {"question": "%10;a1;b2;c:a+b;d:a*b;?d", "steps": ["c:a+b>1+2>3;c3", "d:a*b>1*2>2;d2"],
                        "format": "arith", "include_graph": False}).json()
    assert [s["premises"] for s in givens["steps"][:2]] == [[], []]
    assert givens["steps"][1]["p_supported"] == pytest.approx(givens["steps"][1]["p_valid"])
    fam = get_family("logic")
    p = fam.sample(1, seed=4)[0]
    c = fam.gold_chain(p)
    d = post(srv, {"question": p.question, "chain": c.text, "format": "logic"}).json()
    assert d["checker"]["first_error"] == -1
    assert [s["premises"] for s in d["steps"][:len(c.steps)]] == [s.premises for s in c.steps]
    g = post(srv, {"question": "Ann has 3 apples and buys 4.", "steps": ["3 + 4 = <<3+4=7>>7 apples"],
                   "answer": "7", "format": "gsm8k"}).json()
    assert g["checker"]["valid"] == [True, True]
    e = err(post(srv, {"question": "what is 2+2?", "steps": ["4"], "format": "arith"}), 422, "bad_question")
    assert e["field"] == "question"


def test_topologies_and_options(srv):
    req = body(arith_requests(1, seed=5)[1]) | {"include_graph": False}
    ring = post(srv, req | {"topology": "ring"}).json()
    assert len(ring["verifiers"]) == 1 and all(len(s["scores"]) == 1 for s in ring["steps"])
    kr = post(srv, req | {"topology": "k_random", "k": 2}).json()
    assert len(kr["verifiers"]) == 2
    err(post(srv, req | {"topology": "self"}), 422, "validation_error")
    every = post(srv, req | {"topology": "k_random", "k": 3}).json()  # the client is not a member: all 3 may
    assert len(every["verifiers"]) == 3
    err(post(srv, req | {"topology": "k_random", "k": 4}), 422, "bad_k")  # 3 members
    err(post(srv, req | {"topology": "ring", "k": 4}), 422, "bad_k")  # the schema bounds k for every topology
    # ring and k_random draw per chain: a fresh seed each time (returned), the same draw for the same seed
    rings = [post(srv, req | {"topology": "ring"}).json() for _ in range(8)]
    assert len({r["seed"] for r in rings}) == 8 and len({r["verifiers"][0] for r in rings}) >= 2
    again = post(srv, req | {"topology": "k_random", "k": 2, "seed": kr["seed"]}).json()
    assert again["seed"] == kr["seed"] and again["verifiers"] == kr["verifiers"]
    assert post(srv, req | {"topology": "ring", "seed": rings[0]["seed"]}).json()["verifiers"] == rings[0]["verifiers"]
    strict = post(srv, req | {"threshold": 1.0}).json()
    assert strict["earliest_error"] == 0 and all(s["verdict"] == "invalid" for s in strict["steps"])
    # steps only (the answer left out on purpose): no error is reported past the items the client sent
    steps_only = post(srv, {"question": req["question"], "steps": req["steps"], "threshold": 0.0}).json()
    assert len(steps_only["steps"]) == len(req["steps"]) and all(s["verdict"] == "valid" for s in steps_only["steps"])
    assert steps_only["earliest_error"] == -1, steps_only
    for agg in ("vote", "logodds", "dawid_skene", "one_coin"):
        d = post(srv, req | {"aggregation": agg})
        assert d.status_code == 200 and d.json()["aggregation"] == agg, d.text


def test_a_rolling_table_that_knows_none_of_the_verifiers_falls_back_to_logodds(members):
    """A window filled while these members never answered (other names, say before a rename) fits a
    table without rows for them; reading it would give every item the prior. The request pools by
    log-odds instead, and says so."""
    cfg = serve_config()
    engine = VerifyEngine(cfg, members, cfg.ensemble.members, quorum=cfg.ensemble.quorum)
    n = cfg.reliability_min_items + 5
    engine.reliabilities.observe({(i, 0): {"x": 0.9, "y": 0.8 if i % 3 else 0.2} for i in range(n)})
    assert set(engine.reliabilities.choose("dawid_skene").table.verifiers) == {"x", "y"}
    req = body(arith_requests(1, seed=5)[1]) | {"include_graph": False, "aggregation": "dawid_skene"}
    with serve_local(cfg, None, engine=engine, port=0) as s:
        r = post(s, req)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["reliability"]["source"] == "logodds" and d["earliest_error"] >= -1


def test_batch_keeps_order_and_ids(srv):
    reqs = [body(r) | {"id": f"b{i}", "include_graph": False}
            for i, r in enumerate(arith_requests(1, seed=6))][:4]
    r = post(srv, {"items": reqs}, "/v1/verify/batch")
    assert r.status_code == 200, r.text
    d = r.json()
    assert [x["id"] for x in d["results"]] == [q["id"] for q in reqs]
    single = post(srv, reqs[2]).json()
    batched = [s["p_valid"] for s in d["results"][2]["steps"]]
    assert batched == pytest.approx([s["p_valid"] for s in single["steps"]])
    err(post(srv, {"items": reqs + reqs[:1]}, "/v1/verify/batch"), 422, "too_many_items")
    err(post(srv, {"items": [reqs[0], reqs[0]]}, "/v1/verify/batch"), 422, "duplicate_id")
    e = err(post(srv, {"items": [reqs[0], {"question": "q", "chain": "\n\n"}]}, "/v1/verify/batch"), 422,
            "empty_chain")
    assert e["field"].startswith("items.1.")
    err(post(srv, {"items": []}, "/v1/verify/batch"), 422, "validation_error")


def test_models_health_ready_openapi(srv):
    m = requests.get(srv.url + "/v1/models").json()
    assert [x["name"] for x in m["models"]] == MEMBERS and m["quorum"] == 2
    assert all(x["ready"] and x["version"].startswith("sha256:") for x in m["models"])
    assert m["models"][0]["info"]["parameters"] > 0 and "self" not in m["topologies"]
    assert requests.get(srv.url + "/healthz").json() == {"status": "ok"}
    assert requests.get(srv.url + "/readyz").json() == {"status": "ready", "members_ready": 3, "quorum": 2}
    spec = requests.get(srv.url + "/openapi.json").json()
    routes = {"/v1/verify", "/v1/verify/batch", "/v1/models", "/healthz", "/readyz", "/metrics"}
    assert routes <= set(spec["paths"])
    props = spec["components"]["schemas"]["VerifyRequest"]["properties"]
    fields = {"question", "steps", "chain", "answer", "format", "topology", "aggregation", "threshold"}
    assert fields <= set(props)
    assert "413" in spec["paths"]["/v1/verify"]["post"]["responses"]
    docs = requests.get(srv.url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    head = requests.head(srv.url + "/healthz")
    assert head.status_code == 200 and head.content == b""


def test_models_show_names_and_versions_not_paths(members):
    """A member configured by checkpoint path is listed by its directory's name; no server path leaks."""
    from verinet.zoo.registry import MODELS_DIR

    cfg = serve_config()
    specs = [m.model_copy(update={"model": str(MODELS_DIR / m.model)}) for m in cfg.ensemble.members]
    cfg = cfg.model_copy(update={"ensemble": cfg.ensemble.model_copy(update={"members": specs})})
    engine = VerifyEngine(cfg, members, specs, quorum=2)
    with serve_local(cfg, None, engine=engine, port=0) as s:
        text = requests.get(s.url + "/v1/models").text
        v = post(s, body(arith_requests(1, seed=3, inject=False)[0])).json()
    assert str(MODELS_DIR.parent) not in text

    def strings(x):
        if isinstance(x, dict):
            return [s for v in x.values() for s in strings(v)]
        return [s for v in x for s in strings(v)] if isinstance(x, list) else [x] if isinstance(x, str) else []

    models = json.loads(text)["models"]
    assert not [x for x in strings(models) if x.startswith("/")]
    assert [m["model"] for m in models] == MEMBERS
    assert all(m["version"].startswith("sha256:") for m in models)
    assert [m["model"] for m in v["members"]] == MEMBERS


# ---- the OpenAPI document is the contract ---------------------------------------------------------
def _spec(s):
    return requests.get(s.url + "/openapi.json").json()


def test_openapi_states_the_request_rules(srv):
    spec = _spec(srv)
    req = spec["components"]["schemas"]["VerifyRequest"]
    assert {frozenset(b["required"]) for b in req["oneOf"]} == {frozenset({"steps"}), frozenset({"chain"})}
    steps = next(b for b in req["properties"]["steps"]["anyOf"] if b.get("type") == "array")
    assert steps["minItems"] == 1 and steps["maxItems"] == 12  # this server's limits.max_steps
    item_rules = json.dumps(steps["items"])
    assert "\\\\u2028" in item_rules and "####" in item_rules and "<v>" in item_rules  # reserved tokens too
    q = req["properties"]["question"]
    assert q["maxLength"] == 1500
    for text in ("a", "\ufeff", " \x1e\x85\u3000 ", "\t"):  # not blank: what str.strip() leaves something of
        assert bool(re.search(q["pattern"], text)) == bool(text.strip()), repr(text)
    k = next(b for b in req["properties"]["k"]["anyOf"] if b.get("type") == "integer")
    assert k == {"type": "integer", "minimum": 1, "maximum": 3}  # 3 members, and the client is not one
    assert spec["components"]["schemas"]["BatchRequest"]["properties"]["items"]["maxItems"] == 4


def test_openapi_declares_every_error_per_route(members):
    with server(members, token=TOKEN) as s:
        spec = _spec(s)
        paths = spec["paths"]
        for route in ("/v1/verify", "/v1/verify/batch"):
            assert set(paths[route]["post"]["responses"]) == {"200", "400", "401", "413", "415", "422", "503", "504"}
        assert set(paths["/v1/models"]["get"]["responses"]) == {"200", "401"}
        metrics = paths["/metrics"]["get"]["responses"]
        assert set(metrics) == {"200", "401"} and "text/plain" in metrics["200"]["content"]
        assert requests.get(s.url + "/metrics").status_code == 401  # as declared
        assert set(paths["/healthz"]) == {"get", "head"}
        assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
        for route, ops in paths.items():
            for op in ops.values():
                for status, r in op["responses"].items():
                    if status.startswith("4") or status.startswith("5"):
                        assert r.get("description"), (route, status)


def test_integral_floats_are_integers_as_json_schema_says(srv):
    r = post(srv, {**body(arith_requests(1, seed=4, inject=False)[0]), "topology": "k_random", "k": 2.0})
    assert r.status_code == 200, r.text
    assert len(r.json()["verifiers"]) == 2


# ---- auth -----------------------------------------------------------------------------------------
def test_bearer_token(members):
    req = body(arith_requests(1, seed=7, inject=False)[0])
    with server(members, token=TOKEN) as s:
        r = post(s, req)
        err(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        err(post(s, req, headers={"Authorization": "Bearer wrong-token-0123456789"}), 401, "unauthorized")
        err(post(s, req, headers={"Authorization": TOKEN}), 401, "unauthorized")  # no scheme
        assert post(s, req, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert requests.get(s.url + "/v1/models").status_code == 401
        assert requests.get(s.url + "/metrics").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.get(s.url + "/metrics", headers=auth).status_code == 200
        for open_path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
            assert requests.get(s.url + open_path).status_code == 200, open_path
        spec = requests.get(s.url + "/openapi.json").json()
        assert "HTTPBearer" in spec["components"]["securitySchemes"]
        # an oversized body from a client without the token is refused as unauthorized, unread
        err(requests.post(s.url + "/v1/verify", data=b"x" * 10**6), 401, "unauthorized")
    with server(members, token=TOKEN, auth={"public_metrics": True}) as s:
        assert requests.get(s.url + "/metrics").status_code == 200
        assert post(s, req).status_code == 401


# ---- limits -----------------------------------------------------------------------------------------
def test_limits_answer_413_and_422(srv):
    q = arith_requests(1, seed=8, inject=False)[0]["question"]
    e = err(post(srv, {"question": q, "steps": ["a"] * 13}), 422, "too_many_steps")
    assert e["limit"] == 12 and e["field"] == "steps"
    e = err(post(srv, {"question": q, "steps": ["x" * 800, "y" * 800]}), 422, "too_many_chars")
    assert e["limit"] == 1500
    huge = {"question": q, "steps": ["z" * 1000] * 100}
    e = err(post(srv, huge), 413, "body_too_large")  # Content-Length says so: refused before reading
    assert e["limit"] == 64 * 1024

    def chunks():  # no Content-Length: counted while read
        for _ in range(200):
            yield b" " * 1024
    err(requests.post(srv.url + "/v1/verify", data=chunks(), headers={"Content-Type": "application/json"},
                      timeout=60), 413, "body_too_large")
    assert post(srv, body(arith_requests(1, seed=8, inject=False)[0])).status_code == 200


def test_timeout_gives_504(srv, members):
    req = body(arith_requests(1, seed=9, inject=False)[0])
    # A client's own deadline is at least 1 s (the schema says so); shorter is a 422, not a 504.
    err(post(srv, req | {"timeout_s": 1e-4}), 422, "validation_error")
    with server(members, timeout_s=1e-4, member_timeout_s=1e-4) as s:  # the server's own limit
        e = err(post(s, req), 504, "timeout")
        assert e["limit"] == pytest.approx(1e-4)
        assert post(s, req | {"timeout_s": 30}).status_code == 504  # capped by the server's
    assert post(srv, req | {"timeout_s": 1.0}).status_code == 200


def test_a_call_whose_request_gave_up_is_dropped_before_it_runs(members, monkeypatch):
    """A member scores in one worker thread: calls of requests that timed out while queued never run, so work
    left behind by 504s is at most the one forward pass already running (max_queue bounds the rest)."""
    member = next(iter(members.values()))
    real, ran = member.scorer.score, []

    def slow(items):
        ran.append(len(items))
        time.sleep(0.4)
        return real(items)

    monkeypatch.setattr(member.scorer, "score", slow)

    async def give_up_four_times():
        for _ in range(4):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(member.verify([("1 + 1", ["1 + 1 = 2"], "2")]), 0.05)
        await asyncio.sleep(0.8)  # time for any call still queued to have run
        return await member.verify([("1 + 1", ["1 + 1 = 2"], "2")])

    answer = asyncio.run(give_up_four_times())
    assert ran == [1, 1]  # the first (already running when its request gave up) and the last, answered
    assert len(answer.p_valid) == 1


class _Slow:
    """A member that answers only after ``delay_s`` (a hung replica), or raises ``error`` instead."""

    def __init__(self, inner, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.inner, self.delay_s, self.error = inner, delay_s, error

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def verify(self, items):
        if self.error is not None:
            raise self.error
        await asyncio.sleep(self.delay_s)
        return await self.inner.verify(items)


def test_a_hung_member_leaves_a_quorum_of_the_others_within_the_requests_own_timeout(members):
    """The members that answered make the quorum: the hung one is waited for only as long as the request's
    timeout_s leaves (not member_timeout_s), and an unexpected error from a member is that member's failure."""
    req = body(arith_requests(1, seed=12, inject=False)[0])
    names = list(members)
    hung = {**members, names[-1]: _Slow(members[names[-1]], delay_s=10.0)}
    with server(hung, member_timeout_s=30.0, timeout_s=60.0) as s:
        t0 = time.perf_counter()
        r = post(s, req | {"timeout_s": 2.0})
        assert r.status_code == 200, r.text
        assert time.perf_counter() - t0 < 5.0  # not the hung member's 10 s, nor member_timeout_s
        out = r.json()
        report = {m["name"]: m for m in out["members"]}
        assert report[names[-1]]["error"].startswith("no answer within") and "time limit" in report[names[-1]]["error"]
        assert all(report[n]["error"] is None for n in names[:-1])
        metrics = requests.get(s.url + "/metrics").text  # the client's limit, not the member's fault
        assert 'verinet_member_failures_total{member="%s",reason="deadline"} 1.0' % names[-1] in metrics
        assert 'reason="timeout"' not in metrics
        t0 = time.perf_counter()  # a batch is answered as one: an item's own timeout_s bounds it
        r = post(s, {"items": [req | {"id": "a"}, req | {"id": "b", "timeout_s": 2.0}]}, path="/v1/verify/batch")
        assert r.status_code == 200 and time.perf_counter() - t0 < 5.0, r.text
    slow = {n: _Slow(m, delay_s=3.0) for n, m in members.items()}  # all too slow for the client: 504, not 503
    with server(slow) as s:
        e = err(post(s, req | {"timeout_s": 1.0}), 504, "timeout")
        assert e["limit"] == 1.0
        assert "verinet_quorum_misses_total 0.0" in requests.get(s.url + "/metrics").text
    broken = {**members, names[0]: _Slow(members[names[0]], error=RuntimeError("replica unavailable"))}
    with server(broken) as s:
        r = post(s, req)
        assert r.status_code == 200, r.text
        report = {m["name"]: m for m in r.json()["members"]}
        assert "RuntimeError: replica unavailable" in report[names[0]]["error"]
        assert 'verinet_member_failures_total{member="%s",reason="error"} 1.0' % names[0] in \
            requests.get(s.url + "/metrics").text


def test_backpressure_gives_503_with_retry_after(members):
    req = body(arith_requests(1, seed=10, inject=False)[0])
    with server(members, max_queue=2, retry_after_s=7) as s:
        with s.engine.admit(), s.engine.admit():  # two requests in flight fill the queue
            r = post(s, req)
            err(r, 503, "overloaded")
            assert r.headers["Retry-After"] == "7"
            assert requests.get(s.url + "/healthz").status_code == 200  # probes are not queued
            m = requests.get(s.url + "/metrics").text
            assert "verinet_queue_depth 2.0" in m
        assert post(s, req).status_code == 200


def test_quorum_miss_gives_503_and_is_counted(members):
    req = body(arith_requests(1, seed=11, inject=False)[0])
    with server(members, member_timeout_s=1e-6, timeout_s=30) as s:  # no member can answer in 1 us
        r = post(s, req)
        e = err(r, 503, "quorum_miss")
        assert "quorum is 2" in e["message"] and r.headers["Retry-After"] == "1"
        m = requests.get(s.url + "/metrics").text
        assert "verinet_quorum_misses_total 1.0" in m
        assert 'verinet_member_failures_total{member="zoo-xs-s0",reason="timeout"} 1.0' in m
        ring = post(s, req | {"topology": "ring"})  # quorum capped at the one assigned member: still missed
        err(ring, 503, "quorum_miss")


# ---- bad inputs ---------------------------------------------------------------------------------------
BAD = [
    (b'{"question": "q", "steps": ["a"', 400, "invalid_json"),
    (b"\xff\xfe not utf-8", 400, "invalid_json"),
    (b"", 422, "validation_error"),
    (b"[]", 422, "validation_error"),
    (b"null", 422, "validation_error"),
    (b'{"question": 3, "steps": ["a"]}', 422, "validation_error"),
    (b'{"question": "q", "steps": "a"}', 422, "validation_error"),
    (b'{"question": "q", "steps": [1, 2]}', 422, "validation_error"),
    (b'{"question": "q", "steps": ["a"], "threshold": "0.5"}', 422, "validation_error"),
    (b'{"question": "q", "steps": ["a"], "threshold": 1e308}', 422, "validation_error"),
    (b'{"question": "q", "steps": ["a"], "k": -1}', 422, "validation_error"),
    (b'{"question": "q", "steps": ["a"], "stpes": ["b"]}', 422, "validation_error"),
    (b'{"question": "q", "steps": ["a"], "chain": "a"}', 422, "validation_error"),
    (b'{"question": "q"}', 422, "validation_error"),
    (b'{"question": "", "steps": ["a"]}', 422, "validation_error"),
    (b'{"question": "q", "steps": []}', 422, "validation_error"),  # the schema says minItems 1
    (b'{"question": " \\t ", "steps": ["a"]}', 422, "empty_question"),
    (b'{"question": "q", "steps": ["a"], "answer": ""}', 422, "validation_error"),
    (b'{"question": "q", "steps": ["a"], "answer": "  "}', 422, "empty_answer"),
    (b'{"question": "q", "steps": ["a\\u2028b"]}', 422, "multiline_step"),
    (b'{"question": "q", "steps": ["a\\u000bb"]}', 422, "multiline_step"),
    (b'{"question": "q", "steps": ["a"], "answer": "1\\u2029"}', 422, "multiline_step"),
    (b'{"question": "q", "steps": ["a", " #### 4"]}', 422, "answer_in_steps"),
    (b'{"question": "q", "steps": ["a"], "k": 1.5}', 422, "validation_error"),
    (b'{"question": "q", "steps": ["a"], "k": true}', 422, "validation_error"),
    (b'{"question": "q", "steps": null, "chain": null}', 422, "validation_error"),
    (b'{"question": "' + b"\xe9" + b'", "steps": ["a"]}', 400, "invalid_json"),  # Latin-1, not UTF-8
    (b"[" * 20_000 + b"]" * 20_000, 400, "invalid_json"),  # deeper than the parser's recursion limit
    (b'{"question": "q", "chain": "\\n\\n"}', 422, "empty_chain"),
    (b'{"question": "q", "steps": ["a", "  "]}', 422, "empty_step"),
    (b'{"question": "q", "steps": ["a\\nb"]}', 422, "multiline_step"),
    (b'{"question": "q", "steps": ["x<v>y"]}', 422, "reserved_token"),
    (b'{"question": "q<eos>", "steps": ["a"]}', 422, "reserved_token"),
    (b'{"question": "\\ud800", "steps": ["a"]}', 422, "validation_error"),
    (b'{"question": "q", "chain": "a\\n#### 1", "answer": "1"}', 422, "answer_twice"),
]


def test_bad_inputs_get_4xx_and_the_server_stays_up(srv):
    for raw, status, code in BAD:
        r = requests.post(srv.url + "/v1/verify", data=raw, headers={"Content-Type": "application/json"},
                          timeout=60)
        assert r.status_code == status and r.json()["error"]["code"] == code, (raw, r.status_code, r.text)
    err(requests.post(srv.url + "/v1/verify", data=b"{}", headers={"Content-Type": "text/plain"}), 415,
        "unsupported_media_type")
    err(requests.post(srv.url + "/v1/verify", data=b"{bad"), 400, "invalid_json")  # no Content-Type: JSON
    err(requests.get(srv.url + "/v1/verify"), 405, "method_not_allowed")
    err(requests.get(srv.url + "/nowhere"), 404, "not_found")
    assert requests.get(srv.url + "/healthz").status_code == 200
    assert post(srv, body(arith_requests(1, seed=12, inject=False)[0])).status_code == 200


def test_unicode_and_odd_text_are_verified(srv):
    r = post(srv, {"question": "Ωμέγα 你好 🙂 \u202e", "steps": ["a\u0000b", "ü = 2 ✓", "\t tab"],
                   "answer": "🙂"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["steps"][1]["text"] == "ü = 2 ✓" and d["answer"] == "🙂"
    assert all(math.isfinite(s["p_valid"]) for s in d["steps"])


def test_concurrent_clients_all_answered(srv):
    reqs = [body(r) | {"include_graph": False} for r in arith_requests(3, seed=13)]
    out = []

    def client(i):
        for r in reqs[i::6]:
            out.append(post(srv, r).status_code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [200] * len(reqs)


# ---- metrics and the monitor -----------------------------------------------------------------------
def test_metrics_scrape_matches_the_responses(members):
    from verinet.graph.agreement import fleiss
    from verinet.serve.metrics import disagreements, majority_share
    from verinet.serve.monitor import parse

    reqs = [body(r) | {"include_graph": False} for r in arith_requests(2, seed=14)]
    reqs += [{"question": "q", "steps": ["hello world", "x:y+z>1;x1", "2+2=5"], "answer": "5"},
             {"question": "Ωμέγα", "steps": ["?", "!!", "a:b*c>b1*c0>0;a0"], "answer": "no"}]
    with server(members) as s:  # fresh metrics
        items = {}  # (request, item) -> {member: binary verdict}
        for j, r in enumerate(reqs):
            d = post(s, r).json()
            for st in d["steps"]:
                items[(j, st["index"])] = {m: int(p >= 0.5) for m, p in st["scores"].items()}
        post(s, {"question": "q", "chain": "\n"})
        r = requests.get(s.url + "/metrics")
        text = r.text
    assert r.headers["content-type"].startswith("text/plain")
    for name in REQUIRED_METRICS:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    m = parse(text)
    assert m.value("verinet_steps_verified_total") == len(items) == m.value("verinet_verdicts_total")
    assert m.value("verinet_requests_total", route="/v1/verify", status="200") == len(reqs)
    assert m.value("verinet_requests_total", route="/v1/verify", status="422") == 1
    assert m.value("verinet_step_agreement_ratio_count") == len(items)
    shares = sum(map(majority_share, items.values()))
    assert m.value("verinet_step_agreement_ratio_sum") == pytest.approx(shares)
    kappa, _, _ = fleiss(dict(enumerate(items.values())))
    assert kappa is not None  # the odd chains split the verifiers, so kappa is defined
    got = m.value("verinet_fleiss_kappa")
    assert (math.isnan(got) and kappa is None) or got == pytest.approx(kappa)
    for member in MEMBERS:
        judged = [d[member] for it in items.values() for d in [disagreements(it)] if member in d]
        want = sum(judged) / len(judged) if judged else math.nan
        got = m.value("verinet_verifier_disagreement_ratio", member=member)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
        assert m.value("verinet_member_duration_seconds_count", member=member) == len(reqs)
    assert m.value("verinet_members_ready") == 3 and m.value("verinet_quorum_misses_total") == 0


def test_monitor_reads_a_live_endpoint(srv):
    post(srv, body(arith_requests(1, seed=15, inject=False)[0]))
    runner = CliRunner(env={"COLUMNS": "200"})
    r = runner.invoke(cli_app, ["monitor", "--url", srv.url, "--once", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["requests"] >= 1 and d["p50_s"] > 0 and set(d["members"]) == set(MEMBERS)
    assert d["members_ready"] == 3
    r = runner.invoke(cli_app, ["monitor", "--url", srv.url + "/metrics", "--once"])
    assert r.exit_code == 0 and "members" in r.stdout and "zoo-xs-s1" in r.stdout
    r = runner.invoke(cli_app, ["monitor", "--url", srv.url, "--iterations", "2", "--interval", "0.2"])
    assert r.exit_code == 0 and "last 0." in r.stdout
    r = runner.invoke(cli_app, ["monitor", "--url", "http://127.0.0.1:9/", "--once"])
    assert r.exit_code == 1 and "cannot connect" in r.output


def test_monitor_needs_the_token_when_metrics_are_protected(members):
    with server(members, token=TOKEN) as s:
        runner = CliRunner(env={"COLUMNS": "200"})
        r = runner.invoke(cli_app, ["monitor", "--url", s.url, "--once"], env={"VERINET_API_TOKEN": ""})
        assert r.exit_code == 1 and "401" in r.output
        r = runner.invoke(cli_app, ["monitor", "--url", s.url, "--once", "--token", TOKEN])
        assert r.exit_code == 0, r.output


@pytest.mark.promtool
def test_metrics_scrape_passes_promtool(members):
    reqs = [body(r) | {"include_graph": False} for r in arith_requests(2, seed=15)]
    with server(members) as s:
        for r in reqs:
            post(s, r)
        post(s, {"question": "q", "chain": "\n"})  # a 422 is counted too
        text = requests.get(s.url + "/metrics").text
    promtool_check(text)
