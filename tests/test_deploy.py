"""deploy/: the Dockerfile, the KubeRay manifests, Prometheus config and alerts, the Grafana dashboard.

Every YAML parses and carries the fields KubeRay and Kubernetes require; commands and config paths
the manifests run exist in the package; every metric name is one the endpoint exports; promtool
checks the config and the rules and runs the alert unit tests (deploy/prometheus/alerts_test.yml).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

import verinet
from verinet.cli import app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "verinet-dashboard.json"
APP_ROOT = PurePosixPath("/app")  # WORKDIR of deploy/Dockerfile: /app/configs/x.yaml is configs/x.yaml here

# What the endpoint exports (verinet/serve, verinet/monitor): name -> type.
METRICS = {
    "verinet_requests_total": "counter",
    "verinet_request_duration_seconds": "histogram",
    "verinet_member_duration_seconds": "histogram",
    "verinet_steps_verified_total": "counter",
    "verinet_verdicts_total": "counter",
    "verinet_step_agreement_ratio": "histogram",
    "verinet_fleiss_kappa": "gauge",
    "verinet_verifier_disagreement_ratio": "gauge",
    "verinet_member_restarts_total": "counter",
    "verinet_quorum_misses_total": "counter",
    "verinet_queue_depth": "gauge",
    "verinet_members_ready": "gauge",
}
RAY_KINDS = {"RayCluster", "RayJob", "RayService"}
OTHER_KINDS = {("v1", "PersistentVolumeClaim"), ("v1", "Service"), ("networking.k8s.io/v1", "NetworkPolicy")}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# While verinet/serve is not in the tree, `verinet serve` and its app builder are checked by name only.
SERVE_PENDING = importlib.util.find_spec("verinet.serve") is None \
    or importlib.util.find_spec("verinet.serve.app") is None

runner = CliRunner(env={"COLUMNS": "200"})


# --- helpers ---------------------------------------------------------------------------------

def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed; it comes with Debian's prometheus package: "
                    "`apt-get update && apt-get install -y --no-install-recommends prometheus` "
                    "(.ci/run installs it)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def docs_of(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(KUBERAY.glob("*.yaml")) for d in docs_of(p)]


def ray_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in manifests() if d.get("kind") in RAY_KINDS]


def cluster_spec(doc: dict) -> dict:
    spec = doc["spec"]
    return {"RayCluster": lambda: spec, "RayJob": lambda: spec["rayClusterSpec"],
            "RayService": lambda: spec["rayClusterConfig"]}[doc["kind"]]()


def groups(doc: dict) -> list[tuple[str, dict]]:
    """(name, group spec) for the head group and every worker group."""
    cs = cluster_spec(doc)
    return [("head", cs["headGroupSpec"])] + [(g["groupName"], g) for g in cs.get("workerGroupSpecs", [])]


def ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay treats the first container as Ray's


def gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def docker_args() -> dict[str, str]:
    args = {}
    for ins, rest in dockerfile():
        if ins == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


RAY_VERSION = docker_args().get("RAY_VERSION")


def local_path(path: str) -> Path:
    """A path inside the image (absolute under /app, or relative to WORKDIR) -> the repo file."""
    p = PurePosixPath(path)
    if p.is_absolute():
        assert p.is_relative_to(APP_ROOT), f"{path} is not under the image's {APP_ROOT}"
        p = p.relative_to(APP_ROOT)
    return ROOT / p


def cli_commands() -> set[str]:
    return set(typer.main.get_command(app).commands)


def check_verinet_argv(argv: list[str], where: str) -> None:
    """argv runs a real `verinet` command with options it accepts and config files that exist."""
    assert argv[0] == "verinet", f"{where}: runs {argv[0]!r}, not the verinet CLI"
    sub = argv[1]
    options = [a.split("=")[0] for a in argv[2:] if a.startswith("--")]
    configs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-c")]
    if sub in cli_commands():
        r = runner.invoke(app, [sub, "--help"])
        assert r.exit_code == 0, r.output
        for opt in options:
            assert opt in r.output, f"{where}: `verinet {sub}` has no option {opt}"
        for cfg in configs:
            assert local_path(cfg).is_file(), f"{where}: config {cfg} is not in the repository"
    else:
        assert sub == "serve" and SERVE_PENDING, (
            f"{where}: `verinet {sub}` is not a command (commands: {sorted(cli_commands())})")
        for cfg in configs:
            assert local_path(cfg).is_file(), f"{where}: config {cfg} is not in the repository"


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bverinet_[a-z0-9_]+", text))


def unknown_metrics(names: set[str]) -> set[str]:
    def known(n: str) -> bool:
        if n in METRICS:
            return True
        base, _, suffix = n.rpartition("_")
        return suffix in ("bucket", "sum", "count") and METRICS.get(base) == "histogram"
    return {n for n in names if not known(n)}


def alert_rules() -> list[dict]:
    return [r for g in docs_of(PROM / "alerts.yml")[0]["groups"] for r in g["rules"] if "alert" in r]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


# --- every YAML ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path):
    docs = docs_of(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


def test_deploy_has_the_expected_files():
    for rel in ["Dockerfile", "README.md", "kuberay/rayservice.yaml", "kuberay/rayjob.yaml",
                "kuberay/raycluster.yaml", "prometheus/prometheus.yml", "prometheus/alerts.yml",
                "prometheus/alerts_test.yml", "grafana/verinet-dashboard.json"]:
        assert (DEPLOY / rel).is_file(), f"deploy/{rel} is missing"


def test_readme_covers_every_file():
    readme = (DEPLOY / "README.md").read_text()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name != "README.md":
            rel = path.relative_to(DEPLOY).as_posix()
            assert rel in readme or f"deploy/{rel}" in readme, f"deploy/README.md never mentions {rel}"


# --- KubeRay manifests -----------------------------------------------------------------------

def _ids(x):
    return x.name if isinstance(x, Path) else x.get("kind")


@pytest.mark.parametrize("path,doc", manifests(), ids=_ids)
def test_manifest_header(path, doc):
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if kind in RAY_KINDS:
        assert api == "ray.io/v1", f"{path.name}: {kind} must be apiVersion ray.io/v1, not {api}"
    else:
        assert (api, kind) in OTHER_KINDS, f"{path.name}: unexpected {api}/{kind}"
    name = doc.get("metadata", {}).get("name", "")
    assert DNS1123.match(name) and len(name) <= 63, f"{path.name}: bad metadata.name {name!r}"
    assert isinstance(doc.get("spec"), dict), f"{path.name}: {kind} has no spec"


def test_each_manifest_file_holds_its_kind():
    kinds = {p.name: {d["kind"] for d in docs_of(p)} for p in KUBERAY.glob("*.yaml")}
    assert "RayService" in kinds["rayservice.yaml"]
    assert "RayJob" in kinds["rayjob.yaml"]
    assert "RayCluster" in kinds["raycluster.yaml"]


@pytest.mark.parametrize("path,doc", ray_docs(), ids=_ids)
def test_ray_cluster_spec(path, doc):
    where = f"{path.name} {doc['kind']}"
    cs = cluster_spec(doc)
    assert RAY_VERSION, "deploy/Dockerfile declares no ARG RAY_VERSION"
    assert cs.get("rayVersion") == RAY_VERSION, f"{where}: rayVersion must equal the image's RAY_VERSION"
    head = cs["headGroupSpec"]
    workers = cs.get("workerGroupSpecs") or []
    assert workers, f"{where}: no worker groups"
    names = [w.get("groupName") for w in workers]
    assert all(names) and len(set(names)) == len(names), f"{where}: worker groupName missing or repeated"
    for w in workers:
        assert 0 <= w["minReplicas"] <= w.get("replicas", w["minReplicas"]) <= w["maxReplicas"], \
            f"{where}/{w['groupName']}: need minReplicas <= replicas <= maxReplicas"
    for gname, group in [("head", head)] + list(zip(names, workers)):
        params = group.get("rayStartParams")
        assert isinstance(params, dict), f"{where}/{gname}: rayStartParams must be a map"
        # KubeRay's rayStartParams is map[string]string: an unquoted number is rejected.
        assert all(isinstance(v, str) for v in params.values()), \
            f"{where}/{gname}: quote rayStartParams values"
        pod = group["template"]["spec"]
        c = ray_container(group)
        assert c.get("name") and c.get("image"), f"{where}/{gname}: container needs name and image"
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(res.get(part, {})), \
                f"{where}/{gname}: resources.{part} needs cpu and memory"
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{where}/{gname}: not non-root"
        assert c.get("readinessProbe") and c.get("livenessProbe"), f"{where}/{gname}: probes missing"
        # Image: the one deploy/Dockerfile builds; the CUDA variant exactly on GPU groups.
        flavour = "gpu" if gpus(c) else "cpu"
        assert c["image"].startswith("verinet:") and c["image"].endswith(f"-{flavour}"), \
            f"{where}/{gname}: image {c['image']} should be verinet:<version>-{flavour}"
        assert c["image"] == f"verinet:{verinet.__version__}-{flavour}", \
            f"{where}/{gname}: image tag does not match verinet {verinet.__version__}"
        # Every mounted volume is declared; every claim is created in the same file.
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {d["metadata"]["name"] for d in docs_of(path) if d["kind"] == "PersistentVolumeClaim"}
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{where}/{gname}: volumeMount {m['name']} has no volume"
            pvc = volumes[m["name"]].get("persistentVolumeClaim")
            if pvc:
                assert pvc["claimName"] in claims, f"{where}/{gname}: claim {pvc['claimName']} not defined"
        # Prometheus finds Ray's metrics on the port named `metrics` via the pod label below.
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        assert ports.get("metrics") == int(params.get("metrics-export-port", -1)), \
            f"{where}/{gname}: port `metrics` must equal rayStartParams metrics-export-port"
        assert group["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "verinet"
        # No token is ever written into a manifest.
        for env in c.get("env", []):
            if "TOKEN" in env["name"]:
                assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), \
                    f"{where}/{gname}: {env['name']} must come from a Secret"


def _only(path: Path, kind: str) -> dict:
    [doc] = [d for d in docs_of(path) if d["kind"] == kind]
    return doc


def test_rayservice_serve_config():
    doc = _only(KUBERAY / "rayservice.yaml", "RayService")
    raw = doc["spec"]["serveConfigV2"]
    assert isinstance(raw, str), "serveConfigV2 is a YAML document in a string"
    serve = yaml.safe_load(raw)
    head = ray_container(doc["spec"]["rayClusterConfig"]["headGroupSpec"])
    serve_port = {p["name"]: p["containerPort"] for p in head["ports"]}["serve"]
    assert serve["http_options"]["port"] == serve_port == 8000
    assert serve["http_options"]["host"] == "0.0.0.0"
    [application] = serve["applications"]
    assert application["name"] and application["route_prefix"] == "/"
    module, sep, attr = application["import_path"].partition(":")
    assert sep and module.startswith("verinet.serve"), f"import_path {application['import_path']}"
    cfg_path = application.get("args", {}).get("config")
    assert cfg_path and local_path(cfg_path).is_file(), f"args.config {cfg_path} is not in the repository"
    if SERVE_PENDING:
        return
    builder = getattr(importlib.import_module(module), attr, None)
    assert callable(builder), f"import_path {application['import_path']}: no app builder {attr} in {module}"
    from verinet.serve.config import load_serve_config

    cfg = load_serve_config(local_path(cfg_path))  # validates, ensemble and zoo models included
    assert (cfg.host, cfg.port) == (serve["http_options"]["host"], serve["http_options"]["port"])
    assert application["name"] == cfg.app_name
    # The cluster endpoint always wants the token, read from the variable the pods set from the Secret.
    assert cfg.auth.mode == "token" and cfg.auth.token is None
    for gname, group in groups(doc):
        assert cfg.auth.token_env in {e["name"] for e in ray_container(group).get("env", [])}, gname
    # Prometheus scrapes /metrics with no credentials: that needs public_metrics.
    jobs = {j["job_name"]: j for j in docs_of(PROM / "prometheus.yml")[0]["scrape_configs"]}
    assert cfg.auth.public_metrics or "authorization" in jobs["verinet-endpoint"], \
        "/metrics needs the token but Prometheus scrapes it without one"


def test_image_ships_every_path_the_manifests_name():
    """Paths under /app that the manifests run with are COPYed into the image and not dockerignored."""
    copied = []
    for ins, rest in dockerfile():
        if ins == "COPY":
            *srcs, dest = [w for w in rest.split() if not w.startswith("--")]
            base = APP_ROOT / dest if not dest.startswith("/") else PurePosixPath(dest)
            copied += [(src, PurePosixPath(base) if len(srcs) == 1 else base / PurePosixPath(src).name)
                       for src in srcs]
    ignore = [ln.strip() for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]

    def ignored(rel: str) -> bool:
        verdict = False
        for pat in ignore:
            neg = pat.startswith("!")
            pat = pat.lstrip("!")
            if rel == pat or rel.startswith(pat.rstrip("/") + "/"):
                verdict = not neg
        return verdict

    text = " ".join(p.read_text() for p in KUBERAY.glob("*.yaml"))
    paths = set(re.findall(r"(/app/[\w./-]+\.ya?ml)", text))
    assert paths, "the manifests name no file in the image"
    for path in paths:
        image_path = PurePosixPath(path)
        sources = [src for src, dest in copied if image_path == dest or image_path.is_relative_to(dest)]
        assert sources, f"{path} is not copied into the image by deploy/Dockerfile"
        rel = image_path.relative_to(APP_ROOT).as_posix()
        assert not ignored(rel), f"{path}: Dockerfile.dockerignore leaves it out of the build context"
        assert (ROOT / rel).is_file(), f"{path}: not in the repository"


def test_rayservice_token_and_serve_health():
    doc = _only(KUBERAY / "rayservice.yaml", "RayService")
    for gname, group in groups(doc):
        env = {e["name"]: e for e in ray_container(group).get("env", [])}
        # Bound to 0.0.0.0, the endpoint requires its bearer token: from a Secret, in every pod.
        ref = env.get("VERINET_API_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref == {"name": "verinet-api-token", "key": "token"}, f"RayService/{gname}: token Secret"
        if gname != "head":
            # KubeRay's rule for RayService workers: traffic only while the Serve proxy is healthy.
            assert "/-/healthz" in json.dumps(ray_container(group)["readinessProbe"]), \
                f"RayService/{gname}: readiness must include the Serve proxy's /-/healthz"
    assert "kubectl create secret generic verinet-api-token" in (DEPLOY / "README.md").read_text()


def test_rayjob_runs_compare_into_a_volume():
    doc = _only(KUBERAY / "rayjob.yaml", "RayJob")
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec.get("ttlSecondsAfterFinished"), int)
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["verinet", "compare"]
    check_verinet_argv(argv, "rayjob.yaml entrypoint")
    from verinet.experiments import load_config
    load_config(local_path(argv[argv.index("--config") + 1]))  # the job's config validates
    # The driver runs on the head pod: --out must land on a PersistentVolumeClaim mounted there.
    out = PurePosixPath(argv[argv.index("--out") + 1])
    head = spec["rayClusterSpec"]["headGroupSpec"]
    volumes = {v["name"]: v for v in head["template"]["spec"]["volumes"]}
    pvc_mounts = [PurePosixPath(m["mountPath"]) for m in ray_container(head)["volumeMounts"]
                  if "persistentVolumeClaim" in volumes[m["name"]]]
    assert any(out.is_relative_to(m) for m in pvc_mounts), f"--out {out} is not on a mounted volume claim"


def test_raycluster_has_cpu_and_gpu_groups_sized_for_the_gpu_configs():
    doc = _only(KUBERAY / "raycluster.yaml", "RayCluster")
    workers = doc["spec"]["workerGroupSpecs"]
    per_pod = [gpus(ray_container(w)) for w in workers]
    assert 0 in per_pod, "no CPU worker group"
    assert max(per_pod) > 0, "no GPU worker group"
    # A tensor-parallel model sits in one STRICT_PACK placement group: all its GPUs on one pod.
    def tp_sizes(node):
        if isinstance(node, dict):
            yield node.get("tensor_parallel_size", 1)
            for v in node.values():
                yield from tp_sizes(v)
        elif isinstance(node, list):
            for v in node:
                yield from tp_sizes(v)

    tp = max(t for p in (ROOT / "configs").glob("*-gpu.yaml") for t in tp_sizes(docs_of(p)))
    assert tp >= 2, "configs/*-gpu.yaml should hold the tensor-parallel baseline"
    assert max(per_pod) >= tp, f"GPU pods have {max(per_pod)} GPUs; configs/*-gpu.yaml need {tp} on one node"


def test_network_policy_keeps_ray_ports_inside_the_cluster():
    """Ray Serve's per-replica gRPC server binds [::]:0 (not configurable in Ray 2.60): only other Ray pods
    of verinet may reach arbitrary ports; from outside only the endpoint and the metrics port."""
    pol = _only(KUBERAY / "networkpolicy.yaml", "NetworkPolicy")
    spec = pol["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    selector = spec["podSelector"]["matchLabels"]
    for path, doc in ray_docs():
        for gname, group in groups(doc):
            labels = group["template"]["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in selector.items() if not k.startswith("ray.io/")), \
                f"{path.name}/{gname} is not covered by the network policy"
    open_ports = set()
    for rule in spec["ingress"]:
        if "ports" not in rule:  # every port: only from verinet's own Ray pods
            [peer] = rule["from"]
            assert peer["podSelector"]["matchLabels"] == selector, rule
        else:
            open_ports |= {p["port"] for p in rule["ports"]}
    serve_port = int(yaml.safe_load((DEPLOY / "serve-cluster.yaml").read_text()).get("port", 8000))
    assert open_ports == {serve_port, 8080}, open_ports
    readme = (DEPLOY / "README.md").read_text()
    assert "[::]:0" in readme and "networkpolicy.yaml" in readme


def test_metrics_service_selects_every_ray_pod():
    svc = _only(KUBERAY / "metrics-service.yaml", "Service")
    assert svc["spec"]["clusterIP"] == "None", "headless, so DNS SRV lists each pod"
    selector = svc["spec"]["selector"]
    assert selector.get("ray.io/is-ray-node") == "yes"
    for path, doc in ray_docs():
        for gname, group in groups(doc):
            labels = group["template"]["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in selector.items() if not k.startswith("ray.io/")), \
                f"{path.name}/{gname} is not selected by {svc['metadata']['name']}"
    [port] = svc["spec"]["ports"]
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"


# --- Dockerfile ------------------------------------------------------------------------------

def test_dockerfile():
    ins = dockerfile()
    args = docker_args()
    froms = [r for i, r in ins if i == "FROM"]
    assert froms[-1] == "${BASE_IMAGE}", "the final stage is the configurable base image"
    assert re.match(r"^python:3\.11-slim", args["BASE_IMAGE"]) or \
        args["BASE_IMAGE"].startswith(f"rayproject/ray:{RAY_VERSION}"), args["BASE_IMAGE"]
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = " ".join(r for i, r in ins if i == "RUN")
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in runs
    assert '"ray[serve]==${RAY_VERSION}"' in runs, "Ray must be pinned to the manifests' rayVersion"
    for i, r in ins:
        if i == "COPY":
            if r.startswith("--from="):
                continue  # from an earlier stage, not from the repository
            for src in r.split()[:-1]:
                if not src.startswith("--"):
                    assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    users = [r for i, r in ins if i == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    [health] = [r for i, r in ins if i == "HEALTHCHECK"]
    assert "/healthz" in health and ":8000" in health
    assert ("EXPOSE", "8000") in ins
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def final_stage() -> list[tuple[str, str]]:
    ins = dockerfile()
    last = max(k for k, (i, _) in enumerate(ins) if i == "FROM")
    return ins[last:]


def test_dockerfile_installs_the_wheel_not_the_source_tree():
    """The image runs what `pip install verinet-*.whl` gives: no editable install, no source on sys.path."""
    ins = dockerfile()
    stages = [r.split() for i, r in ins if i == "FROM"]
    assert len(stages) == 2 and stages[0][-2:] == ["AS", "wheel"], "a wheel stage, then the image"
    first, second = [k for k, (i, _) in enumerate(ins) if i == "FROM"]
    build_runs = " ".join(r for i, r in ins[first:second] if i == "RUN")
    assert "python -m build --wheel --outdir /dist" in build_runs
    final = final_stage()
    runs = [r for i, r in final if i == "RUN"]
    installs = [r for r in runs if "pip install" in r and "torch==" not in r]
    assert len(installs) == 1, installs
    [install] = installs
    assert re.search(r"/tmp/dist/verinet-\*\.whl", install), "the image installs the built wheel"
    assert not re.search(r"(^|\s)(-e|--editable)(\s|$)", install), "no editable install"
    assert "-c constraints.txt" in install, "the CPU image installs the versions CI tested"
    assert ("COPY", "--from=wheel /dist /tmp/dist") in final
    # No package source in the final image: it must run from site-packages.
    copied = [r.split()[0] for i, r in final if i == "COPY" and not r.startswith("--from")]
    assert "verinet" not in copied and "pyproject.toml" not in copied, copied
    env = " ".join(r for i, r in final if i == "ENV")
    assert "PYTHONPATH" not in env


def test_dockerfile_cmd_is_a_real_command():
    [cmd] = [r for i, r in dockerfile() if i == "CMD"]
    argv = json.loads(cmd)  # exec form: signals reach verinet, not a shell
    assert argv[:2] == ["verinet", "serve"], "the default command serves"
    check_verinet_argv(argv, "Dockerfile CMD")
    if not SERVE_PENDING:
        from verinet.serve.config import load_serve_config

        cfg = load_serve_config(local_path(argv[argv.index("--config") + 1]))  # validates
        assert cfg.auth.mode != "none" and cfg.auth.token_env == "VERINET_API_TOKEN", \
            "the image serves with auth"
    assert not [r for i, r in dockerfile() if i == "ENTRYPOINT"], \
        "no ENTRYPOINT, so `docker run IMAGE verinet ...` works"


# --- Prometheus ------------------------------------------------------------------------------

@pytest.mark.promtool
def test_promtool_check_config():
    r = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_prometheus_scrapes_the_endpoint_and_ray():
    cfg = docs_of(PROM / "prometheus.yml")[0]
    assert "alerts.yml" in cfg["rule_files"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    endpoint, ray = jobs["verinet-endpoint"], jobs["ray"]
    assert endpoint.get("metrics_path", "/metrics") == "/metrics"
    # SRV names must match what the manifests create: <RayService>-serve-svc port `serve`,
    # and the headless metrics Service port `metrics`.
    rs = _only(KUBERAY / "rayservice.yaml", "RayService")["metadata"]["name"]
    svc = _only(KUBERAY / "metrics-service.yaml", "Service")["metadata"]["name"]
    [endpoint_name] = endpoint["dns_sd_configs"][0]["names"]
    [ray_name] = ray["dns_sd_configs"][0]["names"]
    assert endpoint_name.startswith(f"_serve._tcp.{rs}-serve-svc.")
    assert ray_name.startswith(f"_metrics._tcp.{svc}.")


@pytest.mark.promtool
def test_promtool_check_rules():
    r = promtool("check", "rules", str(PROM / "alerts.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in r.stdout


@pytest.mark.promtool
def test_promtool_alert_unit_tests():
    r = promtool("test", "rules", str(PROM / "alerts_test.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_is_tested_firing_and_quiet():
    tests = docs_of(PROM / "alerts_test.yml")[0]
    assert tests["rule_files"] == ["alerts.yml"]
    fires, quiet = set(), set()
    for t in tests["tests"]:
        for case in t["alert_rule_test"]:
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fires == set(), f"alerts never shown firing: {sorted(names - fires)}"
    assert names - quiet == set(), f"alerts never shown quiet: {sorted(names - quiet)}"
    stale = (fires | quiet) - names
    assert stale == set(), f"tests for alerts that do not exist: {sorted(stale)}"


def test_required_alerts():
    exprs = {r["alert"]: " ".join(r["expr"].split()) for r in alert_rules()}
    joined = " ".join(exprs.values())
    assert "verinet_fleiss_kappa" in joined, "agreement drop"
    assert "verinet_quorum_misses_total" in joined, "quorum misses"
    assert re.search(r"histogram_quantile\(0\.99, .*verinet_request_duration_seconds_bucket", joined), "p99"
    assert "verinet_members_ready" in joined, "members not ready"
    for r in alert_rules():
        assert r.get("labels", {}).get("severity") in ("warning", "critical"), r["alert"]
        assert r.get("annotations", {}).get("summary"), r["alert"]


# --- Grafana ---------------------------------------------------------------------------------

def test_dashboard_is_grafana_json():
    d = dashboard()
    assert d["title"] and d["uid"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        cell = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & cell, f"panel {p['title']!r} overlaps another"
        cells |= cell
    for p in dashboard_panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no targets"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert isinstance(t.get("expr"), str) and t["expr"].strip(), p["title"]
            assert t.get("datasource", p["datasource"]) == p["datasource"], p["title"]
            for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                assert var.startswith("__") or var in variables, f"{p['title']}: ${var} is not defined"


def test_dashboard_shows_what_operators_need():
    panels = dashboard_panels()
    exprs = " ".join(" ".join(e.split()) for e in dashboard_exprs())
    assert re.search(r"by \(status\) \(rate\(verinet_requests_total", exprs), "request rate by status"
    for q in ("0.5", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(verinet_request_duration_seconds_bucket" in exprs
    assert re.search(r"by \(le, member\) \(rate\(verinet_member_duration_seconds_bucket", exprs), "per member"
    for name in ("verinet_fleiss_kappa", "verinet_verifier_disagreement_ratio", "verinet_quorum_misses_total",
                 "verinet_member_restarts_total", "verinet_queue_depth", "verinet_members_ready"):
        assert name in exprs, name
    heat = [p for p in panels if p["type"] == "heatmap"]
    assert any(t.get("format") == "heatmap" and "verinet_step_agreement_ratio_bucket" in t["expr"]
               for p in heat for t in p["targets"]), "agreement histogram as a heatmap"


@pytest.mark.promtool
def test_dashboard_exprs_are_valid_promql(tmp_path):
    """promtool parses every panel query (Grafana's variables filled in) as a recording rule."""
    fill = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
            "${member}": ".*", "$member": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for k, v in fill.items():
            expr = expr.replace(k, v)
        assert "$" not in expr, f"unfilled variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


# --- metric names ----------------------------------------------------------------------------

def test_metric_names_are_the_ones_exported():
    texts = {
        "alerts.yml": (PROM / "alerts.yml").read_text(),
        "alerts_test.yml": (PROM / "alerts_test.yml").read_text(),
        "verinet-dashboard.json": DASHBOARD.read_text(),
    }
    for name, text in texts.items():
        names = metric_names(text)
        assert names, f"{name} uses no verinet metric"
        assert unknown_metrics(names) == set(), f"{name} uses metrics the endpoint does not export"
