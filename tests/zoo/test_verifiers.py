"""Verifier kinds on committed checkpoints: likelihood and the trained verdict, by error kind."""

import json
import math

import pytest
import torch

from verinet.schema import ERROR_KINDS
from verinet.processbench import DEFAULT_GRID, choose_threshold, earliest_error_f1, first_below
from verinet.tasks import get_family
from verinet.zoo.model import load_checkpoint
from verinet.zoo.registry import list_checkpoints, resolve, smallest
from verinet.zoo.verifiers import (
    METHODS, VERIFIER_SLICES, evaluate_verifiers, injected_auroc, own_error_f1, step_scores,
)

LARGEST = list_checkpoints()[-1][0]
TOL = 0.02  # the card's repro sample is rerun with the same problems; only float noise may differ


@pytest.fixture(scope="module")
def large():
    torch.set_num_threads(1)
    return load_checkpoint(resolve(LARGEST))


def test_scores_cover_every_step_and_the_answer_line(large):
    fam = get_family("arith")
    p = fam.generate(3, {"steps": 3, "distractors": 0})
    items = [(p.question, [s.text for s in p.gold_steps], p.answer), (p.question, [s.text for s in p.gold_steps], None)]
    for method in METHODS:
        a, b = step_scores(*large, method, items)
        assert len(a) == len(p.gold_steps) + 1 and len(b) == len(p.gold_steps)
        assert all(0.0 <= x <= 1.0 for x in a + b)


def test_likelihood_of_the_largest_sees_wrong_results_and_the_smallest_less(large):
    for fam in VERIFIER_SLICES:
        big = injected_auroc(*large, fam, VERIFIER_SLICES[fam], 40, seed=123, methods=("likelihood",))["likelihood"]
        assert big["wrong_result"] >= 0.95 and big["wrong_premise"] >= 0.9, (fam, big)
        assert big["p_error"]["wrong_result"] < big["p_gold"]
    # the smallest solves 3 plain arith steps without error, and verifies them as well; logic separates
    small = injected_auroc(*load_checkpoint(resolve(smallest()[0])), "logic", VERIFIER_SLICES["logic"], 40,
                           seed=123, methods=("likelihood",))["likelihood"]
    below = [k for k in ERROR_KINDS if small[k] is not None and small[k] < big[k] - 0.05]
    assert len(below) >= 2, (small, big)


def test_auroc_interval_resamples_problems_and_brackets_the_auroc(large):
    import numpy as np

    from verinet.zoo.card import auroc_cell
    from verinet.zoo.verifiers import _auroc, auroc_interval

    rng = np.random.default_rng(0)
    gold = [list(rng.normal(1.0, 1.0, 3)) for _ in range(60)]
    err = [(i, float(rng.normal(0.0, 1.0))) for i in range(60)]
    value = _auroc([x for row in gold for x in row], [x for _, x in err])
    lo, hi = auroc_interval(gold, err)
    assert lo < value < hi and 0.05 < hi - lo < 0.4
    wide = auroc_interval(gold[:15], err[:15])  # fewer problems: a wider interval
    assert wide[1] - wide[0] > hi - lo
    # every gold line four times over within its problem: no new information, so resampling problems (not
    # lines) keeps the interval; a bootstrap over lines would narrow it
    lo4, hi4 = auroc_interval([row * 4 for row in gold], err)
    assert abs((hi4 - lo4) - (hi - lo)) < 0.02
    assert auroc_interval(gold, []) is None and auroc_interval([[], []], err[:2]) is None
    assert auroc_cell(0.9, [0.8, 0.95]) == "0.900 [0.800, 0.950]" and auroc_cell(None, None) == "n/a"
    got = injected_auroc(*large, "arith", VERIFIER_SLICES["arith"], 12, seed=5, methods=("likelihood",))
    for kind, ci in got["likelihood"]["ci"].items():
        assert ci is None or ci[0] - 1e-3 <= got["likelihood"][kind] <= ci[1] + 1e-3, (kind, ci)


def test_own_error_set_is_balanced_and_labelled_by_the_checker(large):
    from verinet.zoo.verifiers import OWN_ERROR_SLICES, own_error_set

    chains = own_error_set([(LARGEST, *large)], "logic", 8, seed=11)
    one = own_error_set([(LARGEST, *large)], "arith", 12, seed=11, slices=[{"steps": 4, "distractors": 2}])
    assert one and {c["params"]["distractors"] for c in one} == {2}  # slices replace OWN_ERROR_SLICES
    fam = get_family("logic")
    assert chains and sum(c["label"] == -1 for c in chains) * 2 == len(chains)
    by_id = {p.id: p for j, params in enumerate(OWN_ERROR_SLICES["logic"])
             for p in fam.sample(8, seed=11 + j, params=params)}
    for c in chains:
        text = "\n".join(c["steps"] + [f"#### {c['answer']}"])
        check = fam.check(by_id[c["problem_id"]], text)
        assert check.first_error == c["label"], c
        wrong = None if c["label"] == -1 else (check.steps + [check.answer])[c["label"]]
        assert c["reason"] == (None if wrong is None else wrong.reason) and (c["label"] == -1) == (c["reason"] is None)


def test_written_chains_have_room_for_the_longest_gold_chain(large, monkeypatch):
    """A writer's chain is never cut short where the gold chain would fit (3-hop logic chains run past
    160 tokens, the old fixed budget, and were then labelled wrong at a missing answer)."""
    import verinet.zoo.verifiers as v

    model, tok = large
    budgets = []
    monkeypatch.setattr(v, "generate_greedy", lambda m, t, prompts, max_new_tokens: (
        budgets.append(max_new_tokens) or [""] * len(prompts)))
    slices = [{"hops": 3, "distractors": 1}, {"hops": 1, "distractors": 1}]
    list(v.written_chains([("w", model, tok)], "logic", slices, 30, seed=5))
    fam = get_family("logic")
    for j, budget in enumerate(budgets):
        longest = max(len(tok(fam.gold_chain(p).text, add_special_tokens=False)["input_ids"])
                      for p in fam.sample(30, seed=5 + j, params=slices[j]))
        assert budget == int(longest * 1.5) + 16
    assert budgets[0] > 160 > budgets[1]  # per slice, and longer than the old fixed one where needed
    list(v.written_chains([("w", model, tok)], "logic", slices[:1], 2, seed=5, max_new_tokens=7))
    assert budgets[-1] == 7


def test_greedy_generation_stops_at_the_end_of_the_models_positions(large, monkeypatch):
    from verinet.zoo.inference import generate_greedy

    model, tok = large
    asked = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: (asked.append(kw["max_new_tokens"]), real(**kw))[1])
    prompt = "a " * 40
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    monkeypatch.setattr(model.config, "max_position_embeddings", n_prompt + 5)
    out = generate_greedy(model, tok, [prompt], max_new_tokens=50)
    assert asked == [5] and len(tok(out[0], add_special_tokens=False)["input_ids"]) <= 5
    monkeypatch.setattr(model.config, "max_position_embeddings", n_prompt)
    with pytest.raises(ValueError, match=f"a prompt of {n_prompt} tokens leaves no room"):
        generate_greedy(model, tok, [prompt], max_new_tokens=50)
    monkeypatch.setattr(model.config, "max_position_embeddings", 512)
    generate_greedy(model, tok, [prompt], max_new_tokens=50)
    assert asked[-1] == 50


def test_own_error_f1_fits_its_threshold_on_the_other_half(large):
    fam = get_family("arith")
    chains = []
    for i, p in enumerate(fam.sample(16, seed=77, params={"steps": 2, "distractors": 0})):
        ch = fam.gold_chain(p) if i % 2 else fam.inject(p, "wrong_result", seed=i)
        label = -1 if i % 2 else ch.first_error
        chains.append({"problem_id": p.id, "question": p.question, "steps": [s.text for s in ch.steps],
                       "answer": ch.answer, "label": label, "writer": "gold-or-injected"})
    r = own_error_f1(*large, "likelihood", chains, per_chain=True)
    assert r["n_chains"] == 8 and r["f1"] is not None and r["f1"] >= 0.75, r
    test_half = {i for i, c in enumerate(chains) if c["problem_id"] not in sorted({c["problem_id"] for c in chains})[::2]}
    assert set(r["predicted"]) == test_half  # the reported half, by index
    hits = [r["predicted"][i] == chains[i]["label"] for i in test_half if chains[i]["label"] != -1]
    assert sum(hits) / len(hits) == pytest.approx(r["acc_err"])
    assert r["ci_low"] <= r["f1"] <= r["ci_high"] and 0 < r["chance"] < r["f1"], r  # problems resampled
    empty = own_error_f1(*large, "likelihood", [])
    assert empty["f1"] is None and empty["ci_low"] is None and empty["chance"] is None  # same keys, undefined


def test_processbench_grid_reaches_likelihood_scale():
    assert min(DEFAULT_GRID) <= 0.001 and max(DEFAULT_GRID) >= 0.9
    items = [([0.9, 0.002, 0.9], 1), ([0.9, 0.6, 0.8], -1), ([0.004, 0.9], 0), ([0.5, 0.7], -1)]
    t = choose_threshold(items)
    assert earliest_error_f1([first_below(s, t) for s, _ in items], [y for _, y in items])["f1"] == 1.0


def test_card_records_verifier_quality_that_reproduces():
    """The card's small repro sample: per-kind AUROC of every verifier kind, rerun with the same problems."""
    name, path, card = list_checkpoints()[-1]
    repro = card["repro"]
    assert "verifier_auroc_by_method" in repro, f"{name}: card has no verifier tables; run zoo eval --update-card"
    model, tok = load_checkpoint(path)
    again = evaluate_verifiers(model, tok, n=repro["n_per_slice"], seed=repro["seed"])
    for method in METHODS:
        for fam, kinds in repro["verifier_auroc_by_method"][method].items():
            for kind, want in kinds.items():
                got = again["verifier_auroc_by_method"][method][fam][kind]
                if want is None:
                    assert got is None
                else:
                    assert math.isclose(got, want, abs_tol=TOL), (method, fam, kind, got, want)
    ev = card["evaluation"]
    assert set(ev["verifier_auroc_by_kind"]) == set(VERIFIER_SLICES)
    assert set(ev["own_error_f1"]) == set(VERIFIER_SLICES)
    json.dumps(ev, allow_nan=False)


def test_fit_threshold_for_an_ensemble_mean_reports_held_out_f1():
    from verinet.zoo.verifiers import fit_threshold

    members = [load_checkpoint(resolve(n)) for n in smallest()[:2]]
    r = fit_threshold(members, 8, seed=5)
    assert r["threshold"] in DEFAULT_GRID
    assert r["test"]["n_err"] + r["test"]["n_corr"] == 8  # half of 2 families x 8 problems
    assert {"dev", "test", "test_at_0.5"} <= set(r)
