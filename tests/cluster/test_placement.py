"""Placement: the pure plan, then the real Ray scheduling of the real options on declared GPUs.

`ray.init(num_gpus=4)` declares GPUs that do not exist, so resource logic runs on a CPU machine.
The dry-run ensemble schedules a stand-in per member with exactly the options and placement
groups a real one uses, and reports what Ray assigned; no model is loaded.
"""

import time
from pathlib import Path

import pytest
import ray
from ray.util import placement_group_table

from verinet.backends import EnsembleConfig, EnsembleConfigError, MemberSpec, Resources, load_ensemble_config
from verinet.cluster import plan

from .conftest import local_ray

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _vllm(name: str, **res) -> MemberSpec:
    return MemberSpec(name=name, backend="vllm", model="Qwen/Qwen2.5-0.5B-Instruct", format="chat",
                      dtype="bfloat16", resources=Resources(**res))


def _gpu_config() -> EnsembleConfig:
    ens = load_ensemble_config(CONFIGS / "ensemble-gpu.yaml", check_models=False)
    base = load_ensemble_config(CONFIGS / "baseline-gpu.yaml", check_models=False)
    return EnsembleConfig(members=ens.members + base.members, quorum=1)


# ---- the pure plan ---------------------------------------------------------------
def test_plan_packs_fractions_and_keeps_a_tp_group_on_one_node():
    p = plan(_gpu_config(), {"CPU": 4.0, "GPU": 4.0})
    tp = p["qwen7b"]
    small = [m for m in p.members if m.name != "qwen7b"]
    assert tp.uses_group and len(tp.bundles) == 2 and tp.strategy == "STRICT_PACK"
    assert len({m.gpus for m in small}) == 1 and not set(small[0].gpus) & set(tp.gpus)
    # two nodes of 2 GPUs: the TP group takes one node, the fractions the other
    p2 = plan(_gpu_config(), [{"CPU": 2.0, "GPU": 2.0}, {"CPU": 2.0, "GPU": 2.0}])
    assert p2["qwen7b"].gpus == (0, 1) and {m.node for m in p2.members} == {0, 1}


@pytest.mark.parametrize("members, cluster, match", [
    ([_vllm("big", num_gpus=1, tensor_parallel_size=8)], {"CPU": 4, "GPU": 4},
     r"member big: tensor_parallel_size 8 needs 8 GPUs on one node, but the largest node has 4"),
    ([_vllm("a", num_gpus=1)], {"CPU": 4},
     r"a \(num_gpus 1.*ask for GPUs but the Ray cluster has none.*set their resources.num_gpus to 0"),
    ([_vllm(f"m{i}", num_gpus=0.5) for i in range(9)], {"CPU": 16, "GPU": 4},
     r"ask for 4.5 GPUs in all .* but the Ray cluster has 4: lower resources.num_gpus"),
    ([_vllm("a", num_gpus=0.5, num_cpus=3), _vllm("b", num_gpus=0.5, num_cpus=3)], {"CPU": 4, "GPU": 1},
     r"ask for 6 CPUs in all .* has 4: lower resources.num_cpus"),
    ([_vllm("a", num_gpus=0.6), _vllm("b", num_gpus=0.6)], {"CPU": 4, "GPU": 1.2},
     r"member b .* fits on no node .*fractional num_gpus must fit inside one GPU"),
    ([_vllm("big", num_gpus=1, tensor_parallel_size=2)], [{"CPU": 2, "GPU": 1}, {"CPU": 2, "GPU": 1}],
     r"needs 2 GPUs on one node, but the largest node has 1"),
])
def test_impossible_resources_say_what_to_change(members, cluster, match):
    with pytest.raises(EnsembleConfigError, match=match):
        plan(members, cluster)


def _zoo(name: str, **custom) -> MemberSpec:
    return MemberSpec(name=name, backend="hf", model="zoo-xs-s0", resources=Resources(num_cpus=0.5, custom=custom))


def test_custom_resources_pin_members_to_the_nodes_that_declare_them():
    from verinet.cluster import actor_options

    members = [_zoo("a", node_b=1), _zoo("b", node_a=1), _zoo("c")]
    assert len({*members, _zoo("a", node_b=1.0)}) == 3  # specs stay hashable with a custom dict
    nodes = [{"CPU": 4.0}, {"CPU": 1.0, "node_a": 4.0}, {"CPU": 1.0, "node_b": 4.0}]
    p = plan(members, nodes)
    assert [p[m].node for m in "abc"] == [2, 1, 0] and p["a"].custom == (("node_b", 1.0),)
    assert "1 node_b" in p.summary()
    assert actor_options(p["a"])["resources"] == {"node_b": 1.0} and "resources" not in actor_options(p["c"])
    # a tensor-parallel member takes its custom resources in bundle 0, where its actor runs
    tp = MemberSpec(name="tp", backend="vllm", model="Qwen/Qwen2.5-7B-Instruct", format="chat",
                    resources=Resources(num_cpus=1, num_gpus=1, tensor_parallel_size=2, custom={"big": 1}))
    assert plan([tp], [{"CPU": 2, "GPU": 2, "big": 1}])["tp"].bundles == ({"GPU": 1.0, "CPU": 1.0, "big": 1.0},
                                                                         {"GPU": 1.0})


@pytest.mark.parametrize("members, cluster, match", [
    ([_zoo("a", node_b=1)], [{"CPU": 2, "node_a": 1}],
     r"custom resource 'node_b' \(a 1\) but no live node .*ray start --resources '\{\"node_b\": 1\}'"),
    ([_zoo("a", node_a=1), _zoo("b", node_a=1)], [{"CPU": 2, "node_a": 1}],
     r"2 of the custom resource 'node_a' in all \(a 1, b 1\) but the Ray cluster's live nodes declare 1"),
    ([_zoo("a", node_a=1)], [{"CPU": 2}, {"CPU": 0.25, "node_a": 1}],
     r"member a \(num_gpus 0, num_cpus 0.5, node_a 1\) fits on no node"),
])
def test_impossible_custom_resources_say_what_to_change(members, cluster, match):
    with pytest.raises(EnsembleConfigError, match=match):
        plan(members, cluster)


@pytest.mark.parametrize("custom, match", [({"CPU": 1}, "use num_cpus / num_gpus"), ({"node_a": 0}, "positive")])
def test_custom_resources_are_checked(custom, match):
    with pytest.raises(ValueError, match=match):
        Resources(custom=custom)


# ---- real scheduling on declared GPUs ------------------------------------------------
@pytest.fixture(scope="module")
def gpu_cluster():
    with local_ray(num_cpus=4, num_gpus=4):
        yield


def test_gpu_config_schedules_as_planned(gpu_cluster):
    from verinet.cluster import Ensemble

    ens = Ensemble(_gpu_config(), name="placement", dry_run=True, schedule_timeout_s=30, load_timeout_s=60)
    try:
        info = ens.info()
        small = [n for n in ens.members if n != "qwen7b"]
        # four 0.25-GPU members: each holds a quarter of a GPU, all four on the same one
        for n in small:
            assert info[n]["assigned"]["GPU"] == pytest.approx(0.25), info[n]
            assert info[n]["placement_group"] is None
        assert len({tuple(info[n]["gpu_ids"]) for n in small}) == 1
        assert len(info[small[0]]["gpu_ids"]) == 1
        # the TP=2 model: its actor holds no GPU and sits in a ready group of two GPU bundles
        big = info["qwen7b"]
        assert "GPU" not in big["assigned"] and big["assigned"]["CPU"] == pytest.approx(1.0)
        pg_id = big["placement_group"]
        assert pg_id is not None
        table = placement_group_table()[pg_id]
        assert table["state"] == "CREATED" and table["strategy"] == "STRICT_PACK"
        assert [b.get("GPU") for b in table["bundles"].values()] == [1.0, 1.0]
        assert table["name"] == "placement.qwen7b.tp"
        # workers started in the group's bundles (as vLLM's Ray executor does) get one GPU each,
        # distinct from each other and from the shared GPU of the small members
        workers = ray.get(ens.actor("qwen7b").group_workers.remote(), timeout=60)
        tp_gpus = [w["gpu_ids"][0] for w in workers]
        assert len(workers) == 2 and len(set(tp_gpus)) == 2
        assert all(w["placement_group"] == pg_id for w in workers)
        assert not set(tp_gpus) & set(info[small[0]]["gpu_ids"])
        assert ray.available_resources().get("GPU", 0) == pytest.approx(1.0)
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        assert {f"placement.{n}" for n in ens.members} <= names
    finally:
        ens.shutdown()
    assert placement_group_table()[pg_id]["state"] == "REMOVED"
    deadline = time.monotonic() + 30
    while ray.available_resources().get("GPU", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("GPU", 0) == pytest.approx(4.0)


def test_impossible_ensemble_fails_fast_without_starting_anything(gpu_cluster):
    from verinet.cluster import Ensemble

    before = len(ray.util.list_named_actors(all_namespaces=True))
    for members in ([_vllm("big", num_gpus=1, tensor_parallel_size=8)],
                    [_vllm(f"m{i}", num_gpus=1) for i in range(5)]):
        t0 = time.monotonic()
        with pytest.raises(EnsembleConfigError, match="GPU"):
            Ensemble(EnsembleConfig(members=members), dry_run=True)
        assert time.monotonic() - t0 < 5
    assert len(ray.util.list_named_actors(all_namespaces=True)) == before
