"""benchmarks/backends.py: every path measured on a zoo model in this process, and the roofline
denominators (a peak is the best of its trials; the shape peak times the model's own layers)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_backends", ROOT / "benchmarks" / "backends.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)
    spec.loader.exec_module(mod)
    return mod


def test_every_path_on_one_model_directly(bench):
    from verinet.backends import MemberSpec, make_backend

    texts, steps = bench.workload(2)
    backend = make_backend(MemberSpec(name="xs", backend="hf", model="zoo-xs-s0", batch_size=64))
    ne = backend.info()["non_embedding_parameters"]
    paths = bench.run_paths(lambda m, *a, **k: getattr(backend, m)(*a, **k), texts, steps, ne, peak=1e11,
                            repeats=2)
    assert set(paths) == {"likelihood", "tagged", "per_step", "generate"}
    lengths = [len(backend.tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert paths["tagged"]["tokens"] == sum(lengths)  # every token of every chain, no padding
    assert paths["likelihood"]["tokens"] == sum(lengths)
    for row in paths.values():
        assert row["steps_per_s"] > 0 and 0 < row["roofline_fraction"] == pytest.approx(row["flop_per_s"] / 1e11)
    assert 0 <= paths["generate"]["parsed_share"] <= 1


def test_peaks_are_the_best_trial_and_count_the_models_own_layers(bench, monkeypatch):
    model = torch.nn.Module()
    model.model = torch.nn.Sequential(torch.nn.Linear(8, 16, bias=False), torch.nn.Linear(16, 8, bias=False))
    times = iter([0.0, 1.0, 5.0, 5.5, 9.0, 11.0])  # runs of 1.0, 0.5 and 2.0 s: the best is 0.5
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(times))
    assert bench.shape_peak(model, tokens=10, repeats=3) == pytest.approx(2 * 10 * (8 * 16 + 16 * 8) / 0.5)
    times = iter([0.0, 2.0, 3.0, 4.0])  # trials of 2.0 and 1.0 s
    assert bench.peak_matmul_flops(n=4, reps=3, trials=2) == pytest.approx(2 * 4**3 * 3 / 1.0)
