"""Verification by likelihood: per-token log-probs on every engine, pooled per step by the formats."""

import math

import pytest
import torch

from verinet.backends import MemberSpec, make_backend
from verinet.backends.formats import ChatFormat, ZooFormat, format_for, make_format
from verinet.backends.openai import OpenAIBackend
from verinet.backends.server import serve
from verinet.tasks import get_family
from verinet.zoo.inference import pool_min
from verinet.zoo.registry import list_checkpoints

ZOO = list_checkpoints()[-1][0]  # the largest: its likelihood separates errors clearly


@pytest.fixture(scope="module")
def hf():
    torch.set_num_threads(1)
    return make_backend(MemberSpec(name="m", backend="hf", model=ZOO, batch_size=3))


@pytest.fixture(scope="module")
def problem():
    return get_family("arith").generate(11, {"steps": 3, "distractors": 0})


def test_token_logprobs_batched_equal_one_by_one_and_a_manual_forward(hf):
    texts = ["<bos>%10;t0;i7;x:i+t;?x\nx:i+t>i7+t0>7;x7\n#### 7<eos>", "<bos>ab", "<bos>%10;a1;b2\n"]
    batched = hf.token_logprobs(texts)
    assert batched.usage.prefill == sum(len(hf.tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    for text, row in zip(texts, batched.tokens):
        alone = hf.token_logprobs([text]).tokens[0]
        assert [(s, e) for s, e, _ in row] == [(s, e) for s, e, _ in alone]
        assert max(abs(a[2] - b[2]) for a, b in zip(row, alone)) < 1e-4
        ids = hf.tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            lp = torch.log_softmax(hf.model(ids).logits[0, :-1].float(), -1)
        manual = lp.gather(1, ids[0, 1:, None])[:, 0].tolist()
        assert max(abs(a - b[2]) for a, b in zip(manual, row)) < 1e-4


def test_likelihood_flags_a_wrong_result_that_the_gold_chain_does_not_have(hf, problem):
    fam = get_family("arith")
    fmt = ZooFormat("likelihood")
    bad = fam.inject(problem, "wrong_result", seed=3)
    (gold, wrong), usage = fmt.verify(hf, problem.question, [([s.text for s in problem.gold_steps], problem.answer),
                                                             ([s.text for s in bad.steps], bad.answer)])
    assert len(gold) == len(problem.gold_steps) + 1 and usage.prefill > 0
    assert wrong[bad.first_error] < 0.05 and wrong[bad.first_error] < min(gold) / 2, (wrong, gold)
    assert wrong[: bad.first_error] == pytest.approx(gold[: bad.first_error], abs=1e-5)


def test_pool_min_counts_tokens_by_their_first_character():
    text = "ab 12 cd\n"
    toks = [(0, 2, -0.1), (2, 3, -0.2), (3, 5, -3.0), (5, 6, -0.05), (6, 9, -1.0)]
    assert pool_min(text, toks, [(0, 3), (3, 9), (9, 9)]) == pytest.approx([math.exp(-0.2), math.exp(-3.0), 1.0])
    digits = pool_min(text, toks, [(0, 9)], counts=lambda t: any(c.isdigit() for c in t))
    assert digits == pytest.approx([math.exp(-3.0)])
    assert pool_min(text, toks, [(0, 3)], counts=lambda t: False) == pytest.approx([math.exp(-0.2)])


def test_chat_layout_scores_step_content_not_the_step_marker():
    fmt = ChatFormat(lambda messages: "PROMPT|", "likelihood")
    text, spans = fmt.likelihood_layout("q", ["I have 3 + 4 = 7 apples.", "So 7."], "7")
    assert text == "PROMPT|Step 1: I have 3 + 4 = 7 apples.\nStep 2: So 7.\n#### 7"
    assert [text[a:b] for a, b in spans] == ["I have 3 + 4 = 7 apples.\n", "So 7.\n", "#### 7"]
    assert fmt.counts("7") and not fmt.counts(" apples")


def test_one_format_factory_carries_the_member_verifier(hf):
    spec = MemberSpec(name="m", backend="hf", model=ZOO)
    assert spec.verifier == "likelihood"
    assert format_for(spec, hf).verifier == "likelihood"
    assert format_for(spec.model_copy(update={"verifier": "verdict"}), hf).verify_call(
        [("q", ["a"], None)]).method == "score_tagged"
    assert make_format("zoo", verifier="likelihood").verify_call([("q", ["a"], None)]).method == "token_logprobs"
    with pytest.raises(ValueError, match="verifier must be one of"):
        ZooFormat("vibes")
    with pytest.raises(ValueError):
        MemberSpec(name="m", backend="hf", model=ZOO, verifier="vibes")


def test_openai_echo_gives_the_same_token_logprobs(hf):
    texts = ["<bos>%10;t0;i7;x:i+t;?x\nx:i+t>i7+t0>7;x7\n#### 7<eos>"]
    want = hf.token_logprobs(texts).tokens[0]
    with serve(hf, "m") as srv:
        got = OpenAIBackend(srv.base_url, "m").token_logprobs(texts).tokens[0]
    assert [(s, e) for s, e, _ in got] == [(s, e) for s, e, _ in want]
    assert max(abs(a[2] - b[2]) for a, b in zip(got, want)) < 1e-5
