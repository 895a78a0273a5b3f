"""The `regime` probe end to end at smoke size, its resume, and the probe CLI."""

import json

import pytest
from typer.testing import CliRunner

from verinet.cli import app
from verinet.probes import ProbeError, get_probe, load_probe_config, run_probe
from verinet.probes.regime import REGIMES


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    probe = get_probe("regime")
    cfg = probe.smoke(load_probe_config("configs/probes/regime.yaml", probe.config, "regime"))
    out = tmp_path_factory.mktemp("regime")
    return cfg, out, run_probe(probe, cfg, out)


def test_regime_smoke_trains_every_regime_at_every_size_and_reports(smoke_run):
    cfg, out, summary = smoke_run
    assert {(m["regime"], m["size"]) for m in summary["models"]} == {(g, s) for g in REGIMES for s in cfg.sizes}
    for name in cfg.sizes:  # answer-only pre-training feeds the finetuned model; away starts from scratch
        for model in ("scratch", "answer-only", "finetuned", "away"):
            info = json.loads((out / "models" / f"{name}-{model}" / "training.json").read_text())
            init = info["config"]["training"]["init_from"]
            assert init == {"finetuned": str(out / "models" / f"{name}-answer-only"),
                            "away": str(out / "models" / f"{name}-scratch")}.get(model)
            mix = {k: v for k, v in info["config"]["objectives"].items() if k != "solve_first" and v > 0}
            assert mix == ({"answer": 1.0} if model in ("answer-only", "away") else {"solve": 1.0}), mix
    records = (out / "faith" / "eval" / "records.jsonl").read_text().splitlines()
    assert len(records) == len(REGIMES) * len(cfg.sizes) * cfg.n * len(cfg.eval_tasks)
    assert 0 < summary["accuracy_chance"] <= 1
    for key in ("decomposition", "size_slopes", "versus_scratch"):
        assert set(summary[key]) >= {"early_answering_aoc", "accuracy"}
    assert set(summary["versus_scratch"]["accuracy"]) == {f"{g}-{s}" for s in cfg.sizes for g in REGIMES[1:]}
    md = (out / "report.md").read_text()
    assert "## How much regime and size explain" in md and (out / "regime.png").stat().st_size > 5000
    assert (out / "report.html").read_text().count("<img") == 1


def test_regime_rerun_resumes_and_another_config_is_refused(smoke_run):
    cfg, out, summary = smoke_run
    probe = get_probe("regime")
    stamp = (out / "models" / "a-scratch" / "model.safetensors").stat().st_mtime_ns
    again = run_probe(probe, cfg, out)
    assert (out / "models" / "a-scratch" / "model.safetensors").stat().st_mtime_ns == stamp
    assert again["models"] == summary["models"]
    with pytest.raises(ProbeError, match="another config.*seed"):
        run_probe(probe, cfg.model_copy(update={"seed": 1}), out)


def test_probe_cli_lists_probes_and_explains_bad_configs(tmp_path, smoke_run):
    r = CliRunner().invoke(app, ["probe", "list"])
    assert r.exit_code == 0 and "regime" in r.output and "tools" in r.output, r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("probe: regime\nsizes: {}\n")
    r = CliRunner().invoke(app, ["probe", "regime", "--config", str(bad)])
    assert r.exit_code == 2 and "sizes" in r.output, r.output
    out = smoke_run[1]  # the fixture's finished smoke run: the CLI resumes it (nothing retrains)
    (out / "report.md").unlink()
    r = CliRunner().invoke(app, ["probe", "regime", "--config", "configs/probes/regime.yaml", "--out", str(out),
                                 "--smoke"], catch_exceptions=False)
    assert r.exit_code == 0 and (out / "report.md").is_file() and "wrote " in r.output, r.output
    r = CliRunner().invoke(app, ["probe", "nope"])
    assert r.exit_code == 2 and "no probe 'nope'" in r.output
