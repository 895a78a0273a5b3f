"""The `process-reward` probe end to end at smoke size, its training filters and pairs, the agreement of the
graph's verdicts with the exact labels, resume and config errors."""

import json

import pytest
import yaml

from verinet.probes import ProbeError, get_probe, load_probe_config, run_probe
from verinet.probes.chains import eval_problems, label_chain, training_problems
from verinet.probes.process_reward import (
    ARM_LABELS, _pool, agreement, graph_verdicts, step_pairs, training_sets,
)
from verinet.tasks import get_family
from verinet.zoo import formats


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    probe = get_probe("process-reward")
    cfg = probe.smoke(load_probe_config("configs/probes/process-reward.yaml", probe.config, "process-reward"))
    out = tmp_path_factory.mktemp("process-reward")
    return cfg, out, run_probe(probe, cfg, out)


def _figure(f):
    return isinstance(f, dict) and set(f) >= {"value", "ci_low", "ci_high", "n"}


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_process_reward_smoke_trains_every_arm_and_reports(smoke_run):
    cfg, out, summary = smoke_run
    trained = {ARM_LABELS[a] for a in cfg.arms} - set(summary["training_data"]["skipped"])
    assert set(summary["models"]) == {"base"} | trained
    for figures in summary["models"].values():
        assert _figure(figures["accuracy"]) and _figure(figures["chain_correct"])
    for label in trained - {ARM_LABELS["process_pairs"]}:
        info = json.loads((out / "models" / label / "training.json").read_text())
        assert info["config"]["training"]["init_from"].endswith(cfg.base)  # fine-tuned from the base
    for key, diff in summary["versus"].items():
        assert _figure(diff["accuracy"]) and _figure(diff["chain_correct"]), key
        assert diff["accuracy"]["n"] == cfg.n * len(cfg.eval_tasks)  # paired over every problem
        first, second = key.split(" - ")  # the table and the difference read the same per-problem values
        assert diff["accuracy"]["value"] == pytest.approx(summary["models"][first]["accuracy"]["value"]
                                                          - summary["models"][second]["accuracy"]["value"])
    agree = summary["verdicts_vs_exact"]
    for key in ("line_agreement", "line_kappa", "chain_agreement", "outcome_filter_precision"):
        assert _figure(agree[key]), key
    assert 0 <= agree["line_agreement_chance"] <= 1 and 0 < summary["accuracy_chance"] <= 1
    n_lines = sum(len(c["valid"]) + (c["answer"] is not None) for r in _lines(out / "records" / "samples.jsonl")
                  for c in r["chains"])
    assert agree["line_agreement"]["n"] == n_lines
    assert summary["findings"] and all(isinstance(f, str) for f in summary["findings"])
    for f in ("summary.json", "report.md", "report.html", "process_reward.png", "threshold.json",
              "records/samples.jsonl", "records/verdicts.jsonl", "faith/eval/records.jsonl"):
        assert (out / f).is_file(), f
    assert (out / "report.html").read_text().count("<img") == 1


def test_filters_keep_what_they_claim(smoke_run):
    cfg, out, summary = smoke_run
    evals = eval_problems([t.model_copy(update={"n": cfg.n}) for t in cfg.eval_tasks], cfg.n, cfg.seed)
    problems = {p.id: p for p in training_problems(cfg.tasks, cfg.train_problems, cfg.seed, exclude=evals,
                                                   salt="process-reward")}
    samples = {r["id"]: r for r in _lines(out / "records" / "samples.jsonl")}
    assert len(samples) == cfg.train_problems and all(len(r["chains"]) == cfg.samples for r in samples.values())
    outcome = _lines(out / "records" / "train_outcome.jsonl")
    # outcome filtering keeps exactly the samples whose final answer is right by the checker
    right = [(pid, j) for pid, r in samples.items() for j, c in enumerate(r["chains"])
             if get_family(problems[pid].family).check(problems[pid], c["text"]).answer_correct]
    assert sorted((r["id"], r["sample"]) for r in outcome) == sorted(right)
    for r in outcome:
        assert label_chain(problems[r["id"]], r["text"])["answer_correct"]
    assert summary["training_data"]["chains"]["outcome"] == len(outcome)
    process = _lines(out / "records" / "train_process.jsonl")
    assert summary["training_data"]["chains"]["process"] == len(process)
    thr = json.loads((out / "threshold.json").read_text())["threshold"]
    scores = {r["id"]: r["scores"] for r in _lines(out / "records" / "verdicts.jsonl")}
    # accepted by the graph exactly when a chain has an answer line and no line pooled (by the configured
    # aggregation) below the threshold; compared as sets, so a filter that keeps too little fails too
    accepted = sorted((pid, j) for pid, r in samples.items() for j, c in enumerate(r["chains"])
                      if c["answer"] is not None
                      and all(x >= thr for x in _pool([scores[pid][v][j] for v in cfg.verifiers], cfg.aggregation)))
    assert sorted((r["id"], r["sample"]) for r in process) == accepted


def test_training_sets_and_step_pairs_follow_the_verdicts_not_the_labels():
    fam = get_family("logic")
    p = fam.generate(5, {"hops": 2, "distractors": 1})
    gold = label_chain(p, fam.gold_chain(p).text)
    bad = {**label_chain(p, fam.inject(p, "wrong_result", seed=2).text), "answer_correct": False}
    lucky = {**bad, "answer_correct": True}  # the same wrong steps, with the right answer
    samples = [{"id": p.id, "question": p.question, "chains": [gold, bad, lucky]}]
    k = bad["first_error"]
    verdicts = {p.id: [{"earliest_error": -1, "accepted": True}, {"earliest_error": k, "accepted": False},
                       {"earliest_error": -1, "accepted": True}]}
    sets = training_sets(samples, verdicts)
    assert [r["sample"] for r in sets["outcome"]] == [0, 2] and [r["sample"] for r in sets["process"]] == [0, 2]
    pairs = step_pairs(samples, verdicts, {p.id: p})
    assert len(pairs) == 1
    [pair] = pairs
    assert pair["k"] == k and pair["prompt"] == formats.solve_prompt(p.question) + "".join(
        f"{s}\n" for s in gold["steps"][:k])
    assert pair["chosen"] == fam.format_chain(gold["steps"][k:], gold["answer"])
    assert pair["rejected"] == fam.format_chain(bad["steps"][k:], bad["answer"])
    nothing_accepted = {p.id: [{"earliest_error": 0, "accepted": False}] * 3}
    assert step_pairs(samples, nothing_accepted, {p.id: p}) == []


def test_process_filter_keeps_the_chains_the_graph_accepts():
    """The graph over constructed verdicts: a chain is kept exactly when it has an answer line and no line's
    pooled P(valid) is below the threshold (here mean pooling: one low verifier alone need not flag a line)."""
    probe = get_probe("process-reward")
    cfg = probe.smoke(load_probe_config("configs/probes/process-reward.yaml", probe.config, "process-reward"))
    cfg = cfg.model_copy(update={"aggregation": "mean"})
    v1, v2 = cfg.verifiers
    fam = get_family("arith")
    samples, scores, problems, want = [], [], {}, []
    for i, p in enumerate(fam.sample(6, seed=5, params={"steps": 3, "distractors": 0})):
        problems[p.id] = p
        gold = fam.gold_chain(p)
        bad = fam.inject(p, "wrong_result", seed=i)
        chains = [label_chain(p, gold.text), label_chain(p, bad.text),
                  label_chain(p, fam.format_chain([s.text for s in gold.steps], None))]  # no answer line
        assert chains[2]["answer"] is None and chains[1]["first_error"] >= 0
        lines = [len(c["steps"]) + (c["answer"] is not None) for c in chains]
        low = 0.3 if i % 2 else 0.05  # mean with 0.9: 0.6 (passes 0.5) or 0.475 (flagged)
        s1 = [[0.9] * n for n in lines]
        s2 = [[0.9] * lines[0], [low if k == chains[1]["first_error"] else 0.9 for k in range(lines[1])],
              [0.9] * lines[2]]
        samples.append({"id": p.id, "question": p.question, "chains": chains})
        scores.append({"id": p.id, "scores": {v1: s1, v2: s2}})
        want += [(p.id, 0)] + ([(p.id, 1)] if i % 2 else [])
    verdicts = graph_verdicts(cfg, samples, scores, problems, 0.5)
    kept = sorted((r["id"], r["sample"]) for r in training_sets(samples, verdicts)["process"])
    assert kept == sorted(want) and len(kept) == 9  # every gold chain, the injected ones only when pooled >= 0.5
    for r in samples:
        assert [v["earliest_error"] for v in verdicts[r["id"]]][2] == len(r["chains"][2]["steps"])  # no answer


def test_agreement_is_perfect_when_the_flags_are_the_labels_and_chance_otherwise():
    fam = get_family("arith")
    samples, perfect, inverted = [], {}, {}
    for i, p in enumerate(fam.sample(12, seed=3, params={"steps": 2, "distractors": 0})):
        chains = [label_chain(p, fam.gold_chain(p).text), label_chain(p, fam.inject(p, "wrong_result", seed=i).text)]
        samples.append({"id": p.id, "question": p.question, "chains": chains})
        perfect[p.id] = [{"p_valid": [0.9 if ok else 0.1 for ok in c["valid"] + [c["answer_valid"]]],
                          "accepted": c["correct"]} for c in chains]
        inverted[p.id] = [{"p_valid": [0.1 if ok else 0.9 for ok in c["valid"] + [c["answer_valid"]]],
                           "accepted": not c["correct"]} for c in chains]
    a = agreement(samples, perfect, 0.5, n_boot=100, seed=0)
    assert a["line_agreement"]["value"] == 1.0 and a["line_kappa"]["value"] == pytest.approx(1.0)
    assert a["chain_agreement"]["value"] == 1.0 and a["invalid_lines_flagged"]["value"] == 1.0
    assert a["process_filter_precision"]["value"] == 1.0 and a["line_agreement_chance"] < 1.0
    b = agreement(samples, inverted, 0.5, n_boot=100, seed=0)
    assert b["line_agreement"]["value"] == 0.0 and b["line_kappa"]["value"] < 0


def test_process_reward_rerun_resumes_without_retraining(smoke_run):
    cfg, out, summary = smoke_run
    files = [f"models/{m}/model.safetensors" for m in summary["models"] if m != "base"] + [
        "records/samples.jsonl", "records/verdicts.jsonl"]
    stamps = {f: (out / f).stat().st_mtime_ns for f in files}
    again = run_probe(get_probe("process-reward"), cfg, out)
    assert {f: (out / f).stat().st_mtime_ns for f in files} == stamps
    assert again["models"] == summary["models"] and again["verdicts_vs_exact"] == summary["verdicts_vs_exact"]


def test_process_reward_bad_config_names_the_field(tmp_path):
    probe = get_probe("process-reward")
    base = load_probe_config("configs/probes/process-reward.yaml", probe.config, "process-reward").model_dump(
        mode="json")
    path = tmp_path / "bad.yaml"
    for field, value in (("verifiers", [base["base"]]), ("verifiers", ["no-such-model"]), ("samples", 0),
                         ("arms", ["outcome", "outcome"]), ("threshold", 1.5), ("aggregation", "dawid_skene"),
                         ("tests", ["early_answering", "adding_mistake"])):  # a typo fails at load, not after training
        path.write_text(yaml.safe_dump({**base, field: value}))
        with pytest.raises(ProbeError, match=field):
            load_probe_config(path, probe.config, "process-reward")
