"""The `novelty` probe: its smoke run end to end, resumption, and the seen/unseen split by type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from verinet.probes import ProbeError, get_probe, load_probe_config, run_probe
from verinet.probes.novelty import (
    NoveltyConfig, _problems, instance_type, seen_types, tabulate, unpaired_difference,
)
from verinet.tasks import get_family

CONFIG = Path("configs/probes/novelty.yaml")
FIGURE = {"value", "ci_low", "ci_high", "n"}


def _config() -> NoveltyConfig:
    return load_probe_config(CONFIG, NoveltyConfig, "novelty")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    probe = get_probe("novelty")
    cfg = probe.smoke(_config())
    out = tmp_path_factory.mktemp("novelty")
    return cfg, out, run_probe(probe, cfg, out)


def test_smoke_writes_summary_report_and_plot(smoke_run):
    cfg, out, summary = smoke_run
    for f in ("summary.json", "report.md", "report.html", "novelty.png", "config.yaml"):
        assert (out / f).is_file(), f
    assert json.loads((out / "summary.json").read_text())["probe"] == "novelty"
    assert set(summary["groups"]) == set(cfg.sizes)
    for g in summary["groups"].values():
        for sl in ("control", "longer", "unseen"):
            assert FIGURE <= set(g[sl]["accuracy"]) and FIGURE <= set(g[sl]["early_answering_aoc"])
            assert g[sl]["n"] == cfg.n  # the shape axis leaves nothing out
            assert 0 < g[sl]["accuracy_chance"] <= 1  # a slice of problems: some answer is the most frequent
    for c in summary["contrasts"].values():
        assert FIGURE <= set(c["accuracy"]["unseen_minus_longer"])
    assert summary["seen_types"] == ["linear"] and summary["unseen_types"] == ["reach-back"]
    assert summary["findings"] and all(isinstance(f, str) and f.endswith(".") for f in summary["findings"])
    assert "(b) unseen - (a) longer" in (out / "report.md").read_text()


def test_rerun_resumes_without_retraining(smoke_run):
    cfg, out, summary = smoke_run
    stamps = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*/model.safetensors")}
    records = (out / "faith" / "eval" / "records.jsonl").read_text()
    assert len(stamps) == len(cfg.sizes)
    again = run_probe(get_probe("novelty"), cfg, out)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (out / "faith" / "eval" / "records.jsonl").read_text() == records
    assert again["groups"] == summary["groups"]


def test_seen_and_unseen_slices_are_disjoint_by_type():
    cfg = _config()
    seen = seen_types(cfg)
    assert seen == frozenset({"linear"})
    _, info = _problems(cfg)
    slices = {sl for sl, _, _ in info.values()}
    assert slices == {"control", "longer", "unseen"}
    for sl, k, t in info.values():
        assert (t in seen) == (sl != "unseen"), (sl, k, t)
        if sl == "unseen":
            assert k in cfg.train_lengths  # same lengths as training, only the type is new
        if sl == "longer":
            assert k > max(cfg.train_lengths)
    # the training distribution itself never shows the unseen type
    fam = get_family("arith")
    for params in cfg.train_params():
        assert {instance_type(p, "shape") for p in fam.sample(30, seed=3, params=params)} == {"linear"}


def test_instance_type_reads_shape_and_ops():
    fam = get_family("arith")
    p = fam.generate(1, {"steps": 4, "branching": 1.0, "ops": "*", "distractors": 0})
    assert instance_type(p, "shape") == "reach-back" and instance_type(p, "ops") == "*"
    q = fam.generate(1, {"steps": 4, "branching": 0.0, "ops": "+-", "distractors": 0})
    assert instance_type(q, "shape") == "linear" and instance_type(q, "ops") in {"+", "-", "+-"}


def test_ops_axis_leaves_out_problems_of_seen_types():
    cfg = NoveltyConfig.model_validate({**_config().model_dump(mode="json"), "axis": "ops", "n": 20,
                                        "seen": {"branching": 0.0, "ops": "+-"},
                                        "unseen": {"branching": 0.0, "ops": "+*"}, "unseen_lengths": [1, 4]})
    seen = seen_types(cfg)
    assert seen == frozenset({"+", "-", "+-"})
    _, info = _problems(cfg)
    unseen = [t for sl, _, t in info.values() if sl == "unseen"]
    assert any(t in seen for t in unseen) and any(t not in seen for t in unseen)  # "+" alone is seen: left out


@pytest.mark.parametrize("change, field", [
    ({"longer_lengths": [5]}, "longer_lengths"),
    ({"unseen_lengths": [2]}, "unseen_lengths"),
    ({"unseen_lengths": [9]}, "unseen_lengths"),
    ({"seen": {"branching": 0.0, "steps": 3}}, "seen"),
    ({"base": {"distractors": 30}}, "distractors"),
    ({"axis": "colour"}, "axis"),
    ({"tests": ["early_answering", "filer"]}, "tests"),  # a typo fails at load time, not after training
    ({"tests": []}, "tests"),
])
def test_bad_config_names_the_field(tmp_path, change, field):
    data = {**yaml.safe_load(CONFIG.read_text()), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProbeError, match=field):
        load_probe_config(path, NoveltyConfig, "novelty")


def test_unpaired_difference_interval():
    d = unpaired_difference([0.0] * 50, [1.0] * 25 + [0.0] * 25, n_boot=500, seed=0)
    assert d["value"] == pytest.approx(0.5) and 0.3 < d["ci_low"] < 0.5 < d["ci_high"] < 0.7
    assert unpaired_difference([], [1.0], n_boot=100, seed=0)["value"] is None


def test_figures_are_each_members_own():
    """Records hold every size's chain of every problem: each size's figures (whole chain valid included)
    must come from its own records, not from whichever member's record came last."""
    cfg = _config().model_copy(update={"n_boot": 100})
    info, records = {}, []
    for sl, k in cfg.eval_slices():
        for j in range(4):
            pid = f"{sl}-{k}-{j}"
            info[pid] = (sl, k, "reach-back" if sl == "unseen" else "linear")
            for member, valid in (("a", sl == "control"), ("b", False)):  # a: whole chains valid on control only
                records.append({"kind": "model", "member": member, "problem_id": pid, "gold": str(j % 2),
                                "n_steps": 2, "chain": {"correct": member == "a", "first_error": -1 if valid else 0}})
    out = tabulate(cfg, ["a", "b"], records, info, frozenset({"linear"}))
    g = out["groups"]
    assert g["a"]["control"]["valid_chain"]["value"] == 1.0 and g["b"]["control"]["valid_chain"]["value"] == 0.0
    assert g["a"]["longer"]["valid_chain"]["value"] == 0.0
    assert g["a"]["control"]["accuracy"]["value"] == 1.0 and g["b"]["control"]["accuracy"]["value"] == 0.0
    rows = {(r["size"], r["slice"], r["steps"]): r for r in out["by_length"]}
    for sl, k in cfg.eval_slices():
        assert rows[("a", sl, k)]["valid_chain"]["value"] == (1.0 if sl == "control" else 0.0)
        assert rows[("b", sl, k)]["valid_chain"]["value"] == 0.0
        assert rows[("a", sl, k)]["accuracy_chance"] == 0.5
    assert out["contrasts"]["a"]["valid_chain"]["longer_minus_control"]["value"] == -1.0
    assert out["contrasts"]["b"]["valid_chain"]["longer_minus_control"]["value"] == 0.0
    assert out["left_out"] == {sl: 0 for sl in ("control", "longer", "unseen")}
