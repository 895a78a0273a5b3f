"""The token-level PRM (verinet.zoo.token_prm): labels up to the first wrong character, a run that
resumes where it stopped, and a member (verifier prm, step_pooling min) that scores as the trainer does."""

import json
import math

import pytest
import torch
from pydantic import ValidationError

from verinet.backends import MemberSpec, make_backend
from verinet.backends.formats import format_for
from verinet.tasks import get_family
from verinet.zoo import formats, token_prm
from verinet.zoo.config import ZooError
from verinet.zoo.prm import export_prm
from verinet.zoo.registry import list_checkpoints, resolve
from verinet.zoo.verifiers import evaluate_verifiers

ZOO = list_checkpoints()[0][0]  # the smallest: quick to fine-tune
FAM = get_family("arith")


def _problem():
    return FAM.sample(1, seed=11, params={"steps": 3, "distractors": 0})[0]


def test_a_wrong_result_is_labelled_at_its_digit_and_nothing_after():
    p = _problem()
    gold = ([s.text for s in p.gold_steps], p.answer)
    ch = FAM.inject(p, "wrong_result", seed=1)
    text, spans, wrong = token_prm.labelled(p.question, [s.text for s in ch.steps], ch.answer, gold, ch.first_error)
    line = text[spans[ch.first_error][0]:spans[ch.first_error][1]]
    assert spans[ch.first_error][0] <= wrong < spans[ch.first_error][1]
    assert text[wrong] != formats.likelihood_text(p.question, *gold)[0][wrong]
    assert line.index(">", line.index(">") + 1) + 1 == wrong - spans[ch.first_error][0]  # the result digit
    offsets = [(i, i + 1) for i in range(len(text))]  # one token per character
    targets = dict(token_prm.token_targets(offsets, spans, wrong))
    assert targets[wrong] == 0 and all(targets[i] == 1 for i in range(spans[0][0], wrong))
    assert not [i for i in targets if i > wrong] and spans[0][0] - 1 not in targets  # the question is unlabelled
    _, g_spans, g_wrong = token_prm.labelled(p.question, *gold, gold, -1)
    assert g_wrong is None
    assert set(dict(token_prm.token_targets(offsets, g_spans, None)).values()) == {1}


def test_a_detour_before_the_first_wrong_line_is_not_used():
    p = _problem()
    gold = ([s.text for s in p.gold_steps], p.answer)
    steps = list(gold[0])
    steps[0] = steps[0] + " "  # the chain leaves the gold text in line 0, but line 2 is the wrong one
    assert token_prm.labelled(p.question, steps, gold[1], gold, 2) is None


def test_training_resumes_where_it_stopped_and_lands_where_an_unbroken_run_does(tmp_path):
    torch.set_num_threads(1)
    calls = {"n": 0}

    def crash_at_the_third_report(prm, tok):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # after the state of step 2 was saved
        return {}

    kw = dict(steps=4, batch_size=4, lr=1e-3, eval_every=2, log=lambda s: None)
    with pytest.raises(KeyboardInterrupt):
        token_prm.train(ZOO, tmp_path / "a", evaluate=crash_at_the_third_report, **kw)
    assert (tmp_path / "a" / token_prm.STATE).is_file() and not (tmp_path / "a" / "prm.json").exists()
    lines: list[str] = []
    resumed, _, info = token_prm.train(ZOO, tmp_path / "a", evaluate=lambda m, t: {}, **{**kw, "log": lines.append})
    assert lines[0] == "resuming at step 3 of 4" and [c["step"] for c in info["curve"]] == [0, 2, 4]
    unbroken, _, _ = token_prm.train(ZOO, tmp_path / "b", evaluate=lambda m, t: {}, **kw)
    for (k, a), b in zip(resumed.state_dict().items(), unbroken.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k
    assert not (tmp_path / "a" / token_prm.STATE).exists()
    with pytest.raises(ZooError, match="already here"):
        token_prm.train(ZOO, tmp_path / "a", **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tprm") / "prm"
    token_prm.train(ZOO, out, steps=3, batch_size=8, lr=1e-3, log=lambda s: None)
    return out


def test_the_member_scores_each_line_by_its_least_valid_token_as_the_trainer_does(trained):
    meta = json.loads((trained / "prm.json").read_text())
    assert meta["kind"] == "token" and meta["pooling"] == "min" and meta["source"] == ZOO
    problems = FAM.sample(4, seed=5, params={"steps": 2, "distractors": 0})
    items = [(p.question, [s.text for s in p.gold_steps], p.answer) for p in problems]
    spec = MemberSpec(name="t", backend="hf", model=str(trained), verifier="prm", step_pooling="min")
    backend = make_backend(spec)
    call = format_for(spec, backend).verify_call(items)
    assert call.method == "token_scores"
    served = call.decode(getattr(backend, call.method)(*call.args, **call.kwargs))
    prm, tok = token_prm.load_token_prm(trained)
    direct = token_prm.score_steps(prm, tok, [formats.likelihood_text(*it) for it in items])
    assert [len(r) for r in served] == [len(s) + 1 for _, s, _ in items]
    assert max(abs(a - b) for ra, rb in zip(served, direct) for a, b in zip(ra, rb)) < 1e-5
    assert backend.info()["prm_step_tag"] is None


def test_zoo_eval_reports_the_checkpoints_prm_as_a_method(trained):
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    model, tok = load_checkpoint(resolve(ZOO))
    ev = evaluate_verifiers(model, tok, 10, seed=9_000_000, prm=token_prm.load_token_prm(trained),
                            families=("arith",))
    assert set(ev["verifier_auroc_by_method"]) == {"likelihood", "verdict", "prm"}
    best = ev["verifier_auroc_by_kind"]["arith"]["wrong_result"]
    assert best == max(ev["verifier_auroc_by_method"][m]["arith"]["wrong_result"] for m in ("likelihood", "verdict",
                                                                                              "prm"))


def test_a_tag_prm_is_not_loaded_as_a_token_prm(tmp_path):
    out = export_prm(ZOO, tmp_path / "tag")
    with pytest.raises(ZooError, match="step tags"):
        token_prm.load_token_prm(out)
    with pytest.raises(ZooError, match="no token-level PRM"):
        token_prm.load_token_prm(tmp_path)


def test_member_specs_keep_step_pooling_to_prms_without_a_tag():
    with pytest.raises(ValidationError, match="takes no step_tag"):
        MemberSpec(name="t", backend="hf", model="x", verifier="prm", step_pooling="min", step_tag="<v>")
    with pytest.raises(ValidationError, match="only for verifier prm"):
        MemberSpec(name="t", backend="hf", model="x", step_pooling="min")
    chat = MemberSpec(name="t", backend="vllm", model="x", format="chat", verifier="prm", step_pooling="min")
    assert chat.prm_step_tag is None


def test_the_cli_trains_a_prm_with_own_mistakes_and_reports_held_out_auroc(tmp_path):
    from typer.testing import CliRunner

    from verinet.cli import app

    out = tmp_path / "prm"
    r = CliRunner().invoke(app, ["zoo", "train-prm", ZOO, "--out", str(out), "--steps", "2", "--batch-size", "4",
                                 "--own-writers", ZOO, "--own-n", "3", "--eval-every", "0", "--n", "10",
                                 "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "model-written chains" in r.output and "step 2" in r.output and "step_pooling min" in r.output
    meta = json.loads((out / "prm.json").read_text())
    assert meta["own_error_writers"] in ([], [ZOO]) and [c["step"] for c in meta["curve"]] == [0, 2]
    assert meta["own_error_request"] == {"writers": [ZOO], "n_per_slice": 3,
                                         "slices": json.loads(json.dumps(token_prm.TRAIN_SLICES)),
                                         "max_new_tokens": "1.5 x the slice's longest gold chain + 16"}  # as cards say
    assert sum(meta["own_error_by_slice"].values()) == meta["own_error_chains"]
    assert set(meta["curve"][-1]) >= {"arith", "logic"}
    r = CliRunner().invoke(app, ["zoo", "train-prm", ZOO, "--out", str(out), "--steps", "2"])
    assert r.exit_code == 2 and "already here" in r.output


def test_own_mistakes_come_from_the_slices_asked_for(tmp_path):
    from typer.testing import CliRunner

    from verinet.cli import app
    from verinet.zoo.model import load_checkpoint

    writer = [(ZOO, *load_checkpoint(resolve(ZOO)))]
    pool = token_prm.own_error_pool(writer, 4, seed=5, slices={"arith": [{"steps": 5, "distractors": 2}]})
    assert pool and {r["family"] for r in pool} == {"arith"}  # logic left out: no own mistakes from it
    assert all(r["params"]["steps"] == 5 and r["params"]["distractors"] == 2 for r in pool)
    for bad, said in [("arith:stepz=4", "--own-slices: arith"), ("algebra:steps=4", "--own-slices: 'algebra'"),
                      ("arith_nl:steps=2", "trains on arith, logic only"), ("arith:steps=x", "--own-slices: 'steps=x'")]:
        r = CliRunner().invoke(app, ["zoo", "train-prm", ZOO, "--out", str(tmp_path / "p"), "--own-slices", bad])
        assert r.exit_code == 2 and said in " ".join(r.output.split()), r.output


def test_extra_layers_start_as_the_identity():
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.prm import as_token_classifier
    from verinet.zoo.registry import resolve

    model, tok = load_checkpoint(resolve(ZOO))
    plain, deeper = as_token_classifier(model, tok).eval(), as_token_classifier(model, tok, extra_layers=2).eval()
    assert deeper.config.num_hidden_layers == model.config.num_hidden_layers + 2
    ids = tok([formats.likelihood_text(*_item())[0]], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert torch.equal(plain(**ids).logits, deeper(**ids).logits)


def _item():
    p = _problem()
    return p.question, [s.text for s in p.gold_steps], p.answer


def test_the_committed_prm_reproduces_its_held_out_sample_and_serves_from_the_example_config():
    """zoo-l/prm (`verinet zoo train-prm zoo-l`): the per-kind AUROC stored in its prm.json reruns within
    float noise on the same problems, and configs/ensemble-zoo-prm.yaml puts it beside three solvers."""
    from pathlib import Path

    from verinet.backends import load_ensemble_config
    from verinet.zoo.registry import resolve

    path = resolve("zoo-l/prm")
    meta = json.loads((path / "prm.json").read_text())
    assert meta["kind"] == "token" and meta["source"] == "zoo-l"
    prm, tok = token_prm.load_token_prm(path)
    again = token_prm.held_out_auroc(prm, tok, meta["repro"]["n_per_slice"])
    for fam, kinds in meta["repro"]["auroc"].items():
        for kind, value in kinds.items():
            assert again[fam][kind] == pytest.approx(value, abs=0.02), (fam, kind)
    ens = load_ensemble_config(Path(__file__).resolve().parents[2] / "configs" / "ensemble-zoo-prm.yaml")
    prm_members = [m for m in ens.members if m.verifier == "prm"]
    assert [(m.model, m.step_pooling) for m in prm_members] == [("zoo-l/prm", "min")]
    assert prm_members[0].model_location() == str(path)


def test_a_member_must_read_a_prm_the_way_it_was_trained(trained, tmp_path):
    from verinet.backends import BackendError

    with pytest.raises(BackendError, match="step_pooling: min"):
        make_backend(MemberSpec(name="t", backend="hf", model=str(trained), verifier="prm"))
    tag = export_prm(ZOO, tmp_path / "tag")
    with pytest.raises(BackendError, match="step_pooling: tag"):
        make_backend(MemberSpec(name="t", backend="hf", model=str(tag), verifier="prm", step_pooling="min"))


def test_line_targets_cover_lines_up_to_the_first_wrong_character():
    spans = [(10, 15), (15, 20), (20, 26)]
    offsets = [(i, i + 1) for i in range(26)]
    assert token_prm.line_targets(offsets, spans, None) == [(list(range(a, b)), 1) for a, b in spans]
    assert token_prm.line_targets(offsets, spans, 17) == [(list(range(10, 15)), 1), ([15, 16, 17], 0)]
    assert token_prm.first_wrong_char("abcX\n", "abcd\n", [(0, 5)], 0) == 3
    assert token_prm.first_wrong_char("abc\n", "abc\nmore", [(0, 4)], 0) is None  # no difference inside the line
    assert token_prm.first_wrong_char("ab\nc\n", "ab\nd\n", [(0, 3), (3, 5)], 0) is None  # it is in line 1


def test_a_trained_prm_can_be_trained_further(trained, tmp_path):
    again, _, info = token_prm.train(ZOO, tmp_path / "more", steps=1, batch_size=4, init_from=trained,
                                     log=lambda s: None)
    assert info["init_from"] == str(trained) and info["extra_layers"] == 0
    with pytest.raises(ZooError, match="another checkpoint"):
        token_prm.train("zoo-s", None, steps=1, init_from=trained, log=lambda s: None)


def test_teacher_targets_rate_the_solvers_own_token_one_and_a_ruled_out_result_near_zero():
    from verinet.zoo.inference import token_logprobs
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    model, tok = load_checkpoint(resolve("zoo-xs-sf-s1"))  # solves 3-step arith: it rules wrong results out
    p = _problem()
    gold = ([s.text for s in p.gold_steps], p.answer)
    ch = FAM.inject(p, "wrong_result", seed=1)
    text, spans, wrong = token_prm.labelled(p.question, [s.text for s in ch.steps], ch.answer, gold, ch.first_error)
    gold_text = formats.likelihood_text(p.question, *gold)[0]
    t_wrong, t_gold = token_prm.teacher_targets(model, tok, [text, gold_text])
    offsets, _ = token_prm.valid_logprobs(token_prm.as_token_classifier(model, tok), tok, [text])
    at = next(i for i, (s, e) in enumerate(offsets[0]) if s <= wrong < e)
    assert torch.isnan(t_wrong[0]) and len(t_wrong) == len(offsets[0])
    assert t_wrong[at] < 0.01 and t_gold[at] > 0.99  # the same position: the gold digit is the one expected
    # aligned with the solver's own token log-probabilities (which start at the second token)
    lp = [v for _, _, v in token_logprobs(model, tok, [text])[0]]
    assert len(lp) == len(t_wrong) - 1
    # P(token) / max P lies between P(token) and 1
    assert all(math.exp(v) - 1e-5 <= float(r) <= 1 + 1e-6 for v, r in zip(lp, t_wrong[1:], strict=True))
    short = formats.likelihood_text(p.question, gold[0][:1], None)[0]  # left-padded beside the longer texts
    assert len(short) < len(text)
    alone, padded = token_prm.teacher_targets(model, tok, [short])[0], token_prm.teacher_targets(model, tok, [text, short])[1]
    assert torch.allclose(alone[1:], padded[1:], atol=1e-5)


def test_the_distillation_loss_is_the_cross_entropy_against_soft_targets():
    lp = torch.log(torch.tensor([0.5, 0.9]))
    want = -(1 * math.log(0.5) + (0.3 * math.log(0.9) + 0.7 * math.log(0.1))) / 2
    assert token_prm._distill_loss(lp, torch.tensor([1.0, 0.3])).item() == pytest.approx(want, rel=1e-5)


def test_distillation_changes_what_is_learnt_and_freezing_needs_added_layers(tmp_path):
    torch.set_num_threads(1)
    kw = dict(steps=1, batch_size=4, lr=1e-2, extra_layers=1, log=lambda s: None)
    plain, _, _ = token_prm.train(ZOO, None, **kw)
    distilled, _, _ = token_prm.train(ZOO, None, distill=1.0, **kw)
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), distilled.state_dict().values()))
    with pytest.raises(ZooError, match="no added layers"):
        token_prm.train(ZOO, None, steps=1, batch_size=2, extra_layers=0, freeze_backbone=True, log=lambda s: None)


def test_distillation_and_a_frozen_backbone_are_recorded_and_leave_the_backbone_alone(tmp_path):
    from typer.testing import CliRunner

    from verinet.cli import app
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    out = tmp_path / "d"
    r = CliRunner().invoke(app, ["zoo", "train-prm", ZOO, "--out", str(out), "--steps", "2", "--batch-size", "4",
                                 "--lr", "1e-2", "--extra-layers", "1", "--distill", "1", "--freeze-backbone",
                                 "--own-writers", "", "--eval-every", "0", "--n", "10", "--threads", "1"])
    assert r.exit_code == 0, r.output
    info = json.loads((out / "prm.json").read_text())
    assert info["distill"] == 1.0 and info["freeze_backbone"] and "distillation" in info["loss"]
    prm, _ = token_prm.load_token_prm(out)
    src, _ = load_checkpoint(resolve(ZOO))
    n = src.config.num_hidden_layers
    backbone = {k: v for k, v in src.model.state_dict().items() if k != "norm.weight"}  # the final norm trains
    assert len(backbone) > 10 and all(torch.equal(prm.model.state_dict()[k], v) for k, v in backbone.items())
    assert prm.model.layers[n].mlp.down_proj.weight.abs().sum() > 0  # the added layer learnt (it starts at zero)



def test_other_parity_reads_the_wrong_digit_against_the_gold_one():
    assert token_prm.other_parity("x>3", "x>4", 2) and not token_prm.other_parity("x>3", "x>5", 2)
    assert not token_prm.other_parity("x>a", "x>4", 2) and not token_prm.other_parity("x>3", "x>", 2)


def test_same_parity_makes_wrong_results_keep_the_right_ones_parity_and_leaves_the_mix_alone(monkeypatch):
    import random

    gold_of = {}
    labelled = token_prm.labelled

    def spy(question, steps, answer, gold, first_error):
        ex = labelled(question, steps, answer, gold, first_error)
        if ex is not None and ex[2] is not None:
            gold_of[ex[0]] = formats.likelihood_text(question, *gold)[0]
        return ex

    monkeypatch.setattr(token_prm, "labelled", spy)

    def draw(same_parity: float) -> tuple[float, float, int]:
        batch = token_prm.sample_examples(random.Random(3), 800, ("arith",), same_parity=same_parity)
        errors = [(t, w) for t, _, w in batch if w is not None]
        # a wrong result is the digit after its line's second '>' ("a+b>name>value")
        results = [(t, w) for t, w in errors if t[:w].rsplit("\n", 1)[-1].count(">") == 2 and t[w].isdigit()]
        other = sum(token_prm.other_parity(t, gold_of[t], w) for t, w in results)
        return len(errors) / len(batch), other / len(results), len(results)

    err0, other0, n0 = draw(0.0)
    err1, other1, n1 = draw(1.0)
    assert n0 > 100 and n1 > 100
    assert 0.4 < other0 < 0.7  # the injector's offsets 1..9 mod 10: 5 of 9 change the parity
    assert other1 < 0.05  # (5/9)^8 of them keep the other parity after MAX_REDRAWS draws
    assert abs(err0 - err1) < 0.06  # gold chains and errors stay as many as before


def test_the_next_token_loss_reads_the_solvers_own_prediction_after_the_backbone():
    import random

    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.prm import as_token_classifier
    from verinet.zoo.registry import resolve

    solver, tok = load_checkpoint(resolve(ZOO))
    n = solver.config.num_hidden_layers
    prm = as_token_classifier(load_checkpoint(resolve(ZOO))[0], tok, 2)
    torch.manual_seed(0)
    for layer in prm.model.layers[n:]:  # the added layers start as the identity: make them change the stream
        torch.nn.init.normal_(layer.mlp.down_proj.weight, std=0.5)
    batch = token_prm.sample_examples(random.Random(0), 3, ("arith",))
    hidden = []
    offsets, _ = token_prm.valid_logprobs(prm, tok, [t for t, _, _ in batch], hidden_layer=n, hidden_out=hidden)
    with torch.inference_mode():
        enc = tok(batch[0][0], add_special_tokens=False, return_tensors="pt")
        logits = solver(**enc).logits[0]
        assert torch.allclose(solver.lm_head(solver.model.norm(hidden[0])), logits, atol=1e-4)
        loss = float(token_prm._next_token_loss(solver, tok, batch[:1], offsets[:1], hidden[:1]))
        # the same loss from the solver's own logits: position t-1 predicts token t, for every valid token t
        ids = enc["input_ids"][0]
        nxt = [t for t, label in token_prm.token_targets(offsets[0], *batch[0][1:]) if label == 1 and t > 0]
        own = torch.nn.functional.cross_entropy(logits[[t - 1 for t in nxt]], ids[nxt])
    assert len(nxt) > 10 and math.isclose(loss, float(own), rel_tol=1e-4)
    with pytest.raises(ValueError, match="decoder layers"):
        token_prm.valid_logprobs(prm, tok, [batch[0][0]], hidden_layer=0, hidden_out=[])


def test_the_next_token_loss_has_nothing_to_learn_from_chains_wrong_from_the_start():
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    solver, tok = load_checkpoint(resolve(ZOO))
    hidden = [torch.zeros(5, solver.config.hidden_size, requires_grad=True)]
    offsets = [[(i, i + 1) for i in range(5)]]
    loss = token_prm._next_token_loss(solver, tok, [("a+b>c", [(0, 5)], 0)], offsets, hidden)
    assert float(loss) == 0.0


def test_hard_negatives_leave_the_committed_prms_batches_alone():
    """same_parity 0 draws exactly what the committed PRM trained on (fingerprint taken before the option)."""
    import hashlib
    import random

    batch = token_prm.sample_examples(random.Random(1), 2000, ("arith", "logic"))
    assert hashlib.md5(str(batch).encode()).hexdigest() == "b8e13d4f604787ea8f1ee13fe9999be0"


def test_the_next_token_loss_is_recorded_and_changes_what_is_learnt():
    kw = dict(steps=1, batch_size=4, lr=1e-2, extra_layers=1, log=lambda s: None)
    plain, _, _ = token_prm.train(ZOO, None, **kw)
    with_lm, _, info = token_prm.train(ZOO, None, lm_loss=1.0, **kw)
    assert info["lm_loss"] == 1.0 and "next-token" in info["loss"]
    with pytest.raises(ZooError, match="lm_loss with freeze_backbone"):
        token_prm.train(ZOO, None, lm_loss=1.0, freeze_backbone=True, **kw)
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), with_lm.state_dict().values()))


def test_a_prm_knows_whether_it_was_trained_from_its_sources_current_weights(tmp_path):
    import hashlib

    from verinet.zoo.token_prm import source_mismatch, weights_digest

    src, prm = tmp_path / "zoo-q", tmp_path / "zoo-q" / "prm"
    prm.mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"weights one")
    assert weights_digest(src) == hashlib.sha256(b"weights one").hexdigest()
    (prm / "prm.json").write_text(json.dumps({"source": "zoo-q", "kind": "token"}))
    assert source_mismatch(prm, src) is None  # an older PRM that did not record its source's weights
    (prm / "prm.json").write_text(json.dumps({"source": "zoo-q", "kind": "token", "source_sha256": weights_digest(src)}))
    assert source_mismatch(prm, src) is None
    (src / "model.safetensors").write_bytes(b"weights two")  # the source retrained, the PRM kept
    why = source_mismatch(prm, src)
    assert why and "other weights of zoo-q" in why and "verinet zoo train-prm zoo-q" in why


def test_the_committed_prm_says_it_predates_the_current_zoo_l():
    from verinet.zoo.registry import resolve
    from verinet.zoo.token_prm import companion, source_mismatch

    card = json.loads((resolve("zoo-l") / "card.json").read_text())
    assert card["evaluation"].get("prm_source_mismatch") == source_mismatch(companion(resolve("zoo-l")), resolve("zoo-l"))
