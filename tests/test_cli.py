"""The command line: --help everywhere, --version, tasks sample/check, clear errors."""

import json

import pytest
import yaml
from typer.testing import CliRunner

import verinet
from verinet.cli import app
from verinet.serve.ports import free_port

runner = CliRunner(env={"COLUMNS": "200"})


def _all(r):
    return r.stdout + r.stderr


@pytest.mark.parametrize("args", [[], ["tasks"], ["tasks", "sample"], ["tasks", "check"], ["compare"]])
def test_help_everywhere(args):
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and verinet.__version__ in r.output


def test_sample_then_check_round_trip(tmp_path):
    out = tmp_path / "p.jsonl"
    r = runner.invoke(app, ["tasks", "sample", "-f", "arith", "-n", "20", "--seed", "3", "-k", "steps=4",
                            "-k", "ops=+-", "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert len(lines) == 20
    first = json.loads(lines[0])
    assert first["problem"]["params"]["steps"] == 4 and set(first["problem"]["params"]["ops"]) == {"+", "-"}
    res = tmp_path / "checks.jsonl"
    r = runner.invoke(app, ["tasks", "check", str(out), "--out", str(res), "-q"])
    assert r.exit_code == 0, r.output
    checks = [json.loads(x) for x in res.read_text().splitlines()]
    assert len(checks) == 20 and all(c["first_error"] == -1 and c["answer_correct"] for c in checks)


def test_sample_prints_problems():
    r = runner.invoke(app, ["tasks", "sample", "-f", "arith", "-n", "2"])
    assert r.exit_code == 0 and r.output.count("####") == 2


def test_check_reports_bad_lines_and_goes_on(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join([
        json.dumps({"family": "arith", "seed": 1, "chain": "nonsense\n#### 4"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"family": "arith", "seed": 2}),
        json.dumps({"family": "nope", "seed": 2, "chain": ""}),
        json.dumps({"problem": {"id": "x"}, "chain": ""}),
        "",
        json.dumps({"family": "arith", "seed": 2, "params": {"steps": 2}, "chain": ""}),
    ]) + "\n")
    r = runner.invoke(app, ["tasks", "check", str(f)])
    assert r.exit_code == 1, r.output  # every line checked, but malformed input is a failure
    out = _all(r)
    assert "5 malformed line(s)" in out
    for line_no, needle in [(2, "not valid JSON"), (3, "expected a JSON object"), (4, "missing 'chain'"),
                            (5, "unknown task family"), (6, "invalid problem")]:
        assert f"mixed.jsonl:{line_no}:" in out and needle in out, (line_no, out)
    assert "cannot parse" in out
    assert "│      2 │" in out  # two chains were checked


def test_bad_knob_is_a_clear_error():
    r = runner.invoke(app, ["tasks", "sample", "-f", "arith", "-k", "steps=99"])
    assert r.exit_code == 2 and "steps" in _all(r)
    r = runner.invoke(app, ["tasks", "sample", "-f", "arith", "-k", "steps"])
    assert r.exit_code == 2 and "KEY=VALUE" in _all(r)


def test_missing_check_file():
    r = runner.invoke(app, ["tasks", "check", "/nonexistent.jsonl"])
    assert r.exit_code == 2 and "no such file" in _all(r)


def test_sample_gsm8k_from_data(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text(json.dumps({"question": "Tom has 3 apples and buys 4 more. How many?",
                             "answer": "Tom has 3+4=<<3+4=7>>7 apples.\n#### 7"}) + "\n")
    r = runner.invoke(app, ["tasks", "sample", "-f", "gsm8k", "--data", str(f)])
    assert r.exit_code == 0, _all(r)
    assert "<<3+4=7>>" in r.stdout
    r = runner.invoke(app, ["tasks", "sample", "-f", "gsm8k"])
    assert r.exit_code == 2 and "--data FILE.jsonl" in _all(r) and "load_gsm8k" not in _all(r)


def test_compare_runs_and_resumes(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "cli", "tasks": [{"family": "arith", "n": 4, "params": {"steps": 2}}], "threshold": 0.5,
        "faithfulness": {"n": 0}, "sweep": {"n": 0}, "ray": {"local": True}}))
    out = tmp_path / "run"
    r = runner.invoke(app, ["compare", "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, _all(r)
    assert "report:" in r.stdout and (out / "report.md").exists() and (out / "report.html").exists()
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    assert "verinet_fleiss_kappa" in (out / "metrics.prom").read_text()
    r = runner.invoke(app, ["compare", "--config", str(cfg), "--out", str(out)])  # resumes: nothing redone
    assert r.exit_code == 0 and len((out / "results.jsonl").read_text().splitlines()) == 4


def test_compare_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("tasks: [{family: arith, n: -3}]\n")
    r = runner.invoke(app, ["compare", "--config", str(bad)])
    assert r.exit_code == 2 and "tasks.0.n" in _all(r)


def test_zoo_list_and_eval():
    r = runner.invoke(app, ["zoo", "list"])
    assert r.exit_code == 0, _all(r)
    assert "zoo-xs-s0" in r.stdout
    cells = [[c.strip() for c in line.split("│")] for line in r.stdout.splitlines()]
    rows = {c[1]: c[2] for c in cells if len(c) > 3 and c[1].startswith("zoo-")}
    assert rows["zoo-l"] == "yes" and all(v == "no" for k, v in rows.items() if "-sf-" in k), rows
    # two writers for the real-error set (the default, the whole ladder, costs the suite ~10 s more)
    r = runner.invoke(app, ["zoo", "eval", "zoo-xs-s0", "--n", "10", "--writers", "zoo-xs-s0,zoo-m"])
    assert r.exit_code == 0, _all(r)
    assert "arith" in r.stdout and "logic" in r.stdout
    r = runner.invoke(app, ["zoo", "eval", "no-such-model"])
    assert r.exit_code == 2 and "no zoo checkpoint" in _all(r)


def test_verify_local_prints_the_arm_table(tmp_path):
    cfg = tmp_path / "ens.yaml"
    cfg.write_text("quorum: 2\nmembers:\n" + "".join(
        f"  - {{name: m{i}, backend: hf, model: zoo-xs-s0, resources: {{num_cpus: 0.5}}}}\n" for i in range(3)))
    out = tmp_path / "table.json"
    r = runner.invoke(app, ["verify", "--config", str(cfg), "--family", "arith", "--n", "3", "--dev-n", "4", "--local",
                            "--out", str(out), "--graphs", str(tmp_path / "g")])
    assert r.exit_code == 0, _all(r)
    def strict(c):
        raise AssertionError(f"bare {c} in {out.name}: not JSON")

    rows = json.loads(out.read_text(), parse_constant=strict)["rows"]
    assert [x["arm"] for x in rows] == ["ensemble", "m0 (self)", "m1 (self)", "m2 (self)"]
    assert all(0 <= x["accuracy"] <= 1 and x["tokens"] > 0 and 0 <= x["threshold"] <= 1 for x in rows)
    assert len(list((tmp_path / "g").glob("*.png"))) == 3


def test_verify_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "ens.yaml"
    cfg.write_text("members:\n  - {name: a, backend: tgi, model: zoo-xs-s0}\n")
    r = runner.invoke(app, ["verify", "--config", str(cfg), "--local"])
    assert r.exit_code == 2 and "members.0.backend" in _all(r)


# --- output that reads well in a pipe, a log or a terminal -----------------------------------

def test_tables_are_not_cut_when_piped(tmp_path, monkeypatch):
    """CliRunner's stdout is not a terminal, as in `verinet ... | less` or a CI log."""
    monkeypatch.delenv("COLUMNS", raising=False)
    f = tmp_path / "p.jsonl"
    assert runner.invoke(app, ["tasks", "sample", "-f", "arith", "-n", "2", "--out", str(f)]).exit_code == 0
    r = CliRunner().invoke(app, ["tasks", "check", str(f), "-q"])
    assert r.exit_code == 0, _all(r)
    for header in ("answer_correct", "valid_steps", "supported_steps", "bad_lines"):
        assert header in r.stdout, r.stdout
    assert "…" not in r.stdout
    import os

    assert "COLUMNS" not in os.environ, "the width is set for the command only"


@pytest.mark.parametrize("args", [[], ["compare"], ["tasks", "check"], ["verify"], ["monitor"], ["zoo", "list"]])
def test_help_shows_no_type_for_on_off_flags(args):
    r = runner.invoke(app, [*args, "--help"])
    assert r.exit_code == 0, _all(r)
    assert "<bool>" not in r.output, r.output
    assert "--help" in r.output
    if args == ["compare"]:
        assert "<path>" in r.output  # options that take a value still show its type


def test_no_transformers_progress_bars(tmp_path):
    """Loading checkpoints prints no 'Loading weights' bars (fresh processes: the switch is read at import)."""
    import os
    import subprocess
    import sys

    ens = tmp_path / "ens.yaml"
    ens.write_text(yaml.safe_dump({"quorum": 2, "members": [
        {"name": n, "backend": "hf", "model": n, "format": "zoo", "dtype": "float32"} for n in ("zoo-xs-s0", "zoo-xs-s1")]}))
    argv = [sys.executable, "-m", "verinet.cli", "verify", "-c", str(ens), "--n", "1", "--dev-n", "2", "--local"]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "Loading weights" not in quiet.stderr + quiet.stdout, quiet.stderr
    # The user's own setting wins, and shows that the check above can see the bars.
    loud = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**env, "HF_HUB_DISABLE_PROGRESS_BARS": "0"})
    assert loud.returncode == 0 and "Loading weights" in loud.stderr, loud.stderr


def test_bad_json_line_message_reads_once(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"family": "arith", "seed": 1, "chain": "unterminated}')  # no newline: it would be in the string
    r = runner.invoke(app, ["tasks", "check", str(f)])
    assert r.exit_code == 1
    out = " ".join(_all(r).split())
    assert "not valid JSON: Unterminated string starting at: column 41" in out, out
    assert "at at" not in out


def test_verify_gsm8k_reads_data(tmp_path):
    r = runner.invoke(app, ["verify", "-c", "configs/ensemble-local.yaml", "-f", "gsm8k", "--local"])
    assert r.exit_code == 2
    assert "--data FILE.jsonl" in _all(r) and "load_gsm8k" not in _all(r)
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps({"question": f"Tom has {a} apples and buys {b} more. How many?",
                                        "answer": f"He has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"})
                            + "\n" for a, b in [(2, 3), (4, 1), (5, 5), (7, 2)]))
    ens = tmp_path / "ens.yaml"
    ens.write_text(yaml.safe_dump({"quorum": 2, "members": [
        {"name": n, "backend": "hf", "model": n, "format": "zoo", "dtype": "float32"} for n in ("zoo-xs-s0", "zoo-xs-s1")]}))
    out = tmp_path / "v.json"
    r = runner.invoke(app, ["verify", "-c", str(ens), "-f", "gsm8k", "--data", str(data), "--n", "2",
                            "--dev-n", "2", "--local", "--out", str(out)])
    assert r.exit_code == 0, _all(r)
    res = json.loads(out.read_text())
    assert res["family"] == "gsm8k" and res["n"] == 2 and res["rows"][0]["arm"] == "ensemble"
    r = runner.invoke(app, ["verify", "-c", str(ens), "-f", "gsm8k", "--data", str(data), "--dev-n", "4", "--local"])
    assert r.exit_code == 2 and "dev split" in _all(r)
    r = runner.invoke(app, ["verify", "-c", str(ens), "-f", "arith", "--data", str(data), "--local"])
    assert r.exit_code == 2 and "--data is for family gsm8k" in _all(r)


def test_monitor_on_a_dead_port_says_so_plainly():
    r = runner.invoke(app, ["monitor", "--url", f"http://127.0.0.1:{free_port()}", "--once"])
    assert r.exit_code == 1
    out = " ".join(_all(r).split())
    assert "cannot connect to http://127.0.0.1:" in out and "Connection refused" in out, out
    for noise in ("HTTPConnectionPool", "Max retries", "NewConnectionError", "urllib3"):
        assert noise not in out, out
