from pathlib import Path

import pytest
import yaml

from verinet.zoo.config import ZooError, load_zoo_config


def _write(tmp_path, data):
    p = tmp_path / "z.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


BASE = {
    "name": "t",
    "size": {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 128},
    "tasks": [{"family": "arith", "params": [{"steps": 2}]}],
    "training": {"steps": 10},
}


def test_valid_config_loads(tmp_path):
    assert load_zoo_config(_write(tmp_path, BASE)).size.hidden == 64


@pytest.mark.parametrize("patch, needle", [
    ({"size": {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128}}, "head_dim = hidden / heads = 16 < 32"),
    ({"size": {"hidden": 100, "layers": 2, "heads": 3, "intermediate": 128}}, "divisible"),
    ({"tasks": [{"family": "chess", "params": [{}]}]}, "tasks.0.family"),
    ({"tasks": [{"family": "arith", "params": [{"steps": 99}]}]}, "steps"),
    ({"training": {"steps": 0}}, "training.steps"),
    ({"name": "Bad Name"}, "name"),
    ({"extra": 1}, "extra: unknown key"),
])
def test_bad_configs_say_what_is_wrong(tmp_path, patch, needle):
    with pytest.raises(ZooError, match=needle):
        load_zoo_config(_write(tmp_path, {**BASE, **patch}))


def test_missing_config(tmp_path):
    with pytest.raises(ZooError, match="not found"):
        load_zoo_config(tmp_path / "nope.yaml")


ZOO_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "zoo"
LADDER = sorted(ZOO_CONFIGS.rglob("*.yaml"))  # the stage configs in subdirectories too


@pytest.mark.parametrize("path", LADDER, ids=lambda p: p.relative_to(ZOO_CONFIGS).as_posix())
def test_shipped_ladder_configs_validate(path):
    cfg = load_zoo_config(path)
    assert cfg.size.hidden // cfg.size.heads >= 32
