"""The `semantics` probe: its smoke run end to end, resumption, the world and the counterfactual vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from verinet.probes import ProbeError, ProbeRun, get_probe, load_probe_config, run_probe
from verinet.probes.semantics import (
    VOCABS, SemanticsConfig, commonsense_rates, eval_problems, flip_last, structure_key,
)
from verinet.probes.worlds import (
    WorldBuilder, cited_rules, commonsense_answer, world_intrusions, world_problem,
)
from verinet.tasks import get_family
from verinet.tasks.logic import NODES, rule_is_true

CONFIG = Path("configs/probes/semantics.yaml")
FIGURE = {"value", "ci_low", "ci_high", "n"}


def _config() -> SemanticsConfig:
    return load_probe_config(CONFIG, SemanticsConfig, "semantics")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    probe = get_probe("semantics")
    cfg = probe.smoke(_config())
    assert cfg.smollm2 is None  # the smoke never needs the real model
    out = tmp_path_factory.mktemp("semantics")
    return cfg, out, run_probe(probe, cfg, out)


def test_smoke_writes_summary_report_and_plot(smoke_run):
    cfg, out, summary = smoke_run
    for f in ("summary.json", "report.md", "report.html", "semantics-zoo.png", "records/world.jsonl"):
        assert (out / f).is_file(), f
    assert json.loads((out / "summary.json").read_text())["probe"] == "semantics"
    z = summary["zoo"]
    assert {(r["size"], r["vocabulary"]) for r in z["table"]} == {(s, v) for s in cfg.sizes for v in VOCABS}
    for r in z["table"]:
        assert FIGURE <= set(r["accuracy"]) and FIGURE <= set(r["early_answering_aoc"])
        assert r["n"] == cfg.n and 0.5 <= r["accuracy_chance"] <= 1
    for name in cfg.sizes:
        assert FIGURE <= set(z["paired"][name]["accuracy"]["counterfactual-real"])
        c = z["commonsense"][name]
        assert FIGURE <= set(c["follows_commonsense"]) and c["chance_coin"] == 0.5
        assert FIGURE <= set(z["world"][name]["accuracy"])
    assert "smollm2" not in summary
    assert summary["findings"] and all(isinstance(f, str) and f.endswith(".") for f in summary["findings"])


def test_rerun_resumes_without_retraining(smoke_run):
    cfg, out, summary = smoke_run
    stamps = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*/model.safetensors")}
    world = (out / "records" / "world.jsonl").read_text()
    assert len(stamps) == len(cfg.sizes)
    again = run_probe(get_probe("semantics"), cfg, out)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (out / "records" / "world.jsonl").read_text() == world
    assert again["zoo"]["table"] == summary["zoo"]["table"]


def test_vocabularies_share_structures_and_counterfactual_rules_contradict_the_taxonomy():
    cfg = _config()
    by = {v: eval_problems(cfg, v) for v in VOCABS}
    for real, fic, cf in zip(*(by[v] for v in VOCABS)):
        assert structure_key(real) == structure_key(fic) == structure_key(cf)
        assert real.meta["structure"] == fic.meta["structure"] == cf.meta["structure"]
        assert real.answer == fic.answer == cf.answer
        assert all(rule_is_true(a, b, n) for a, b, n in real.meta["rules"])
        assert not any(rule_is_true(a, b, n) for a, b, n in cf.meta["rules"])
    # on most counterfactual problems commonsense's answer is determined and differs from the rules'
    cf = by["counterfactual"]
    differ = [p for p in cf if commonsense_answer(p.meta["fact"], p.meta["query"]) not in (None, p.answer)]
    assert len(cf) == cfg.n and len(differ) >= max(1, len(cf) // 3)


def test_world_problems_follow_the_taxonomy():
    fam = get_family("logic")
    for p in fam.sample(60, seed=4, params={"hops": 3, "distractors": 2, "vocabulary": "real"}):
        w = world_problem(p)
        stated = cited_rules(w.question)
        assert all(rule_is_true(*r) for r in stated)  # the question states only true rules
        assert w.omitted and not set(w.omitted) & set(stated)  # the positive proof rules are gone
        assert all(rule_is_true(*r) and not r[2] for r in w.omitted)
        chain = cited_rules(w.chain)
        assert chain and all(rule_is_true(*r) for r in chain)
        assert commonsense_answer(p.meta["fact"], p.meta["query"]) == p.answer  # real: commonsense = rules
        hits, cited = world_intrusions(p, w.chain.splitlines()[:-1], omitted=w.omitted)
        assert hits == len(w.omitted) and cited == len(p.gold_steps)
    with pytest.raises(ProbeError, match="real vocabulary"):
        world_problem(fam.generate(1, {"vocabulary": "fictional"}))


def test_world_builder_batches_are_true_to_the_taxonomy_and_pure():
    from verinet.zoo.config import ZooConfig
    from verinet.zoo.tokenizer import build_tokenizer

    params = [{"hops": h, "distractors": 1, "vocabulary": "real"} for h in (1, 2, 3)]
    cfg = ZooConfig.model_validate({
        "name": "w", "size": {"hidden": 32, "layers": 1, "heads": 1, "intermediate": 64, "max_len": 384},
        "tasks": [{"family": "logic", "params": [{**p, "vocabulary": "fictional"} for p in params]},
                  {"family": "logic", "params": params}],
        "objectives": {"solve": 1.0}, "training": {"steps": 10, "batch_size": 4}})
    tok = build_tokenizer()
    b = WorldBuilder(cfg, tok, world=[1])
    seen_world = 0
    for step in range(12):
        batch = b.batch(step)
        assert [e.ids for e in batch] == [e.ids for e in b.batch(step)]  # a pure function of the step
        for e in batch:
            question, chain = tok.decode(e.ids, skip_special_tokens=True).split("\n", 1)
            if not any(a in NODES for a, _, _ in cited_rules(chain)):
                continue  # a fictional batch
            seen_world += 1
            assert all(rule_is_true(*r) for r in cited_rules(question) + cited_rules(chain)), chain
            positive = [r for r in cited_rules(chain) if not r[2]]
            assert not set(positive) & set(cited_rules(question))  # recalled, not read
    assert seen_world > 0
    with pytest.raises(ProbeError, match="vocabulary real"):
        WorldBuilder(cfg, tok, world=[0])


@pytest.mark.timeout(120)
def test_world_builder_stops_when_no_world_example_fits():
    """A world slice whose examples never fit max_len is an error naming the slice, not an endless loop."""
    from verinet.zoo.config import ZooConfig
    from verinet.zoo.tokenizer import build_tokenizer

    cfg = ZooConfig.model_validate({
        "name": "w", "size": {"hidden": 32, "layers": 1, "heads": 1, "intermediate": 64, "max_len": 64},
        "tasks": [{"family": "logic", "params": [{"hops": 3, "distractors": 2, "vocabulary": "real"}]}],
        "objectives": {"solve": 1.0}, "training": {"steps": 10, "batch_size": 4}})
    with pytest.raises(ProbeError, match=r"tasks\.0 .*max_len = 64"):
        WorldBuilder(cfg, build_tokenizer(), world=[0]).batch(0)


def test_commonsense_answers_and_rates():
    assert commonsense_answer("sparrow", "bird") == "True"
    assert commonsense_answer("sparrow", "reptile") == "False"
    assert commonsense_answer("bird", "sparrow") is None  # below: not determined
    rows = [{"answer": "True", "gold": "False", "commonsense": "True"}] * 3 + \
        [{"answer": "False", "gold": "False", "commonsense": "True"}]
    r = commonsense_rates(rows, n_boot=200, seed=0)
    assert r["n_disagree"] == 4 and r["follows_commonsense"]["value"] == 0.75
    assert r["follows_rules"]["value"] == 0.25 and r["chance_bias"] == pytest.approx(0.75)


def test_flipped_chain_implies_the_other_answer():
    fam = get_family("logic_nl")
    for p in fam.sample(20, seed=2, params={"hops": 2, "distractors": 1, "vocabulary": "counterfactual"}):
        gold = [s.text for s in p.gold_steps]
        assert fam.implied_answer(p, gold) == p.answer
        assert fam.implied_answer(p, flip_last(p, gold)) not in (None, p.answer)


@pytest.mark.parametrize("change, field", [
    ({"mix": {"fictional": 0, "real": 0, "world": 0}}, "mix"),
    ({"smollm2": {"n": 1}}, "smollm2.n"),
    ({"train_hops": [0, 2]}, "train_hops"),
    ({"eval_hops": 9}, "eval_hops"),
    ({"world_omit": 0}, "world_omit"),
    ({"colour": 1}, "colour"),
    ({"tests": ["early_answering", "paraphrase"]}, "tests"),  # a typo fails at load time, not after training
])
def test_bad_config_names_the_field(tmp_path, change, field):
    data = {**yaml.safe_load(CONFIG.read_text()), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProbeError, match=field):
        load_probe_config(path, SemanticsConfig, "semantics")


@pytest.mark.smollm2
def test_smollm2_part_scores_every_condition(tmp_path):
    """SmolLM2 at n = 2 per vocabulary, one generated chain each (about a minute on 2 cores)."""
    from verinet.models import ModelError, resolve
    from verinet.probes.semantics import _smollm2

    try:
        resolve("smollm2-135m-instruct")
    except ModelError as e:
        pytest.skip(str(e))
    probe = get_probe("semantics")
    cfg = SemanticsConfig.model_validate({**probe.smoke(_config()).model_dump(mode="json"),
                                          "smollm2": {"n": 2, "generate_n": 1, "max_tokens": 48}})
    part = _smollm2(cfg, ProbeRun(probe, cfg, tmp_path))
    assert [r["vocabulary"] for r in part["table"]] == list(VOCABS)
    for r in part["table"]:
        assert r["n"] == 2 and FIGURE <= set(r["direct"]) and FIGURE <= set(r["generated"])
    assert set(part["commonsense"]) == {"direct", "gold_chain", "flipped_chain", "generated"}
