"""The comparison job: validated configs, both arms on the same problems, results written as it
goes and resumed without loss or duplicates, a report with every section filled."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from verinet.experiments import CompareConfig, ConfigError, load_config, run_compare
from verinet.results import ResultsLog

ROOT = Path(__file__).resolve().parents[2]

# Small enough for the fast suite: 2 slices, the zoo models in this process, a short frontier.
TINY = {
    "name": "tiny",
    "tasks": [{"family": "arith", "n": 6, "params": {"steps": 2}},
              {"family": "logic", "n": 4, "params": {"hops": 2}}],
    "inject": ["wrong_result", "dropped_step"],
    "faithfulness": {"n": 3, "n_boot": 200},
    "sweep": {"sizes": {"xs": ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"], "l": ["zoo-l"]}, "ks": [1, 2, 3], "n": 3,
              "max_k": 4},
    "dev_n": 4,
    "chunk_size": 3,
    "ray": {"local": True},
    # the size ladder's xs, the baseline's own recipe (the default members are the solve-first xs)
    "ensemble": {"members": [{"name": n, "backend": "hf", "model": n, "format": "zoo", "dtype": "float32",
                              "resources": {"num_cpus": 0.5, "num_gpus": 0}}
                             for n in ("zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2")]},
}


def _cfg(tmp_path, data=None, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data if data is not None else TINY))
    return load_config(p)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    report = run_compare(_cfg(tmp), out_dir=tmp / "out")
    return report, tmp / "out"


def test_both_arms_on_the_same_problems(tiny_run):
    _, out = tiny_run
    rows = _lines(out / "results.jsonl")
    assert len(rows) == 10 == len({r["problem_id"] for r in rows})
    for r in rows:
        assert {c["author"] for c in r["ensemble"]["chains"]} == {"zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"}
        assert [c["author"] for c in r["baseline"]["chains"]] == ["zoo-l"]
        # every chain is scored by the exact checker and has a predicted earliest error
        for c in r["ensemble"]["chains"] + r["baseline"]["chains"]:
            assert -1 <= c["first_error"] <= c["n_steps"] and c["predicted_error"] is not None
        # all_pairs: each chain is verified by the two other members, never by its author
        for chain_id, per in r["ensemble"]["verdicts"].items():
            author = chain_id.rsplit("/", 1)[1]
            assert author not in per and len(per) == 2
        assert r["labelled"] and all(x["ensemble"] is not None and x["baseline"] is not None for x in r["labelled"])


def test_summary_figures_are_computed_from_the_records(tiny_run):
    _, out = tiny_run
    rows = _lines(out / "results.jsonl")
    s = json.loads((out / "summary.json").read_text())
    for arm in ("ensemble", "baseline"):
        acc = s["arms"][arm]["accuracy"]
        assert acc["n"] == 10 and acc["value"] == pytest.approx(sum(r[arm]["correct"] for r in rows) / 10)
        assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
        c = s["arms"][arm]["cost"]
        assert c["prefill_tokens"] > 0 and c["decode_tokens"] > 0 and c["member_s"] > 0 and c["cpu_s"] > 0
        assert c["flops"] > 0 and s["arms"][arm]["flops_per_problem"] > 0
    # FLOPs are 2 x non-embedding parameters x tokens: the 27x larger baseline costs more per token
    per_token = {arm: s["arms"][arm]["cost"]["flops"] / s["arms"][arm]["cost"]["tokens"] for arm in ("ensemble", "baseline")}
    assert per_token["ensemble"] == pytest.approx(2 * s["parameters"]["zoo-xs-s0"])
    assert per_token["baseline"] == pytest.approx(2 * s["parameters"]["zoo-l"])
    assert all(v["peak_rss_bytes"] > 0 for v in s["actors"].values())
    ag = s["agreement"]
    assert ag["n_items"] > 0 and sum(ag["majority_share"]["counts"]) == ag["n_items"]
    assert 0 <= ag["said_valid_rate"]["value"] <= 1 and ag["true_validity"]["n"] > 0
    # the frontier: each size alone and as ensembles of K, plus the FLOPs-matched K of the ensemble's size
    pts = {(p["label"], p["k"]) for p in s["frontier"]["points"]}
    assert {("xs", 1), ("xs", 2), ("xs", 3), ("l", 1), ("l", 2), ("l", 3)} <= pts
    for i in ("0", "1"):
        matched = s["compute_matched"][i]
        assert 1 <= matched["k"] <= 4 and matched["label"] == "xs"
        test = matched["accuracy_test"]  # paired on the same problems, with the chance level beside it
        assert test["both"] + test["neither"] + test["a_only"] + test["b_only"] == 3
        assert matched["baseline_accuracy"]["chance"] == matched["ensemble_accuracy"]["chance"] is not None
    assert {"parameter_matched", "flops_matched", "equal_model_count"} <= set(s["frontier"]["pairs"])
    assert s["frontier"]["pairs"]["equal_model_count"]["how"] == "3 x xs against 3 x l"
    assert set(s["faithfulness"]["0"]) == {"zoo-l", "zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2", "ensemble"}
    # the cards' training provenance reaches the answer: one recipe at both sizes here
    assert s["training"]["zoo-l"]["tokens"] == s["training"]["zoo-xs-s0"]["tokens"] > 0  # equal at every size
    assert s["answer"]["verdicts"]["training"]["same_recipe"] is True
    assert "share the recipe" in s["answer"]["text"]


def test_every_arm_runs_on_the_same_problems_with_paired_tests(tiny_run):
    _, out = tiny_run
    rows = _lines(out / "results.jsonl")
    s = json.loads((out / "summary.json").read_text())
    assert set(s["arms"]) == {"ensemble", "self_consistency", "reliability_weighted", "best_of_k", "baseline"}
    for r in rows:
        assert set(r["arms"]) == {"self_consistency", "reliability_weighted", "best_of_k"}
    # self-consistency is the majority answer of the ensemble's chains, with no verifier
    from collections import Counter
    from verinet.tasks import get_family

    for r in rows:
        norm = get_family(r["family"]).normalize_answer
        votes = Counter(norm(c["answer"]) for c in r["ensemble"]["chains"] if c["answer"] is not None)
        if votes:
            top = max(votes.values())
            assert norm(r["arms"]["self_consistency"]["final_answer"]) in {a for a, v in votes.items() if v == top}
    t = s["paired_tests"]["ensemble_vs_baseline"]["accuracy"]
    ens = [r["ensemble"]["correct"] for r in rows]
    base = [r["baseline"]["correct"] for r in rows]
    assert t["test"] == "mcnemar" and t["n"] == 10
    assert t["a_only"] == sum(a and not b for a, b in zip(ens, base))
    assert t["b_only"] == sum(b and not a for a, b in zip(ens, base))
    assert 0 <= t["p_value"] <= 1
    assert s["paired_tests"]["ensemble_vs_baseline"]["ee_f1_labelled"]["test"] == "paired_bootstrap"
    # the answer states the same verdict as data
    v = s["answer"]["verdicts"]["accuracy"]
    assert v["ensemble"] == s["arms"]["ensemble"]["accuracy"]["value"] and v["p_value"] == t["p_value"]
    assert f"McNemar p = {t['p_value']:.3g}" in s["answer"]["text"]


def test_headline_flops_times_problems_is_the_cost_tables_total(tiny_run):
    report, out = tiny_run
    s = json.loads((out / "summary.json").read_text())
    md = report.read_text()
    for arm, m in s["arms"].items():
        total = m["cost"]["flops"]
        assert m["flops_per_problem"] * s["problems"] == pytest.approx(total)
        assert sum(ph["flops"] for ph in m["cost"]["phases"].values()) == pytest.approx(total)
        assert f"| {arm} | total |" in md and f"{total:.3g}" in md.split(f"| {arm} | total |")[1].split("\n")[0]
    # the labelled set is counted in the arms that verify it, and nowhere else
    assert "labelled" in s["arms"]["ensemble"]["cost"]["phases"] and "labelled" in s["arms"]["baseline"]["cost"]["phases"]
    assert set(s["arms"]["self_consistency"]["cost"]["phases"]) == {"solve"}


def test_inject_list_is_honoured(tiny_run):
    _, out = tiny_run
    kinds = {x["kind"] for r in _lines(out / "results.jsonl") for x in r["labelled"]}
    assert kinds == {None, "wrong_result", "dropped_step"}  # gold chains, and only the configured kinds


def test_json_outputs_never_hold_nan(tiny_run):
    _, out = tiny_run

    def refuse(name):
        raise AssertionError(f"non-JSON constant {name}")

    for f in ("summary.json", "thresholds.json"):
        json.loads((out / f).read_text(), parse_constant=refuse)
    from verinet.experiments.compare import dumps_json

    assert json.loads(dumps_json({"a": float("nan"), "b": [float("inf"), 1.0]})) == {"a": None, "b": [None, 1.0]}


def test_report_has_every_section_and_is_self_contained(tiny_run):
    report, out = tiny_run
    md = report.read_text()
    assert [line for line in md.splitlines() if line.startswith("## ")][0] == "## Answer"
    for heading in ("## Headline", "## Paired tests against the baseline", "## Compute frontier",
                    "## Earliest-error F1", "## Agreement", "## Faithfulness", "## Cost", "## One verification graph"):
        assert heading in md
    assert "Not run" not in md and not re.search(r"\bnan\b", md, flags=re.IGNORECASE)
    for png in ("frontier.png", "ee_f1.png", "graph.png", "faithfulness_curves_0.png"):
        assert (out / "plots" / png).stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert html.index("<h2>Answer</h2>") < html.index("<h2>Headline</h2>")
    assert html.count("data:image/png;base64,") >= 5
    assert 'src="http' not in html and "<link" not in html  # nothing fetched from elsewhere


def test_rerun_redoes_nothing(tiny_run):
    report, out = tiny_run
    before = {f: (out / f).read_bytes() for f in ("results.jsonl", "faithfulness.jsonl", "sweep.jsonl")}
    phases = []
    run_compare(load_config(out.parent / "c.yaml"), out_dir=out, progress=lambda ph, d, t: phases.append((ph, d, t)))
    first = {}
    for ph, d, t in phases:
        first.setdefault(ph, (d, t))
    assert set(first) == {"thresholds", "problems", "faithfulness", "frontier"}
    assert all(d == t for d, t in first.values())  # every phase starts complete
    assert {f: (out / f).read_bytes() for f in before} == before


def test_killed_job_resumes_without_loss_or_duplicates(tmp_path):
    """SIGKILL the real command mid-run; the rerun keeps every written record and adds the rest once."""
    cfg = dict(TINY, tasks=[{"family": "arith", "n": 12, "params": {"steps": 2}}], chunk_size=2,
               faithfulness={"n": 2, "n_boot": 200},
               sweep={"sizes": {"xs": ["zoo-xs-s0", "zoo-xs-s1"]}, "ks": [1, 2], "n": 3, "compute_matched": False})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "verinet.cli", "compare", "--config", str(path), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            start_new_session=True)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= 4:
                break
            assert proc.poll() is None, "the job ended before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    written = results.read_bytes()
    n_before = len(written.splitlines())
    assert 4 <= n_before < 12
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    after = results.read_bytes()
    assert after.startswith(written.rsplit(b"\n", 1)[0])  # nothing written before the kill was lost or changed
    ids = [x["problem_id"] for x in _lines(results)]
    assert len(ids) == 12 == len(set(ids))
    for log, key in (("faithfulness.jsonl", "unit"), ("sweep.jsonl", "unit")):
        keys = [x[key] for x in _lines(out / log)]
        assert len(keys) == len(set(keys)) > 0
    assert (out / "report.html").exists()


def test_resume_refuses_a_different_config(tmp_path):
    small = dict(TINY, tasks=[{"family": "arith", "n": 2, "params": {"steps": 2}}], threshold=0.5,
                 faithfulness={"n": 0}, sweep={"n": 0})
    out = tmp_path / "out"
    run_compare(_cfg(tmp_path, small), out_dir=out)
    with pytest.raises(ConfigError, match="different config"):
        run_compare(_cfg(tmp_path, {**small, "seed": 9}, "d.yaml"), out_dir=out)


def test_resume_refuses_an_ensemble_file_or_task_file_changed_since_the_run_began(tmp_path):
    """config.yaml holds only the paths of the ensemble YAML and of GSM8K files: their content is recorded
    too, so an edited member list is not appended to the old members' results."""
    ens = tmp_path / "ensemble.yaml"
    ens.write_text(yaml.safe_dump({"quorum": 2, "members": TINY["ensemble"]["members"]}))
    small = dict(TINY, tasks=[{"family": "arith", "n": 2, "params": {"steps": 2}}], threshold=0.5,
                 faithfulness={"n": 0}, sweep={"n": 0}, ensemble={"config": str(ens)})
    out = tmp_path / "out"
    run_compare(_cfg(tmp_path, small), out_dir=out)
    assert json.loads((out / "inputs.json").read_text())["ensemble"]["members"][0]["name"] == "zoo-xs-s0"
    run_compare(_cfg(tmp_path, small), out_dir=out)  # unchanged: resumes (nothing left to do)
    members = [dict(m, model="zoo-s") if m["name"] == "zoo-xs-s2" else m for m in TINY["ensemble"]["members"]]
    ens.write_text(yaml.safe_dump({"quorum": 2, "members": members}))
    with pytest.raises(ConfigError, match=r"the ensemble's members .*changed since the run began"):
        run_compare(_cfg(tmp_path, small), out_dir=out)


@pytest.mark.parametrize("data, needle", [
    ({"taks": []}, "taks: unknown key"),
    ({"tasks": []}, "tasks"),
    ({"tasks": [{"family": "arith", "n": 0}]}, "tasks.0.n"),
    ({"tasks": [{"family": "arith", "params": {"steps": 50}}]}, "steps"),
    ({"tasks": [{"family": "gsm8k"}]}, "needs 'path'"),
    ({"tasks": [{"family": "arith", "path": "x.jsonl"}]}, "only for family gsm8k"),
    ({"inject": ["typo"]}, "inject.0"),
    ({"seed": -1}, "seed"),
    ({"ensemble": {"members": [{"name": "a", "backend": "hf", "model": "zoo-xs-s0"}]}}, "at least 2 members"),
    ({"baseline": {"member": {"name": "zoo-xs-s0", "backend": "hf", "model": "zoo-l"}}}, "also an ensemble member"),
    ({"ensemble": {"topology": "star"}}, "ensemble.topology"),
    ({"sweep": {"ks": [0, 2]}}, "every K must be >= 1"),
    ({"faithfulness": {"tests": ["early_answering", "telepathy"]}}, "faithfulness.tests.1"),
    ({"threshold": 1.5}, "threshold"),
])
def test_bad_configs_name_the_field(tmp_path, data, needle):
    with pytest.raises(ConfigError, match=needle):
        _cfg(tmp_path, data)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    data = dict(TINY, baseline={"member": {"name": "big", "backend": "hf", "model": str(tmp_path / "nope"),
                                           "dtype": "float32"}})
    with pytest.raises(Exception, match="nope"):
        run_compare(_cfg(tmp_path, data), out_dir=tmp_path / "out")


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


def test_default_config_is_the_ladders_xs_against_zoo_l_on_local_ray():
    cfg = CompareConfig()
    assert {t.family for t in cfg.tasks} == {"arith", "logic"}
    assert sum(t.n for t in cfg.tasks) >= 200
    assert [m.model for m in cfg.ensemble_config().members] == ["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"]
    assert cfg.baseline.member.model == "zoo-l" and not cfg.ray.local and cfg.ray.address is None
    assert load_config(ROOT / "configs" / "compare-local.yaml") == cfg.model_copy(update={"out_dir": cfg.out_dir})


def _job_metrics(out: Path) -> tuple[str, dict]:
    from prometheus_client.parser import text_string_to_metric_families

    from verinet.serve.metrics import write_job_metrics

    path = write_job_metrics(_lines(out / "results.jsonl"), str(out / "metrics.prom"),
                             members=["zoo-xs-s0", "zoo-xs-s1", "zoo-xs-s2"])
    text = Path(path).read_text()
    samples = {s.name + json.dumps(s.labels, sort_keys=True): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    return text, samples


def test_job_exports_the_agreement_metrics(tiny_run):
    _, out = tiny_run
    s = json.loads((out / "summary.json").read_text())
    _, samples = _job_metrics(out)
    ag = s["agreement"]
    assert samples["verinet_fleiss_kappa{}"] == pytest.approx(ag["fleiss_kappa"])
    assert samples["verinet_step_agreement_ratio_count{}"] == ag["n_items"]
    for v, a in ag["verifiers"].items():  # disagreement = 1 - agreement with the others' majority
        assert samples[f'verinet_verifier_disagreement_ratio{{"member": "{v}"}}'] == pytest.approx(1 - a["consensus"])


@pytest.mark.promtool
def test_job_metrics_pass_promtool(tmp_path):
    import shutil

    # the job's metrics come from results.jsonl alone: a run without faithfulness and frontier will do
    micro = {**TINY, "tasks": [{"family": "arith", "n": 2, "params": {"steps": 2}},
                               {"family": "logic", "n": 2, "params": {"hops": 2}}],
             "faithfulness": {"n": 0}, "sweep": {"n": 0}, "dev_n": 2}
    run_compare(_cfg(tmp_path, micro), out_dir=tmp_path / "out")
    text, _ = _job_metrics(tmp_path / "out")
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed: `apt-get install -y prometheus` provides it"
    r = subprocess.run([exe, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_gsm8k_slice_keeps_its_dev_split_apart(tmp_path):
    """A GSM8K-format file: the first dev_n problems choose the threshold, the rest are the test set."""
    lines = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
              "answer": f"He has {a}+{b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
             for a, b in [(2, 3), (4, 1), (5, 5), (7, 2), (3, 3), (6, 1)]]
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = dict(TINY, tasks=[{"family": "gsm8k", "path": str(data), "n": 4}], inject=["wrong_result"],
               dev_n=2, faithfulness={"n": 0}, sweep={"n": 0})
    out = tmp_path / "out"
    run_compare(_cfg(tmp_path, cfg), out_dir=out)
    rows = _lines(out / "results.jsonl")
    assert [r["question"] for r in rows] == [x["question"] for x in lines[2:]]
    assert all(r["labelled"] for r in rows)  # gold + wrong_result chains, verified by both arms
    assert set(json.loads((out / "thresholds.json").read_text())["0"]) == {"ensemble", "baseline", "reliability_weighted"}
    with pytest.raises(ConfigError, match=r"has 6 problems; n=5 .* need 7: lower tasks.0.n to 4"):
        run_compare(_cfg(tmp_path, dict(cfg, tasks=[{"family": "gsm8k", "path": str(data), "n": 5}])),
                    out_dir=tmp_path / "short")


def test_two_gsm8k_files_whose_ids_collide_are_refused_before_any_work(tmp_path):
    """Lines without an 'id' are numbered gsm8k-1, ... in every file; results are kept per problem id, so a
    second such file (or the same one twice) would have the first one's results counted in its place."""
    rows = [{"question": f"Tom has {a} apples and buys 1 more. How many apples does he have?",
             "answer": f"He has {a}+1 = <<{a}+1={a + 1}>>{a + 1} apples.\n#### {a + 1}"} for a in range(2, 8)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(x) + "\n" for x in rows))
    b.write_text("".join(json.dumps(x) + "\n" for x in rows[::-1]))
    cfg = dict(TINY, tasks=[{"family": "gsm8k", "path": str(a), "n": 3}, {"family": "gsm8k", "path": str(b), "n": 3}],
               dev_n=2, faithfulness={"n": 0}, sweep={"n": 0})
    with pytest.raises(ConfigError, match=r"problem id 'gsm8k-3' occurs in tasks.0 and tasks.1.*own 'id'"):
        run_compare(_cfg(tmp_path, cfg), out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "results.jsonl").exists()
    b.write_text("".join(json.dumps({**x, "id": f"b-{k}"}) + "\n" for k, x in enumerate(rows)))
    run_compare(_cfg(tmp_path, cfg), out_dir=tmp_path / "out")  # fixed as the message says: runs, not 'changed'
    ids = [x["problem_id"] for x in _lines(tmp_path / "out" / "results.jsonl")]
    assert ids == ["gsm8k-3", "gsm8k-4", "gsm8k-5", "b-2", "b-3", "b-4"]
