"""The endpoint on Ray Serve: one application for the module (three zoo member deployments, a
FastAPI ingress, a bearer token), on 127.0.0.1. Contract, auth, bad inputs, timeout, metrics,
monitor and a bounded load test (8 clients for 5 s)."""

import json
from pathlib import Path

import pytest
import requests
from ray import serve
from typer.testing import CliRunner

from verinet.cli import app as cli_app
from verinet.serve.app import INGRESS, member_handle
from verinet.serve.loadgen import run_load

from .conftest import MEMBERS, REQUIRED_METRICS, arith_requests, body, promtool_check, serve_app, serve_config

TOKEN = "serve-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def app():
    cfg = serve_config(max_queue=32, autoscaling={"min_replicas": 1, "max_replicas": 2,
                                                  "target_ongoing_requests": 8})
    with serve_app(cfg, TOKEN) as url:
        yield cfg, url


def post(url, payload, path="/v1/verify", headers=AUTH, **kw):
    return requests.post(url + path, json=payload, headers=headers, timeout=120, **kw)


def test_contract_through_serve(app):
    cfg, url = app
    req = arith_requests(1, seed=21)[1]
    r = post(url, body(req) | {"format": "arith"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["verifiers"] == MEMBERS and d["missing"] == []
    assert all(m["replica"].startswith(f"SERVE_REPLICA::{cfg.app_name}#{m['name']}#") for m in d["members"])
    assert all(m["version"].startswith("sha256:") for m in d["members"])
    assert all(set(s["scores"]) == set(MEMBERS) for s in d["steps"])
    assert d["checker"]["first_error"] == req["_first_error"]
    assert d["graph"]["nodes"] and d["agreement"]["n_verifiers"] == 3
    b = post(url, {"items": [body(x) | {"include_graph": False} for x in arith_requests(1, seed=22)][:3]},
             "/v1/verify/batch")
    assert b.status_code == 200 and len(b.json()["results"]) == 3
    models = requests.get(url + "/v1/models", headers=AUTH, timeout=30).json()["models"]
    assert [m["name"] for m in models] == MEMBERS
    assert requests.get(url + "/healthz", timeout=30).json() == {"status": "ok"}
    assert requests.get(url + "/readyz", timeout=30).status_code == 200
    assert "/v1/verify" in requests.get(url + "/openapi.json", timeout=30).json()["paths"]
    assert requests.get(url + "/docs", timeout=30).status_code == 200


def test_members_are_autoscaled_deployments(app):
    cfg, _ = app
    status = serve.status().applications[cfg.app_name]
    assert set(status.deployments) == set(MEMBERS) | {INGRESS}
    assert all(d.status == "HEALTHY" for d in status.deployments.values())
    details = serve.context._get_global_client().get_serve_details()
    deps = details["applications"][cfg.app_name]["deployments"]
    for m in MEMBERS:
        auto = deps[m]["deployment_config"]["autoscaling_config"]
        assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (1, 2, 8)
        assert deps[m]["deployment_config"]["ray_actor_options"]["num_cpus"] == 0.5


def test_auth_through_serve(app):
    _, url = app
    req = body(arith_requests(1, seed=23, inject=False)[0])
    r = post(url, req, headers={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert post(url, req, headers={"Authorization": "Bearer nope-nope-nope-nope"}).status_code == 401
    assert requests.get(url + "/metrics", timeout=30).status_code == 401


def test_bad_inputs_through_serve(app):
    _, url = app
    cases = [(b'{"question": "q", "steps": ["a"', 400), (b'{"question": 3, "steps": ["a"]}', 422),
             (b'{"question": "q", "steps": []}', 422), (b'{"question": "\\ud800", "steps": ["a"]}', 422),
             (b"[]", 422), (b"", 422)]
    for raw, status in cases:
        r = requests.post(url + "/v1/verify", data=raw, headers=AUTH | {"Content-Type": "application/json"},
                          timeout=60)
        assert r.status_code == status, (raw, r.text)
        assert "error" in r.json()
    huge = {"question": "q", "steps": ["z" * 1000] * 2000}  # 2 MB
    r = post(url, huge)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = post(url, {"question": "Ωμέγα 你好 🙂", "steps": ["ü = 2 ✓", "a\u0000b"],
                   "answer": "🙂"})
    assert r.status_code == 200 and r.json()["answer"] == "🙂"
    assert requests.get(url + "/healthz", timeout=30).status_code == 200
    assert post(url, body(arith_requests(1, seed=24, inject=False)[0])).status_code == 200


def test_client_deadline_through_serve(app):
    """A client's deadline is at least 1 s (the schema says so); the 504 path itself is the same ingress code,
    tested with a server-side limit in tests/serve/test_http.py::test_timeout_gives_504."""
    _, url = app
    req = body(arith_requests(1, seed=25, inject=False)[0])
    r = post(url, req | {"timeout_s": 1e-4})
    assert r.status_code == 422 and r.json()["error"]["field"] == "timeout_s"
    assert post(url, req | {"timeout_s": 1.0}).status_code == 200


def test_load_8_clients_5_seconds_no_errors(app):
    cfg, url = app
    bodies = [body(r) | {"include_graph": False} for r in arith_requests(8, seed=26)]
    missing = []
    res = run_load(url, bodies, clients=8, seconds=5, token=TOKEN,
                   on_response=lambda status, d: missing.append(d.get("missing") if d else None))
    print(f"\nload via Ray Serve: {res.row()}")
    assert res.requests >= 8 and res.errors == 0, res.statuses
    assert all(m == [] for m in missing)  # every member answered every request
    assert 0 < res.p50_s <= res.p99_s < 30
    for m in MEMBERS:  # concurrent requests shared forward passes (serve.batch)
        h = member_handle(cfg, m).health.remote().result(timeout_s=60)
        assert h["batched_requests"] > h["batches"] > 0, h


def test_metrics_through_serve_and_the_monitor_reads_them(app):
    _, url = app
    post(url, body(arith_requests(1, seed=27)[1]))
    text = requests.get(url + "/metrics", headers=AUTH, timeout=30).text
    for name in REQUIRED_METRICS:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    r = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli_app, ["monitor", "--url", url, "--once", "--json", "--token", TOKEN])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["requests"] >= 1 and d["members_ready"] == 3 and set(d["members"]) == set(MEMBERS)
    assert all(m["calls"] >= 1 for m in d["members"].values())


def test_app_builder_and_member_options(tmp_path, monkeypatch):
    from verinet.backends import MemberSpec, Resources
    from verinet.serve.app import app_builder, member_options
    from verinet.serve.config import ServeConfigError

    monkeypatch.delenv("VERINET_API_TOKEN", raising=False)
    path = tmp_path / "s.yaml"
    ens = Path(__file__).resolve().parents[2] / "configs" / "ensemble-local.yaml"
    path.write_text(f"ensemble: {ens}\n")
    assert isinstance(app_builder({"config": str(path)}), serve.Application)
    with pytest.raises(ValueError, match="config"):
        app_builder({})
    path.write_text(f"ensemble: {ens}\nhost: 0.0.0.0\n")
    with pytest.raises(ServeConfigError, match="not a loopback address"):
        app_builder({"config": str(path)})
    cfg = serve_config()
    tp = MemberSpec(name="big", backend="vllm", model="Qwen/Qwen2.5-7B-Instruct", format="chat",
                    resources=Resources(num_cpus=2, num_gpus=1, tensor_parallel_size=2))
    opts = member_options(tp, cfg)
    assert opts["placement_group_bundles"] == [{"GPU": 1.0, "CPU": 2.0}, {"GPU": 1.0}]
    assert opts["placement_group_strategy"] == "STRICT_PACK" and opts["ray_actor_options"]["num_gpus"] == 0
    assert opts["ray_actor_options"]["runtime_env"]["env_vars"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    one = member_options(cfg.ensemble.members[0], cfg)
    assert "placement_group_bundles" not in one and one["autoscaling_config"]["max_replicas"] == 1
    assert "resources" not in one["ray_actor_options"]
    pinned = member_options(MemberSpec(name="p", backend="hf", model="zoo-xs-s0",
                                       resources=Resources(num_cpus=0.5, custom={"node_a": 1})), cfg)
    assert pinned["ray_actor_options"]["resources"] == {"node_a": 1.0}  # only nodes declaring node_a host it


@pytest.mark.promtool
def test_metrics_through_serve_pass_promtool(app):
    _, url = app
    post(url, body(arith_requests(1, seed=28)[0]))
    promtool_check(requests.get(url + "/metrics", headers=AUTH, timeout=30).text)


def test_a_colocated_ingress_hosts_every_member_in_its_replica(monkeypatch):
    """colocate: true builds one deployment (the ingress) asking for the members' CPUs; its replica
    class, run here without Ray, serves the contract with every member in its own process."""
    from fastapi.testclient import TestClient

    from verinet.backends import MemberSpec, Resources
    from verinet.serve.app import Ingress, build_app, colocated_options
    from verinet.serve.config import ServeConfigError

    cfg = serve_config(colocate=True, auth="none")
    built = build_app(cfg, None)
    dep = built._bound_deployment
    assert dep.name == INGRESS and dep._deployment_config.num_replicas == 1
    assert dep.ray_actor_options["num_cpus"] == 1.5 and dep.init_args[2] is None  # no member handles
    tp = MemberSpec(name="big", backend="vllm", model="Qwen/Qwen2.5-7B-Instruct", format="chat",
                    resources=Resources(num_cpus=2, num_gpus=1, tensor_parallel_size=2))
    gpu = MemberSpec(name="g", backend="hf", model="zoo-xs-s0", resources=Resources(num_cpus=1, num_gpus=0.5))
    for other in (tp, gpu):
        with pytest.raises(ServeConfigError, match="colocate: false"):
            colocated_options([*cfg.ensemble.members, other])
    cls = next(c for c in Ingress.func_or_class.__mro__ if "__serve_build_asgi_app__" in c.__dict__)
    replica = cls(cfg.model_dump(mode="json"), None, None)  # the class under Serve's ASGI wrapper
    with TestClient(replica.__serve_build_asgi_app__()) as client:
        req = arith_requests(1, seed=21)[1]
        d = client.post("/v1/verify", json=body(req) | {"format": "arith"}).json()
        assert d["verifiers"] == MEMBERS and d["missing"] == []
        assert len({m["replica"] for m in d["members"]}) == 1  # one process hosts them all
        assert d["checker"]["first_error"] == req["_first_error"]
        assert 'verinet_member_duration_seconds_count{member="zoo-xs-s0"' in client.get("/metrics").text
