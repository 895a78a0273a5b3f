"""The job: validated configs, results written as it goes, resume without loss or duplicates."""

import json

import pytest
import yaml

from verinet.experiments import CompareConfig, ConfigError, load_config, run_compare
from verinet.experiments.results import ResultsLog

SMALL = {"name": "t", "tasks": [{"family": "arith", "n": 30, "params": {"steps": 3}}]}


def _cfg(tmp_path, data=SMALL):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_config(p)


def test_run_writes_results_summary_report(tmp_path):
    report = run_compare(_cfg(tmp_path), out_dir=tmp_path / "out")
    out = tmp_path / "out"
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and len({r["problem_id"] for r in rows}) == 30
    summary = json.loads((out / "summary.json").read_text())
    fam = summary["families"]["arith"]
    assert fam["gold_valid"] == 30
    assert all(k["found_at_label"] == k["n"] > 0 for k in fam["kinds"].values())
    assert report.exists() and "arith" in report.read_text()
    assert yaml.safe_load((out / "config.yaml").read_text())["name"] == "t"


def test_resume_after_crash_loses_and_duplicates_nothing(tmp_path):
    cfg = _cfg(tmp_path)
    out = tmp_path / "out"
    calls = []

    def crash(done, total):
        calls.append(done)
        if done == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_compare(cfg, out_dir=out, progress=crash)
    results = out / "results.jsonl"
    assert len(results.read_text().splitlines()) == 12
    with results.open("a") as f:  # a torn write at the moment of the crash
        f.write('{"problem_id": "arith-partial", "fam')
    seen = []
    run_compare(cfg, out_dir=out, progress=lambda d, t: seen.append(d))
    assert seen[0] == 12  # resumed, not restarted
    ids = [json.loads(x)["problem_id"] for x in results.read_text().splitlines()]
    assert len(ids) == 30 == len(set(ids))
    fresh = tmp_path / "fresh"
    run_compare(cfg, out_dir=fresh)
    assert sorted(ids) == sorted(json.loads(x)["problem_id"] for x in (fresh / "results.jsonl").read_text().splitlines())


def test_resume_refuses_a_different_config(tmp_path):
    out = tmp_path / "out"
    run_compare(_cfg(tmp_path), out_dir=out)
    other = _cfg(tmp_path, {**SMALL, "seed": 9})
    with pytest.raises(ConfigError, match="different config"):
        run_compare(other, out_dir=out)


@pytest.mark.parametrize("data, needle", [
    ({"taks": []}, "taks: unknown key"),
    ({"tasks": []}, "tasks"),
    ({"tasks": [{"family": "arith", "n": 0}]}, "tasks.0.n"),
    ({"tasks": [{"family": "arith", "params": {"steps": 50}}]}, "steps"),
    ({"tasks": [{"family": "gsm8k"}]}, "needs 'path'"),
    ({"tasks": [{"family": "arith", "path": "x.jsonl"}]}, "only for family gsm8k"),
    ({"inject": ["typo"]}, "inject.0"),
    ({"seed": -1}, "seed"),
])
def test_bad_configs_name_the_field(tmp_path, data, needle):
    with pytest.raises(ConfigError, match=needle):
        _cfg(tmp_path, data)


def test_config_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_results_log_rejects_duplicates(tmp_path):
    with ResultsLog(tmp_path / "r.jsonl") as log:
        log.append({"problem_id": "a"})
        with pytest.raises(ValueError, match="duplicate"):
            log.append({"problem_id": "a"})
    assert len(ResultsLog(tmp_path / "r.jsonl")) == 1


def test_default_config_is_valid():
    cfg = CompareConfig()
    assert {t.family for t in cfg.tasks} == {"arith", "logic"}
    assert sum(t.n for t in cfg.tasks) >= 200
