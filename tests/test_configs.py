"""Every shipped config file validates."""

from pathlib import Path

import pytest

from verinet.experiments import CompareConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("compare*.yaml")), ids=lambda p: p.name)
def test_compare_configs_validate(path):
    assert isinstance(load_config(path), CompareConfig)


def test_compare_local_is_the_embedded_default():
    assert load_config(CONFIGS / "compare-local.yaml") == CompareConfig()


def test_the_default_frontier_is_the_size_ladder_and_the_arms_own_recipes_smallest_first():
    from verinet.experiments.config import EnsembleArm
    from verinet.zoo.registry import ladder, list_checkpoints

    rungs = {"zoo-xs": ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"], "zoo-s": ["zoo-s"], "zoo-m": ["zoo-m"],
             "zoo-l": ["zoo-l"]}
    ladder_members = [{"name": n, "backend": "hf", "model": n, "format": "zoo"} for n in rungs["zoo-xs"]]
    ladder_only = CompareConfig(ensemble=EnsembleArm(members=ladder_members)).frontier_sizes()
    assert list(ladder_only.items()) == list(rungs.items())  # in this order
    assert [n for n, _, _ in ladder()] == [n for ms in rungs.values() for n in ms]
    others = sorted(n for n, _, _ in list_checkpoints() if n not in {n for ms in rungs.values() for n in ms})
    assert others, "no second recipe committed"
    members = [{"name": n, "backend": "hf", "model": n, "format": "zoo"} for n in [*others, "zoo-xs-s0"]]
    sizes = CompareConfig(ensemble=EnsembleArm(members=members)).frontier_sizes()
    assert list(sizes) == ["zoo-xs", "zoo-xs-sf", "zoo-s", "zoo-m", "zoo-l"]  # its own row, by parameters
    assert sizes["zoo-xs-sf"] == others and sizes["zoo-xs"] == rungs["zoo-xs"]
    # the default ensemble is the ladder's own xs: the frontier is the ladder alone
    assert list(CompareConfig().frontier_sizes().items()) == list(rungs.items())
