"""The smoke config runs every phase of the comparison through the real command and writes the
report's shape: the answer first, and the summary keys a reader (and CI) relies on."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_config_runs_every_phase(tmp_path):
    out = tmp_path / "smoke"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "verinet.cli", "compare", "--config",
                        str(ROOT / "configs" / "compare-smoke.yaml"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    wall = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "report.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("## ")][0] == "## Answer"
    s = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert {"answer", "frontier", "paired_tests"} <= set(s)
    assert "self_consistency" in s["arms"] and s["answer"]["text"] in md
    assert s["frontier"]["points"] and s["paired_tests"]["ensemble_vs_baseline"]["accuracy"]["test"] == "mcnemar"
    for f in ("results.jsonl", "faithfulness.jsonl", "sweep.jsonl", "thresholds.json", "report.html",
              "metrics.prom"):
        assert (out / f).stat().st_size > 0, f
    for arm, m in s["arms"].items():  # the headline reconciles with the cost table
        assert m["flops_per_problem"] * s["problems"] == pytest.approx(m["cost"]["flops"]), arm
    print(f"smoke run: {wall:.1f} s")
