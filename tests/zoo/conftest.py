import pytest

from verinet.zoo.config import ModelSize, TaskMix, Training, ZooConfig


def micro_config(steps: int = 40, **training) -> ZooConfig:
    return ZooConfig(
        name="micro",
        size=ModelSize(hidden=64, layers=2, heads=2, intermediate=128, max_len=256),
        tasks=[TaskMix(family="arith", params=[{"steps": 1, "distractors": 0}, {"steps": 2, "distractors": 0}]),
               TaskMix(family="logic", weight=0.3, params=[{"hops": 1, "distractors": 0}])],
        training=Training(steps=steps, batch_size=8, lr=3e-3, checkpoint_every=5, threads=1, **training),
        eval_n=10,
    )


@pytest.fixture
def micro():
    return micro_config()
