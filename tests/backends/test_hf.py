"""The hf engine and the prompt formats, on a real zoo checkpoint."""

import math

import pytest
import torch

from verinet.backends import BackendError, EnsembleConfigError, MemberSpec, make_backend
from verinet.backends.formats import ChatFormat, ZooFormat, chat_template_renderer, make_format
from verinet.tasks import get_family
from verinet.zoo import formats
from verinet.zoo.registry import list_checkpoints

ZOO = list_checkpoints()[0][0]


@pytest.fixture(scope="module")
def hf():
    torch.set_num_threads(1)
    return make_backend(MemberSpec(name="m", backend="hf", model=ZOO, batch_size=4))


@pytest.fixture(scope="module")
def problems():
    return get_family("arith").sample(6, seed=4, params={"steps": 2})


def test_greedy_is_deterministic_batched_and_ordered(hf, problems):
    prompts = [formats.solve_prompt(p.question) for p in problems]
    a = hf.generate(prompts, max_tokens=60)
    one_by_one = [hf.generate([p], max_tokens=60).texts[0] for p in prompts]
    assert a.texts == one_by_one  # batching with left padding changes nothing
    assert a.usage.prefill == sum(len(hf.tok(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    assert a.usage.decode == sum(c[0].tokens for c in a.completions) > 0


def test_generation_stops_at_the_models_last_position(hf, problems):
    """A zoo model has 512 positions: a long prompt leaves fewer than max_tokens, and none is an error."""
    positions = hf.model.config.max_position_embeddings
    prompt = formats.solve_prompt(problems[0].question)
    pad = "x" * (positions - 10 - len(hf.tok(prompt, add_special_tokens=False)["input_ids"]))
    long = pad + prompt
    width = len(hf.tok(long, add_special_tokens=False)["input_ids"])
    assert width == positions - 10
    r = hf.generate([long], max_tokens=200)
    assert r.completions[0][0].tokens <= positions - width
    with pytest.raises(BackendError, match="no room to generate"):
        hf.generate(["x" * positions], max_tokens=5)


def test_the_checkpoints_own_decoding_defaults_are_left_out(hf, problems, monkeypatch):
    # a generation_config's repetition_penalty / top_k (Qwen2.5-Instruct ships both) would make transformers
    # decode differently from vLLM with explicit SamplingParams; the backend overrides them
    prompts = [formats.solve_prompt(p.question) for p in problems[:3]]
    plain = hf.generate(prompts, max_tokens=60).texts
    sampled = hf.generate(prompts, n=2, temperature=1.0, max_tokens=30, seed=3).texts
    monkeypatch.setattr(hf.model.generation_config, "repetition_penalty", 50.0)
    monkeypatch.setattr(hf.model.generation_config, "top_k", 1)
    assert hf.generate(prompts, max_tokens=60).texts == plain
    assert hf.generate(prompts, n=2, temperature=1.0, max_tokens=30, seed=3).texts == sampled


def test_sampling_is_seeded_and_stops(hf, problems):
    prompt = [formats.solve_prompt(problems[0].question)]
    a = hf.generate(prompt, n=3, temperature=1.0, max_tokens=30, seed=7, stop=["\n"])
    b = hf.generate(prompt, n=3, temperature=1.0, max_tokens=30, seed=7, stop=["\n"])
    assert [c.text for c in a.completions[0]] == [c.text for c in b.completions[0]]
    assert len(a.completions[0]) == 3 and all("\n" not in c.text for c in a.completions[0])


def test_a_stop_string_row_counts_no_padding_when_pad_is_eos(problems):
    """Many chat models pad with their eos token: a row that stopped on a string is followed by padding
    that reads like an eos, which must not count as a decoded token."""
    b = make_backend(MemberSpec(name="m", backend="hf", model=ZOO, batch_size=4))
    b.tok.pad_token = b.tok.eos_token  # its own backend: the shared fixture keeps the zoo's pad token
    assert b.tok.pad_token_id == b.tok.eos_token_id
    mixed = problems[:2] + get_family("logic").sample(2, seed=4, params={"hops": 2})  # first lines of unequal length
    prompts = [formats.solve_prompt(p.question) for p in mixed]
    batched = b.generate(prompts, max_tokens=60, stop=["\n"])
    assert len({c[0].tokens for c in batched.completions}) > 1
    alone = [b.generate([p], max_tokens=60, stop=["\n"]).completions[0][0] for p in prompts]
    assert [c[0].text for c in batched.completions] == [c.text for c in alone]
    assert [c[0].tokens for c in batched.completions] == [c.tokens for c in alone]
    assert all(c.finish_reason == "stop" for c in alone)


@pytest.mark.parametrize("kw, needle", [({"n": 0}, "n must"), ({"temperature": -1}, "temperature"),
                                        ({"top_p": 0}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
                                        ({"n": 2}, "n > 1 needs temperature")])
def test_bad_sampling_parameters_are_named(hf, kw, needle):
    with pytest.raises(ValueError, match=needle):
        hf.generate(["<bos>x"], **kw)


def test_score_reads_only_the_next_position_and_matches_a_full_forward(hf, problems):
    prompts = [formats.solve_prompt(p.question) for p in problems[:3]]
    got = hf.score(prompts, ["<+>", "<->", "x"]).logprobs
    for prompt, row in zip(prompts, got):
        ids = torch.tensor([hf.tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            full = torch.log_softmax(hf.model(ids).logits[0, -1].float(), -1)
        want = [full[hf.tok.convert_tokens_to_ids(t)].item() for t in ("<+>", "<->", "x")]
        assert row == pytest.approx(want, abs=1e-5)


def test_multi_token_candidates_sum_their_tokens(hf, problems):
    prompt = formats.solve_prompt(problems[0].question)
    both = hf.score([prompt], ["ab"]).logprobs[0][0]
    first = hf.score([prompt], ["a"]).logprobs[0][0]
    second = hf.score([prompt + "a"], ["b"]).logprobs[0][0]
    assert both == pytest.approx(first + second, abs=1e-4)


def test_tagged_one_pass_equals_per_step_prompting(hf, problems):
    fam = get_family("arith")
    p = problems[1]
    chain = fam.inject(p, "wrong_result")
    text = formats.verify_text(p.question, [s.text for s in chain.steps], chain.answer)
    tagged = hf.score_tagged([text], "<v>", "<+>", "<->")
    assert len(tagged.p_valid[0]) == len(chain.steps) + 1
    cuts = [i + len("<v>") for i in range(len(text)) if text.startswith("<v>", i)]
    per_step = hf.score([text[:c] for c in cuts], ["<+>", "<->"]).logprobs
    want = [1 / (1 + math.exp(b - a)) for a, b in per_step]
    assert tagged.p_valid[0] == pytest.approx(want, abs=1e-5)
    assert tagged.usage.prefill == len(hf.tok(text, add_special_tokens=False)["input_ids"])


def test_zoo_format_round_trip(hf, problems):
    fmt = make_format("zoo", hf)
    fam = get_family("arith")
    gold = fam.gold_chain(problems[0])
    steps, answer = fmt.parse(gold.text)
    assert fmt.chain_text(steps, answer) == gold.text
    p_valid, usage = fmt.verify(hf, problems[0].question, [(steps, answer), ([], None)])
    assert [len(x) for x in p_valid] == [len(steps) + 1, 0] and usage.prefill > 0
    assert all(0 <= x <= 1 for x in p_valid[0])


TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def test_chat_format_parses_and_scores_yes_no(hf):
    hf.tok.chat_template = TEMPLATE
    try:
        fmt = make_format("chat", hf)
        assert isinstance(fmt, ChatFormat)
        steps, answer = fmt.parse("Step 1: 3+4 = 7\nStep 2: 7*2 = 14\n#### 14\nextra")
        assert steps == ["3+4 = 7", "7*2 = 14"] and answer == "14"
        steps, answer = fmt.parse("First add: 3+4 = 7.\n\nThen double: 7*2 = 14.")
        assert steps == ["First add: 3+4 = 7.", "Then double: 7*2 = 14."] and answer == "14"
        assert fmt.parse("") == ([], None)
        p_valid, usage = fmt.verify(hf, "What is (3+4)*2?", [(["3+4 = 7", "7*2 = 14"], "14")])
        assert len(p_valid[0]) == 3 and all(0 < x < 1 for x in p_valid[0]) and usage.prefill > 0
        assert "Is Step 2 correct" in fmt.verify_prompt("q", ["a", "b"], 1)
    finally:
        hf.tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        chat_template_renderer(hf.tok)
    assert isinstance(make_format("zoo", hf), ZooFormat)
    with pytest.raises(ValueError, match="unknown prompt format"):
        make_format("xml", hf)


def test_member_errors_say_what_to_fix(tmp_path):
    with pytest.raises(EnsembleConfigError, match="not a directory, a zoo name"):
        make_backend(MemberSpec(name="m", backend="hf", model="./no/such/dir"))
    with pytest.raises(ValueError, match="needs base_url"):
        MemberSpec(name="m", backend="openai", model="x")
    with pytest.raises(ValueError, match="tensor_parallel_size > 1 needs backend vllm"):
        MemberSpec(name="m", backend="hf", model=ZOO, resources={"tensor_parallel_size": 2})
    with pytest.raises(ValueError, match="backend"):
        MemberSpec(name="m", backend="tgi", model=ZOO)
    with pytest.raises(ValueError, match="compile is for backend hf"):
        MemberSpec(name="m", backend="vllm", model=ZOO, compile=True)


def test_missing_vllm_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail, as on a machine without it
    with pytest.raises(BackendError, match=r"pip install 'verinet\[vllm\]'"):
        make_backend(MemberSpec(name="m", backend="vllm", model=ZOO))


@pytest.mark.slow
def test_compiled_member_scores_as_eager_and_decodes_eagerly(hf, problems, monkeypatch):
    """compile: true compiles at load (no compile inside a call afterwards), scores within float error
    of the eager member on every scoring path through the compiled forward, and decodes eagerly
    (the same greedy chains)."""
    from torch._dynamo.utils import counters

    real, calls = torch.compile, []

    def spy(fn, **kw):  # counts the calls that go through the compiled forward
        compiled = real(fn, **kw)
        return lambda *a, **k: calls.append(1) or compiled(*a, **k)

    monkeypatch.setattr(torch, "compile", spy)
    texts = [formats.verify_text(p.question, [s.text for s in get_family("arith").gold_chain(p).steps],
                                 p.answer) for p in problems]
    prompts = [formats.solve_prompt(p.question) for p in problems]
    before = counters["stats"]["unique_graphs"]
    comp = make_backend(MemberSpec(name="c", backend="hf", model=ZOO, batch_size=4, compile=True))
    assert comp.info()["compiled"] and not hf.info()["compiled"]
    compiles = counters["stats"]["unique_graphs"]
    assert compiles > before  # the warm-up compiled
    calls.clear()
    a, b = hf.token_logprobs(texts).tokens, comp.token_logprobs(texts).tokens
    assert [[t[:2] for t in r] for r in a] == [[t[:2] for t in r] for r in b]
    assert max(abs(x[2] - y[2]) for r, q in zip(a, b) for x, y in zip(r, q)) < 1e-4
    ta, tb = hf.score_tagged(texts, "<v>", "<+>", "<->"), comp.score_tagged(texts, "<v>", "<+>", "<->")
    assert max(abs(x - y) for r, q in zip(ta.p_valid, tb.p_valid) for x, y in zip(r, q)) < 1e-4
    sa, sb = hf.score(prompts, ["<+>", "<->"]), comp.score(prompts, ["<+>", "<->"])
    assert max(abs(x - y) for r, q in zip(sa.logprobs, sb.logprobs) for x, y in zip(r, q)) < 1e-4
    assert len(calls) >= 3  # each scoring path went through the compiled forward
    calls.clear()
    assert hf.generate(prompts, max_tokens=60).texts == comp.generate(prompts, max_tokens=60).texts
    assert calls == []  # decoding stayed eager
    assert counters["stats"]["unique_graphs"] == compiles  # the warm-up covered every call above


def test_a_failed_compile_says_how_to_fix(monkeypatch):
    def broken(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(BackendError, match=r"torch.compile failed \(RuntimeError: InvalidCxxCompiler.*drop compile: true"):
        make_backend(MemberSpec(name="c", backend="hf", model=ZOO, compile=True))
