"""The suite on real zoo checkpoints through the hf backend, in the zoo and the chat prompt format."""

import pytest
import torch

from verinet.backends import MemberSpec, make_backend
from verinet.backends.formats import ChatFormat, ZooFormat, chat_template_renderer
from verinet.faithfulness import evaluate_model
from verinet.orchestration import LocalMembers
from verinet.tasks import get_family

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def zoo():
    torch.set_num_threads(1)
    backend = make_backend(MemberSpec(name="xs", backend="hf", model="zoo-xs-s0"))
    yield backend
    backend.close()


def test_zoo_format(zoo):
    problems = get_family("logic").sample(3, seed=2, params={"hops": 2, "distractors": 1})
    r = evaluate_model(LocalMembers({"xs": zoo}), "xs", ZooFormat(), problems, n_boot=200)
    assert len(r.records) == 3
    for rec in r.records:
        n = rec["n_steps"]
        assert len(rec["early_answering"]["answers"]) == n + 1 and rec["early_answering"]["same"][-1]
        assert len(rec["adding_mistakes"]) == n and len(rec["paraphrasing"]) == n
        assert rec["filler"]["tokens"] == len("\n".join(rec["chain"]["steps"]))
    assert r.summary["chain_accuracy"]["n"] == 3
    assert r.summary["info"]["usage"]["prefill"] > 0


def test_chat_format_runs_every_test_on_a_real_backend(zoo):
    """A zoo model behind a chat template writes text outside any family's format: the free-text
    paths (model-written edits, forced answers after continuations) run for real."""
    zoo.tok.chat_template = TEMPLATE
    try:
        fmt = ChatFormat(chat_template_renderer(zoo.tok))
        problems = get_family("arith").sample(2, seed=3, params={"steps": 2, "distractors": 0})
        r = evaluate_model(LocalMembers({"xs": zoo}), "xs", fmt, problems, n_boot=200, answer_tokens=8)
    finally:
        zoo.tok.chat_template = None
    assert len(r.records) == 2
    for rec in r.records:
        assert set(rec) >= {"early_answering", "adding_mistakes", "paraphrasing", "filler", "no_chain"}
        assert all(row["how"] in ("family", "model", "none") for row in rec["adding_mistakes"])
        assert isinstance(rec["with_chain"]["answer"], str)


def test_job_sizes_come_from_the_checkpoint_when_the_engine_does_not_count():
    """vllm and openai backends report no parameter count; the job reads the checkpoint's config, as the
    comparison does, so their models sort by size and the size trend keeps them."""
    from types import SimpleNamespace

    from verinet.experiments.cost import checkpoint_parameters
    from verinet.faithfulness.job import _size

    silent = SimpleNamespace(info=lambda: {"backend": "vllm"})
    spec = MemberSpec(name="a", backend="vllm", model="zoo-s")
    assert _size(spec, silent) == int(checkpoint_parameters(spec)) > 0
    served = MemberSpec(name="b", backend="openai", model="only-a-served-name", base_url="http://127.0.0.1:9/v1")
    assert _size(served, silent) is None
    by_name = MemberSpec(name="c", backend="openai", model="zoo-s", base_url="http://127.0.0.1:9/v1")
    assert _size(by_name, silent) == _size(spec, silent)  # a server serving a zoo model under its name
    counted = SimpleNamespace(info=lambda: {"non_embedding_parameters": 1234})
    assert _size(spec, counted) == 1234
