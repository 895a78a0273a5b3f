"""The openai backend against a real OpenAI-compatible server (verinet's own) on 127.0.0.1.

The server runs the zoo-xs-s0 checkpoint through HFBackend; every client result is
compared with HFBackend called directly. Log-prob tolerance: 1e-4 (the server's forward
passes batch and pad prompts differently, which moves float32 results by ~1e-6).
"""

import json
import math

import pytest
import requests
import torch

from verinet.backends.base import BackendError, Usage
from verinet.backends.hf import HFBackend
from verinet.backends.openai import OpenAIBackend
from verinet.backends.server import serve
from verinet.serve.ports import free_port
from verinet.tasks import get_family, split_chain
from verinet.zoo.formats import solve_prompt, verify_text
from verinet.zoo.registry import MODELS_DIR

torch.set_num_threads(1)

NAME = "zoo-xs-s0"
TOL = 1e-4


@pytest.fixture(scope="module")
def hf():
    torch.set_num_threads(1)
    return HFBackend(str(MODELS_DIR / NAME), batch_size=8)


@pytest.fixture(scope="module")
def srv(hf):
    with serve(hf, NAME) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    c = OpenAIBackend(srv.base_url, NAME, batch_size=3)  # 3: four prompts take two requests
    yield c
    c.close()


@pytest.fixture(scope="module")
def problems():
    return get_family("arith").sample(4, seed=1)


@pytest.fixture(scope="module")
def prompts(problems):
    return [solve_prompt(p.question) for p in problems]


@pytest.fixture(scope="module")
def verify_texts(problems):
    fam = get_family("arith")
    texts = []
    for p in problems:
        for chain in (fam.gold_chain(p), fam.inject(p, "wrong_result")):
            sc = split_chain(chain.text)
            texts.append(verify_text(p.question, sc.steps, sc.answer))
    return texts


def post(srv, body, **kw):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(srv.base_url + "/completions", data=data, headers={"Content-Type": "application/json"},
                         timeout=60, **kw)


# ---- models and health -----------------------------------------------------------------------
def test_models_lists_the_model_and_health(srv, client):
    assert srv.host == "127.0.0.1" and srv.port > 0
    r = requests.get(srv.base_url + "/models", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [(NAME, "model", "verinet")]
    client.health()
    with pytest.raises(BackendError, match=rf"does not serve model 'nope'.*{NAME}"):
        OpenAIBackend(srv.base_url, "nope").health()
    assert client.info() == {"backend": "openai", "model": NAME, "base_url": srv.base_url}


# ---- generate ------------------------------------------------------------------------------
def test_greedy_generate_equals_hf(hf, client, prompts):
    want = hf.generate(prompts, temperature=0, max_tokens=96)
    got = client.generate(prompts, temperature=0, max_tokens=96)
    assert got.completions == want.completions  # texts, token counts and finish reasons, in input order
    assert got.usage == want.usage
    short = client.generate(prompts, max_tokens=5)
    assert short.completions == hf.generate(prompts, max_tokens=5).completions
    assert all(c[0].finish_reason == "length" and c[0].tokens == 5 for c in short.completions)


def test_stop_strings_and_seeded_sampling_equal_hf(hf, client, prompts):
    want = hf.generate(prompts, max_tokens=96, stop=["\n"])
    got = client.generate(prompts, max_tokens=96, stop=["\n"])
    assert got.completions == want.completions and got.usage == want.usage
    assert all("\n" not in c[0].text and c[0].finish_reason == "stop" for c in got.completions)
    # same seed, same batching on the server: the same samples, ordered prompt-major then sample
    one = OpenAIBackend(client.base_url, NAME)  # batch 32: one request, as HFBackend's one batch of 4
    want = hf.generate(prompts, n=2, temperature=1.0, top_p=0.9, max_tokens=40, seed=7)
    got = one.generate(prompts, n=2, temperature=1.0, top_p=0.9, max_tokens=40, seed=7)
    assert got.completions == want.completions and got.usage == want.usage
    assert [len(c) for c in got.completions] == [2] * 4
    with pytest.raises(ValueError, match="n > 1 needs temperature > 0"):
        client.generate(prompts, n=2, temperature=0)


def test_server_text_path_delegates_to_the_backend(hf, srv, prompts):
    want = hf.generate(prompts[:2], max_tokens=30).completions
    r = post(srv, {"model": NAME, "prompt": prompts[:2], "max_tokens": 30, "temperature": 0, "n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == NAME and body["id"].startswith("cmpl-")
    ch = body["choices"]
    assert [c["index"] for c in ch] == [0, 1, 2, 3]
    assert [c["text"] for c in ch] == [want[0][0].text] * 2 + [want[1][0].text] * 2
    assert all(c["logprobs"] is None for c in ch)
    u = body["usage"]
    assert u["prompt_tokens"] == sum(len(p) - 4 for p in prompts[:2])  # "<bos>" is one token, the rest chars
    assert u["completion_tokens"] == 2 * (want[0][0].tokens + want[1][0].tokens)
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    # echo without logprobs: the prompt, then the completion
    r = post(srv, {"model": NAME, "prompt": prompts[0], "max_tokens": 30, "temperature": 0, "echo": True})
    assert r.json()["choices"][0]["text"] == prompts[0] + want[0][0].text


# ---- log-probs from the server ---------------------------------------------------------------------
def test_echo_logprobs_are_prompt_token_logprobs(hf, srv, verify_texts):
    text = verify_texts[1]
    r = post(srv, {"model": NAME, "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 3})
    assert r.status_code == 200, r.text
    ch = r.json()["choices"][0]
    assert ch["text"] == text
    lp = ch["logprobs"]
    ids = hf.tok(text, add_special_tokens=False)["input_ids"]
    assert "".join(lp["tokens"]) == text and len(lp["tokens"]) == len(ids)
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(len(ids))]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    with torch.inference_mode():
        ref = torch.log_softmax(hf.model(torch.tensor([ids])).logits[0].float(), -1)
    for i in range(1, len(ids)):  # position i: log P(token_i | tokens_<i)
        assert lp["token_logprobs"][i] == pytest.approx(float(ref[i - 1, ids[i]]), abs=TOL)
        top = lp["top_logprobs"][i]
        assert 3 <= len(top) <= 4 and lp["tokens"][i] in top
        best = int(ref[i - 1].argmax())
        assert top[hf.tok.decode([best])] == pytest.approx(float(ref[i - 1, best]), abs=TOL)
    assert r.json()["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}


def test_a_member_sets_the_request_timeout_and_batch():
    from verinet.backends import MemberSpec, make_backend

    spec = MemberSpec(name="api", backend="openai", model="m", base_url="http://127.0.0.1:9/v1",
                      request_timeout_s=900.0, batch_size=3)
    api = make_backend(spec)
    assert (api.timeout_s, api.batch_size) == (900.0, 3)
    with pytest.raises(ValueError, match="request_timeout_s"):
        MemberSpec(name="api", backend="openai", model="m", base_url="http://127.0.0.1:9/v1", request_timeout_s=0)


def test_usage_leaves_out_prefix_cache_hits(client, monkeypatch):
    body = {"choices": [{"index": 0, "text": "x"}], "usage": {"prompt_tokens": 100, "completion_tokens": 3,
                                                              "prompt_tokens_details": {"cached_tokens": 60}}}
    monkeypatch.setattr(client, "_request", lambda *a: body)
    assert client._complete({"prompt": ["p"]}, 1)[1] == Usage(prefill=40, decode=3)
    assert client._complete({"prompt": ["p"]}, 1, generates=False)[1] == Usage(prefill=40, decode=0)


def test_a_bos_the_server_prepends_is_not_part_of_the_text(client, monkeypatch):
    # vLLM's completions add the tokenizer's BOS (Llama, Mistral): the echo's offsets then count "<s>", and
    # the first token of the text is scored given it; spans must stay on the text's own characters
    echo = {"logprobs": {"tokens": ["<s>", "ab", " cd"], "token_logprobs": [None, -1.0, -2.0],
                         "text_offset": [0, 3, 5]}}
    monkeypatch.setattr(client, "_echo", lambda texts: ([echo], Usage()))
    assert client.token_logprobs(["ab cd"]).tokens == [[(0, 2, -1.0), (2, 5, -2.0)]]
    plain = {"logprobs": {"tokens": ["ab", " cd"], "token_logprobs": [None, -2.0], "text_offset": [0, 2]}}
    monkeypatch.setattr(client, "_echo", lambda texts: ([plain], Usage()))
    assert client.token_logprobs(["ab cd"]).tokens == [[(2, 5, -2.0)]]
    # a text that starts with a character split over byte tokens: the first piece is no BOS
    split = {"logprobs": {"tokens": ["\ufffd", "\ufffd", " cd"], "token_logprobs": [None, -1.0, -2.0],
                          "text_offset": [0, 1, 1]}}
    monkeypatch.setattr(client, "_echo", lambda texts: ([split], Usage()))
    assert client.token_logprobs(["é cd"]).tokens[0][-1] == (1, 4, -2.0)


def test_generation_logprobs_and_token_id_prompts(hf, srv, prompts):
    want = hf.generate(prompts[:2], max_tokens=8).completions
    r = post(srv, {"model": NAME, "prompt": prompts[:2], "max_tokens": 8, "temperature": 0, "logprobs": 2})
    for p, c, w in zip(prompts, r.json()["choices"], want):
        lp = c["logprobs"]
        assert c["text"] == w[0].text and len(lp["tokens"]) == w[0].tokens
        assert "".join(lp["tokens"]) == w[0].text
        for tok, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
            assert max(top.values()) == v and top[tok] == v  # greedy: the chosen token is the top one
        first = hf.score([p], [lp["tokens"][0]]).logprobs[0][0]
        assert lp["token_logprobs"][0] == pytest.approx(first, abs=TOL)
    ids = hf.tok(prompts[0], add_special_tokens=False)["input_ids"]
    r = post(srv, {"model": NAME, "prompt": ids, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == want[0][0].text


# ---- score and score_tagged through the client --------------------------------------------------------
def test_score_single_token_candidates_match_hf(hf, client, prompts, verify_texts):
    # prefixes ending at a verdict slot (the candidates are in the top-k) and solve prompts (they are not:
    # the echo fallback)
    prefixes = [t[:t.index("<v>") + 3] for t in verify_texts] + prompts
    cands = ["<+>", "<->"]
    got, want = client.score(prefixes, cands), hf.score(prefixes, cands)
    assert len(got.logprobs) == len(prefixes)
    for g, w in zip(got.logprobs, want.logprobs):
        assert g == pytest.approx(w, abs=TOL)
    assert got.usage.prefill >= want.usage.prefill
    assert got.usage.decode == want.usage.decode == 0  # the one token a scoring call asks for is not decoding


def test_score_multi_token_candidates_match_hf(hf, client, prompts):
    cands = ["7;x7", "8;x8", "c"]
    got, want = client.score(prompts, cands), hf.score(prompts, cands)
    for g, w in zip(got.logprobs, want.logprobs):
        assert g == pytest.approx(w, abs=TOL)
    again = client.score(prompts, cands[:2])  # known multi-token candidates: echo only, nothing generated
    for g, w in zip(again.logprobs, got.logprobs):
        assert g == pytest.approx(w[:2], abs=TOL)
    assert again.usage.decode == 0
    assert again.usage.prefill == sum(len(p) - 4 + 4 for p in prompts) * 2  # prompt chars ("<bos>" is 1) + 4


def test_score_tagged_matches_hf(hf, client, verify_texts):
    got, want = client.score_tagged(verify_texts, "<v>", "<+>", "<->"), hf.score_tagged(verify_texts, "<v>", "<+>",
                                                                                          "<->")
    assert [len(r) for r in got.p_valid] == [len(r) for r in want.p_valid] == [t.count("<v>") for t in verify_texts]
    for g, w in zip(got.p_valid, want.p_valid):
        assert g == pytest.approx(w, abs=TOL)
    prefixes = [t[:i + 3] for t in verify_texts for i in range(len(t)) if t.startswith("<v>", i)]
    # one top-logprobs request per tag; a verdict token outside the top k (an untrained verdict, as in the
    # ladder's recipe) is scored again by echoing prefix + token, which costs that text's tokens on top
    n_tok = lambda s: len(hf.tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    base = sum(n_tok(p) for p in prefixes)
    assert base <= got.usage.prefill <= base + sum(n_tok(p + c) for p in prefixes for c in ("<+>", "<->"))
    assert client.score_tagged(["no tag here"], "<v>", "<+>", "<->").p_valid == [[]]


# ---- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, param", [
    ("{not json", 400, None),
    ("[1, 2]", 400, None),
    ({"model": NAME, "prompt": 123}, 400, "prompt"),
    ({"model": NAME, "prompt": ["a", 1]}, 400, "prompt"),
    ({"model": NAME, "prompt": ""}, 400, "prompt"),
    ({"model": NAME, "prompt": "a", "n": 0}, 400, "n"),
    ({"model": NAME, "prompt": "a", "n": "2"}, 400, "n"),
    ({"model": NAME, "prompt": "a", "temperature": -1}, 400, "temperature"),
    ({"model": NAME, "prompt": "a", "top_p": 0}, 400, "top_p"),
    ({"model": NAME, "prompt": "a", "top_p": 1.5}, 400, "top_p"),
    ({"model": NAME, "prompt": "a", "max_tokens": -1}, 400, "max_tokens"),
    ({"model": NAME, "prompt": "a", "logprobs": 21}, 400, "logprobs"),
    ({"model": NAME, "prompt": "a", "echo": "yes"}, 400, "echo"),
    ({"model": NAME, "prompt": "a", "stream": True}, 400, "stream"),
    ({"model": NAME, "prompt": [10 ** 6]}, 400, "prompt"),
    ({"model": "gpt-9", "prompt": "a"}, 404, "model"),
])
def test_bad_requests_get_openai_errors_and_the_server_stays_up(srv, body, status, param):
    r = post(srv, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"] and err["param"] == param
    if param:
        assert param in err["message"] or param == "model"
    if status == 404:
        assert "gpt-9" in err["message"] and NAME in err["message"]
    assert requests.get(srv.base_url + "/models", timeout=10).status_code == 200


def test_unknown_route_is_an_openai_error(srv):
    r = requests.get(srv.url + "/v1/nothing", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["message"]


def test_api_key_is_required_when_set(hf, monkeypatch):
    with serve(hf, NAME, api_key="s3cret") as s:
        url = s.base_url + "/models"
        assert requests.get(url, timeout=10).status_code == 401
        r = requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = requests.post(s.base_url + "/completions", json={"model": NAME, "prompt": "a"}, timeout=10)
        assert r.status_code == 401
        assert requests.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=10).status_code == 200
        monkeypatch.setenv("VERINET_TEST_KEY", "s3cret")
        good = OpenAIBackend(s.base_url, NAME, api_key_env="VERINET_TEST_KEY")
        good.health()
        assert good.generate(["<bos>%1"], max_tokens=2).completions[0][0].tokens == 2
        monkeypatch.setenv("VERINET_TEST_KEY", "wrong")
        with pytest.raises(BackendError, match="HTTP 401.*API key"):
            OpenAIBackend(s.base_url, NAME, api_key_env="VERINET_TEST_KEY").health()


def test_missing_api_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("VERINET_NO_SUCH_KEY", raising=False)
    with pytest.raises(BackendError, match="VERINET_NO_SUCH_KEY"):
        OpenAIBackend("http://127.0.0.1:1/v1", NAME, api_key_env="VERINET_NO_SUCH_KEY")


def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    c = OpenAIBackend(url, NAME)  # lazy: no contact yet
    with pytest.raises(BackendError, match=rf"cannot connect to {url}/models.*server running"):
        c.health()
    with pytest.raises(BackendError, match=rf"cannot connect to {url}/completions"):
        c.score(["a"], ["b"])


def test_timeouts_and_http_errors_are_backend_errors(srv, prompts):
    slow = OpenAIBackend(srv.base_url, NAME, timeout_s=0.001)
    with pytest.raises(BackendError, match="no answer within"):
        slow.generate(prompts, max_tokens=200)
    other = OpenAIBackend(srv.url, "gpt-9")  # a bare host:port gets /v1
    assert other.base_url == srv.base_url
    with pytest.raises(BackendError, match="HTTP 404.*gpt-9"):
        other.generate(["a"], max_tokens=1)
    with pytest.raises(BackendError, match="http"):
        OpenAIBackend("127.0.0.1:8000", NAME)


def test_a_non_hf_backend_serves_text_but_refuses_logprobs(srv, prompts, hf):
    inner = OpenAIBackend(srv.base_url, NAME)
    with serve(inner, "proxy") as proxy:
        outer = OpenAIBackend(proxy.base_url, "proxy")
        got = outer.generate(prompts[:2], max_tokens=20)
        want = hf.generate(prompts[:2], max_tokens=20)
        assert got.texts == want.texts and got.usage == want.usage
        r = post(proxy, {"model": "proxy", "prompt": "a", "max_tokens": 1, "logprobs": 1})
        assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"
        with pytest.raises(BackendError, match="logprobs"):
            outer.score(["<bos>1"], ["<+>"])
    assert math.isfinite(hf.score(["<bos>1"], ["<+>"]).logprobs[0][0])
