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


def test_the_default_frontier_is_every_committed_zoo_recipe_smallest_first():
    from verinet.zoo.registry import list_checkpoints

    cards = {name: card for name, _, card in list_checkpoints()}
    sizes = CompareConfig().frontier_sizes()
    assert sorted(n for ms in sizes.values() for n in ms) == sorted(cards)  # every checkpoint, once
    least = [min(cards[n]["parameters"]["non_embedding"] for n in ms) for ms in sizes.values()]
    assert least == sorted(least), sizes
    assert all(len({cards[n]["parameters"]["non_embedding"] for n in ms}) == 1 for ms in sizes.values())
