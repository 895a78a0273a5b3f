"""Training: the loss falls, runs are deterministic, an interrupted run resumes on the same path."""

import json

import pytest
import torch
from safetensors.torch import load_file

from verinet.zoo.config import ZooError
from verinet.zoo.data import IGNORE, ExampleBuilder
from verinet.zoo.model import count_parameters, load_checkpoint
from verinet.zoo.tokenizer import INVALID, TAG, VALID, build_tokenizer
from verinet.zoo.train import train

from .conftest import micro_config


def test_micro_model_loss_falls(tmp_path, micro):
    r = train(micro, tmp_path / "m")
    assert r.steps == 40 and r.tokens > 0
    assert r.losses[-1] < 0.7 * r.losses[0], r.losses
    model, tok = load_checkpoint(tmp_path / "m")
    assert count_parameters(model)["non_embedding"] > 50_000
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["config"]["name"] == "micro" and not (tmp_path / "m" / "train_state").exists()


def test_resume_follows_the_same_trajectory(tmp_path):
    cfg = micro_config(steps=20)
    straight = train(cfg, tmp_path / "a")
    partial = train(cfg, tmp_path / "b", stop_after=12)  # state saved at step 10, steps 11-12 lost
    assert partial.steps == 12 and (tmp_path / "b" / "train_state" / "state.json").exists()
    resumed = train(cfg, tmp_path / "b")
    assert resumed.steps == straight.steps == 20 and resumed.tokens == straight.tokens
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


def test_finished_run_is_not_retrained_and_config_must_match(tmp_path):
    cfg = micro_config(steps=5)
    first = train(cfg, tmp_path / "m")
    again = train(cfg, tmp_path / "m")
    assert again.tokens == first.tokens
    with pytest.raises(ZooError, match="another config"):
        train(micro_config(steps=6), tmp_path / "m")


def test_verify_examples_put_verdicts_at_tags():
    tok = build_tokenizer()
    b = ExampleBuilder(micro_config(), tok)
    tag, ok, bad = (tok.convert_tokens_to_ids(t) for t in (TAG, VALID, INVALID))
    from verinet.tasks import get_family

    fam = get_family("arith")
    p = fam.generate(3, {"steps": 3})
    import random

    seen_invalid = False
    for i in range(20):
        ex = b.verify(p, random.Random(i))
        marked = [t for i_, t in zip(ex.ids, ex.targets) if t != IGNORE]
        assert all(i_ == tag for i_, t in zip(ex.ids, ex.targets) if t != IGNORE)
        assert set(marked) <= {ok, bad} and len(marked) == ex.ids.count(tag) in (3, 4)  # steps + answer; 3 when a step was dropped
        seen_invalid |= bad in marked
    assert seen_invalid


def test_batches_are_a_function_of_seed_and_step():
    b = ExampleBuilder(micro_config(), build_tokenizer())
    assert [e.ids for e in b.batch(7)] == [e.ids for e in b.batch(7)]
    assert [e.ids for e in b.batch(7)] != [e.ids for e in b.batch(8)]


def test_solve_first_trains_solving_alone_before_the_mixture():
    from tests.zoo.conftest import micro_config
    from verinet.zoo.config import Objectives
    from verinet.zoo.data import ExampleBuilder
    from verinet.zoo.tokenizer import build_tokenizer

    cfg = micro_config(steps=100).model_copy(update={"objectives": Objectives(solve=0.4, verify=0.4, force=0.2,
                                                                              solve_first=0.5)})
    b = ExampleBuilder(cfg, build_tokenizer())
    early = {e.objective for s in range(0, 50, 7) for e in b.batch(s)}
    late = {e.objective for s in range(50, 100, 7) for e in b.batch(s)}
    assert early == {"solve"} and late == {"solve", "verify", "force"}
    with pytest.raises(ValueError, match="solve_first"):
        Objectives(solve_first=1.0)


def test_answer_objective_writes_the_answer_line_and_no_steps():
    from tests.zoo.conftest import micro_config
    from verinet.zoo.config import Objectives
    from verinet.zoo.data import IGNORE, ExampleBuilder
    from verinet.zoo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    cfg = micro_config().model_copy(update={"objectives": Objectives(solve=0.0, verify=0.0, force=0.0, answer=1.0)})
    batch = ExampleBuilder(cfg, tok).batch(3)
    assert {e.objective for e in batch} == {"answer"}
    for e in batch:
        target = tok.decode([t for t in e.targets if t != IGNORE])
        prompt = tok.decode(e.ids[: e.targets.index(next(t for t in e.targets if t != IGNORE)) + 1])
        assert target.startswith("#### ") and target.endswith("<eos>") and "\n" not in target, target
        assert prompt.endswith("\n") and "####" not in prompt  # the solve prompt: the question alone


def test_init_from_starts_from_the_checkpoint_and_refuses_another_size(tmp_path):
    import torch

    from tests.zoo.conftest import micro_config
    from verinet.zoo.config import ModelSize, ZooError
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.train import train

    def still(**kw):  # one step at a negligible learning rate: the weights stay where they started
        cfg = micro_config(steps=1, **kw)
        return cfg.model_copy(update={"training": cfg.training.model_copy(update={"lr": 1e-9, "warmup": 0.0})})

    base = tmp_path / "base"
    train(micro_config(steps=6), base)
    train(still(init_from=str(base)), tmp_path / "tuned")
    a, _ = load_checkpoint(base)
    b, _ = load_checkpoint(tmp_path / "tuned")
    train(still(), tmp_path / "fresh")
    c, _ = load_checkpoint(tmp_path / "fresh")
    w = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(a.state_dict()[w], b.state_dict()[w], atol=1e-5)  # started from base, barely moved
    assert not torch.allclose(a.state_dict()[w], c.state_dict()[w], atol=1e-3)
    other = micro_config(steps=1, init_from=str(base)).model_copy(
        update={"size": ModelSize(hidden=32, layers=1, heads=1, intermediate=64, max_len=256)})
    with pytest.raises(ZooError, match="init_from.*another size"):
        train(other, tmp_path / "other")


def test_a_continued_run_records_every_phase_and_its_card_states_them(tmp_path):
    from verinet.zoo.card import build_card, render_markdown
    from verinet.zoo.train import read_training_info

    base, tuned, again = tmp_path / "base", tmp_path / "tuned", tmp_path / "again"
    train(micro_config(steps=3), base)
    train(micro_config(steps=2, init_from=str(base)), tuned)
    train(micro_config(steps=1, init_from=str(tuned)), again)
    info = read_training_info(again)
    assert info["continued_from"]["steps"] == 2 and info["continued_from"]["continued_from"]["steps"] == 3
    card = build_card(info, {"n_per_slice": 1, "slices": []})
    t = card["training"]
    assert [p["steps"] for p in t["phases"]] == [3, 2, 1] and t["steps"] == 6
    assert [p["start"] for p in t["phases"]] == [None, str(base), str(tuned)]
    assert t["tokens"] == sum(p["tokens"] for p in t["phases"]) > info["tokens"]
    md = render_markdown(card)
    assert "| phase 3 | micro: 1 steps" in md and f"from `{tuned}`" in md
    assert " then " not in t["regime"]  # three phases of one regime read as one
    assert read_training_info(base)["continued_from"] is None
    from verinet.zoo.card import _regime

    assert _regime({"solve": 0.4, "verify": 0.4, "force": 0.2, "answer": 0.0, "solve_first": 0.5}) == (
        "supervised: solve only for the first 50% of steps, then solve 40% + step verification (verdict after "
        "each step) 40% + answer forcing 20%")


def test_weights_retrained_under_an_old_card_are_evaluated_afresh_with_a_card_of_the_new_run(tmp_path):
    """The swap of a ladder: new weights and training.json copied over a checkpoint whose card holds the old
    run's figures. zoo eval must neither reuse those figures nor keep the old run's training; the card keeps
    the checkpoint's name, and its phases name the runs that trained the new weights."""
    import json
    import shutil

    from verinet.zoo.card import build_card, describes_run, write_card
    from verinet.zoo.cli import _card_for_these_weights
    from verinet.zoo.train import read_training_info

    old, new = tmp_path / "old", tmp_path / "new"
    train(micro_config(steps=3), old)
    train(micro_config(steps=2, init_from=str(old)).model_copy(update={"name": "micro-new"}), new)
    stale = {"n_per_slice": 10, "seed": 9_000_000, "slices": [], "overall": {}, "by_family": {}}
    write_card(old, build_card(read_training_info(old), stale, stale))
    card = json.loads((old / "card.json").read_text())
    assert describes_run(card, read_training_info(old)) and _card_for_these_weights(old, card) is card
    for f in ("model.safetensors", "training.json"):
        shutil.copy(new / f, old / f)
    assert not describes_run(card, read_training_info(old))
    fresh = _card_for_these_weights(old, card)
    assert fresh["name"] == card["name"] == "micro" and fresh["training"]["steps"] == 5  # both phases of the new run
    assert [ph["name"] for ph in fresh["training"]["phases"]] == ["micro", "micro-new"]
    assert not fresh["evaluation"] and fresh["repro"] is None  # so _solving has nothing to reuse
    assert describes_run(fresh, read_training_info(old))


def test_a_card_states_own_error_f1_with_its_interval_and_chance():
    import json

    from verinet.zoo.card import render_markdown
    from verinet.zoo.registry import list_checkpoints, resolve

    path = resolve(list_checkpoints()[-1][0])
    card = json.loads((path / "card.json").read_text())
    md = render_markdown(card)
    assert md == (path / "README.md").read_text()  # the committed card is the rendering of its card.json
    r = card["evaluation"]["own_error_detail"]["by_family"]["logic"]["likelihood"]
    assert (f"| logic | {r['n_chains']} | likelihood | {r['acc_err']:.3f} | {r['acc_corr']:.3f} | {r['f1']:.3f} "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['chance']:.3f} |") in md


def test_problems_longer_than_max_len_are_an_error_not_a_hang():
    from tests.zoo.conftest import micro_config
    from verinet.zoo.config import ModelSize, ZooError
    from verinet.zoo.data import ExampleBuilder
    from verinet.zoo.tokenizer import build_tokenizer

    cfg = micro_config().model_copy(update={"size": ModelSize(hidden=32, layers=1, heads=1, intermediate=64,
                                                              max_len=64)})
    with pytest.raises(ZooError, match="fit size.max_len = 64"):
        for step in range(20):
            ExampleBuilder(cfg, build_tokenizer()).batch(step)


def test_the_card_says_what_the_model_was_trained_to_do():
    from verinet.zoo.card import _intro

    mixed = _intro({"objectives": {"solve": 0.5, "verify": 0.3, "force": 0.2}})
    assert "to verify steps" in mixed and "never trained" not in mixed
    solver = {"objectives": {"solve": 0.85, "verify": 0.0, "force": 0.15},
              "phases": [{"objectives": {"solve": 0.85, "verify": 0.0, "force": 0.15}}] * 2}
    text = _intro(solver)
    assert "to verify" not in text and "never trained to give verdicts" in text
    assert "to solve problems step by step and to answer after a given chain" in text
