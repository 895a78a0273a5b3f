"""Ray for the cluster tests: in-process, on loopback only, one instance per test module.

The environment must be set before Ray is imported: without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
Ray binds the machine's external interface. Never `ray stop` here: it would kill other Ray
processes on the machine.
"""

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import contextlib

import pytest
import ray

from verinet.backends import MemberSpec, Resources
from verinet.zoo.registry import MODELS_DIR

ZOO = "zoo-xs-s0"


@contextlib.contextmanager
def local_ray(num_cpus: float, num_gpus: float = 0):
    """A fresh in-process Ray with declared resources (GPUs need not exist), shut down after."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=200 * 2**20, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def zoo_member(name: str, *, model: str = ZOO, num_cpus: float = 0.5, **kw) -> MemberSpec:
    return MemberSpec(name=name, backend="hf", model=model, format="zoo", dtype="float32",
                      resources=Resources(num_cpus=num_cpus), **kw)


@pytest.fixture(scope="session")
def zoo_model():
    if not (MODELS_DIR / ZOO).is_dir():
        pytest.fail(f"zoo checkpoint {ZOO} is not in {MODELS_DIR}; it is committed with the package")
    return ZOO
