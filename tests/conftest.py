"""Suite-wide collection rules."""

from __future__ import annotations

import signal

import pytest


def pytest_addoption(parser):
    parser.addoption("--with-smollm2", action="store_true", default=False,
                     help="keep the real-model tests (marker smollm2) even when -m does not name the marker "
                          "(the vllm CI step runs its zoo and its SmolLM2 tests in one session)")


def pytest_collection_modifyitems(config, items):
    """Real-model tests (marker ``smollm2``) run only when ``-m`` names the marker, or with
    ``--with-smollm2``: the fast suite's ``-m "not slow and ..."`` does not, so they are deselected
    there rather than collected and skipped."""
    if "smollm2" in (config.getoption("-m") or "") or config.getoption("--with-smollm2"):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("smollm2") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def sigint_caught():
    """SIGINT as an interactive process has it: a background job (CI under nohup) inherits it ignored,
    and verinet rightly leaves an ignored SIGINT alone."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
