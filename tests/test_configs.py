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
