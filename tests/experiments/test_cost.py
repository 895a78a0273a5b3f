"""Cost accounting: parameters from checkpoint configs for every engine, FLOPs per phase, accelerator-seconds."""

import pytest

from verinet.backends.base import Usage
from verinet.backends.config import MemberSpec, Resources
from verinet.experiments import ConfigError
from verinet.experiments.cost import (
    Cost, CostError, checkpoint_parameters, flops, matched_k, shares, total, usage_cost,
)


def test_parameters_come_from_the_checkpoint_config_whatever_the_engine():
    from verinet.backends.hf import HFBackend

    hf = MemberSpec(name="a", backend="hf", model="zoo-xs-s0")
    n = checkpoint_parameters(hf)
    backend = HFBackend(hf.model_location())
    try:
        assert n == backend.info()["non_embedding_parameters"] == 82_240  # the loaded model agrees
    finally:
        backend.close()
    # vllm reads the same checkpoint; no weights are loaded to count
    assert checkpoint_parameters(MemberSpec(name="b", backend="vllm", model="zoo-l")) == 2_213_568
    # an OpenAI-compatible server of a local checkpoint directory
    from verinet.zoo.registry import MODELS_DIR

    served = MemberSpec(name="c", backend="openai", model=str(MODELS_DIR / "zoo-m"), base_url="http://127.0.0.1:9/v1")
    assert checkpoint_parameters(served) == checkpoint_parameters(MemberSpec(name="d", backend="hf", model="zoo-m"))


def test_unknown_size_is_an_error_never_zero():
    remote = MemberSpec(name="big", backend="openai", model="no-such-org/no-such-model-7b",
                        base_url="http://127.0.0.1:9/v1")
    with pytest.raises(CostError, match=r"cost: \{parameters: \{big: N\}\}"):
        checkpoint_parameters(remote)
    assert issubclass(CostError, ConfigError)  # the CLI reports it as a config problem
    assert checkpoint_parameters(remote, {"big": 6.5e9}) == 6.5e9
    with pytest.raises(CostError, match="no parameter count"):
        usage_cost({"x": {"solve": Usage(10, 5)}}, {"y": 1.0})
    with pytest.raises(CostError):
        matched_k(1e9, lambda k: 0.0, 8)


def test_the_compute_matched_k_counts_every_member_checking_every_other_chain():
    """all_pairs: K members each write a chain and check K - 1, so the cost grows as K squared; matching
    K by the cost of one member at the ensemble's size would buy an ensemble that costs far more."""
    from types import SimpleNamespace

    from verinet.experiments.summary import frontier_flops

    per = {"member_solve": 1.0, "verify_one": 1.0}
    cfg = lambda topology, k=2: SimpleNamespace(sweep=SimpleNamespace(topology=topology),  # noqa: E731
                                                ensemble=SimpleNamespace(k=k))
    pairs = [frontier_flops(cfg("all_pairs"), per, k) for k in range(1, 6)]
    assert pairs == [2.0, 4.0, 9.0, 16.0, 25.0]  # alone, a model checks its own chain
    assert matched_k(20.0, lambda k: frontier_flops(cfg("all_pairs"), per, k), 6) == (4, 4)  # 16 is nearest 20
    assert matched_k(20.0, lambda k: frontier_flops(cfg("ring"), per, k), 6) == (6, 10)  # capped by max_k
    assert [frontier_flops(cfg("k_random", k=2), per, k) for k in (1, 2, 3, 4)] == [2.0, 4.0, 9.0, 12.0]
    assert matched_k(1.0, lambda k: frontier_flops(cfg("ring"), per, k), 6) == (1, 1)  # never below one model


def test_gpu_and_cpu_shares():
    assert shares(MemberSpec(name="a", backend="vllm", model="m", resources=Resources(num_gpus=0.25))) == (0.25, 0.0)
    tp = MemberSpec(name="b", backend="vllm", model="m", resources=Resources(num_gpus=1, tensor_parallel_size=2))
    assert shares(tp) == (2.0, 0.0)
    assert shares(MemberSpec(name="c", backend="hf", model="m", resources=Resources(num_cpus=0.5))) == (0.0, 0.5)


def test_costs_are_kept_per_phase_and_add_up():
    usage = {"small": {"solve": Usage(100, 50), "verify": Usage(300, 0)}, "big": {"verify": Usage(40, 0)}}
    seconds = {"small": {"solve": 2.0, "verify": 1.0}, "big": {"verify": 4.0}}
    c = usage_cost(usage, {"small": 1_000.0, "big": 10_000.0}, wall_s=7.0, member_s=seconds,
                   member_shares={"small": (0.25, 0.0), "big": (2.0, 0.0)})
    assert c.flops == flops(1_000, 450) + flops(10_000, 40) == 2 * (450_000 + 400_000)
    assert c.flops_of(["solve"]) == flops(1_000, 150)
    assert c.prefill == 440 and c.decode == 50 and c.tokens == 490
    assert c.member_s == 7.0
    assert c.accelerator_s == pytest.approx(3.0 * 0.25 + 4.0 * 2.0)  # seconds x GPU share (x TP)
    assert c.cpu_s == 0.0
    again = Cost.from_dict(c.as_dict())
    assert again.as_dict() == c.as_dict()
    both = total([c, again])
    assert both.flops == 2 * c.flops and both.phases["verify"]["member_s"] == 10.0
    # a virtual member runs its model's parameters
    v = usage_cost({"small.k3": {"solve": Usage(10, 0)}}, {"small": 5.0}, model_of={"small.k3": "small"})
    assert v.flops == flops(5.0, 10)
