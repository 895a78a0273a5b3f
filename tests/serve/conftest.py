"""Shared pieces of the endpoint tests: zoo members, requests built from real task chains, promtool.

Ray, when a module starts it, stays on loopback (the environment below must be set before Ray
is imported) and is shut down by that module; never `ray stop` here.
"""

import contextlib
import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil
import subprocess

import pytest

from verinet.backends import EnsembleConfig, MemberSpec, Resources
from verinet.serve.config import ServeConfig
from verinet.serve.ports import free_port
from verinet.tasks import get_family

MEMBERS = ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"]
REQUIRED_METRICS = [
    "verinet_requests_total", "verinet_request_duration_seconds", "verinet_member_duration_seconds",
    "verinet_steps_verified_total", "verinet_verdicts_total", "verinet_step_agreement_ratio",
    "verinet_fleiss_kappa", "verinet_verifier_disagreement_ratio", "verinet_member_restarts_total",
    "verinet_quorum_misses_total", "verinet_queue_depth", "verinet_members_ready",
]


def zoo_ensemble(quorum: int = 2) -> EnsembleConfig:
    return EnsembleConfig(members=[MemberSpec(name=n, backend="hf", model=n, format="zoo", dtype="float32",
                                              resources=Resources(num_cpus=0.5)) for n in MEMBERS],
                          quorum=quorum, retries=0, call_timeout_s=120)


def serve_config(**updates) -> ServeConfig:
    base = dict(ensemble=zoo_ensemble(), host="127.0.0.1", port=free_port(), health_interval_s=1.0,
                member_timeout_s=30.0, timeout_s=60.0, max_queue=16)
    base.update(updates)
    return ServeConfig(**base)


def arith_requests(n: int, seed: int = 0, *, inject: bool = True, **extra) -> list[dict]:
    """Requests for gold (and injected-error) arith chains; each carries its label as '_first_error'."""
    fam = get_family("arith")
    out = []
    for p in fam.sample(n, seed=seed, params={"steps": 3, "distractors": 1}):
        chains = [fam.gold_chain(p)] + ([fam.inject(p, k) for k in fam.injectable_kinds(p)] if inject else [])
        for c in chains:
            out.append({"question": p.question, "steps": [s.text for s in c.steps], "answer": c.answer,
                        "_first_error": c.first_error, **extra})
    return out


def body(req: dict) -> dict:
    return {k: v for k, v in req.items() if not k.startswith("_")}


def promtool_check(text: str) -> None:
    """`promtool check metrics` must accept the exposition. Tests that call this are marked
    ``promtool`` and run in CI's promtool step, which installs Debian's prometheus package."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: `apt-get install -y prometheus` provides it "
                    "(.ci/run installs it before the promtool step)")
    r = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, f"promtool check metrics failed:\n{r.stdout.decode()}{r.stderr.decode()}"


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@contextlib.contextmanager
def serve_app(cfg, token):
    """The Ray Serve application of ``cfg`` on a fresh in-process Ray (loopback); yields its URL."""
    from ray import serve

    from tests.cluster.conftest import local_ray
    from verinet.serve.app import start

    with local_ray(4):
        try:
            yield start(cfg, token)
        finally:
            serve.shutdown()
