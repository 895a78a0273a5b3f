"""Process reward models as members (verifier ``prm``): a zoo checkpoint exported as a
token-classification PRM scores every step at ``<v>`` in one pass, equal to its verdict kind;
in an ensemble it verifies the solvers' chains and writes none itself."""

import json

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from verinet.backends import BackendError, MemberSpec, make_backend
from verinet.backends.formats import ChatFormat, format_for
from verinet.cli import app
from verinet.orchestration.local import LocalMembers
from verinet.orchestration.verify import run_verification
from verinet.tasks import get_family
from verinet.zoo.config import ZooError
from verinet.zoo.prm import export_prm
from verinet.zoo.registry import list_checkpoints

ZOO = list_checkpoints()[0][0]  # the smallest: quick to export and run


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return export_prm(ZOO, tmp_path_factory.mktemp("prm") / ZOO)


@pytest.fixture(scope="module")
def items():
    fam = get_family("arith")
    out = []
    for i, p in enumerate(fam.sample(6, seed=3, params={"steps": 3, "distractors": 0})):
        c = fam.gold_chain(p) if i % 2 else fam.inject(p, "wrong_result", seed=i)
        out.append((p.question, [s.text for s in c.steps], c.answer))
    return out


def _scores(spec, items):
    backend = make_backend(spec)
    call = format_for(spec, backend).verify_call(items)
    assert call.method == ("score_steps" if spec.verifier == "prm" else "score_tagged")
    return call.decode(getattr(backend, call.method)(*call.args, **call.kwargs))


def test_the_exported_prm_scores_every_line_as_the_verdict_kind_does(prm_dir, items):
    meta = json.loads((prm_dir / "prm.json").read_text())
    assert meta["step_tag"] == "<v>" and meta["valid_label"] == 1 and meta["source"] == ZOO
    cfg = json.loads((prm_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForTokenClassification"] and len(cfg["id2label"]) == 2
    prm = _scores(MemberSpec(name="p", backend="hf", model=str(prm_dir), verifier="prm"), items)
    verdict = _scores(MemberSpec(name="v", backend="hf", model=ZOO, verifier="verdict"), items)
    assert [len(r) for r in prm] == [len(s) + 1 for _, s, _ in items]  # every step and the answer line
    assert max(abs(a - b) for ra, rb in zip(prm, verdict) for a, b in zip(ra, rb)) < 1e-5


def test_a_prm_member_verifies_but_does_not_solve(prm_dir):
    specs = [MemberSpec(name="solver", backend="hf", model=ZOO),
             MemberSpec(name="prm", backend="hf", model=str(prm_dir), verifier="prm")]
    backends = {s.name: make_backend(s) for s in specs}
    formats = {s.name: format_for(s, backends[s.name]) for s in specs}
    assert [f.can_solve for f in formats.values()] == [True, False]
    problems = get_family("arith").sample(3, seed=5, params={"steps": 2})
    run = run_verification(LocalMembers(backends), formats, problems, topology="all_pairs", threshold=0.5)
    assert list(run.chains) == ["solver"]  # the PRM wrote nothing ...
    by = {v.verifier for v in run.verdicts}
    assert by == {"prm"}  # ... and verified the solver's chains (a member does not verify itself)
    n_lines = sum(len(c.steps) + (c.answer is not None) for c in run.chains["solver"])
    assert sum(v.verifier == "prm" for v in run.verdicts) == n_lines
    assert backends["prm"].info()["prm_step_tag"] == "<v>"


def test_the_cli_exports_and_refuses_to_overwrite_its_source(tmp_path):
    runner = CliRunner(env={"COLUMNS": "200"})
    res = runner.invoke(app, ["zoo", "prm", ZOO, "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p" / "model.safetensors").is_file()
    with pytest.raises(ZooError, match="new or empty directory"):
        export_prm(ZOO, tmp_path / "p")  # not over another checkpoint either
    with pytest.raises(ZooError, match="new or empty directory"):
        export_prm(ZOO, list_checkpoints()[0][1])
    res = runner.invoke(app, ["zoo", "prm", "no-such-model", "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "no zoo checkpoint" in res.output


@pytest.mark.parametrize("fields, needle", [
    ({"backend": "openai", "base_url": "http://127.0.0.1:1/v1"}, "needs backend hf or vllm"),
    ({"format": "chat"}, "needs step_tag"),
])
def test_prm_specs_that_cannot_work_are_refused(fields, needle):
    with pytest.raises(ValidationError, match=needle):
        MemberSpec(name="p", model=ZOO, verifier="prm", **{"backend": "hf", **fields})


def test_a_step_tag_without_prm_is_refused():
    with pytest.raises(ValidationError, match="only for verifier prm"):
        MemberSpec(name="p", backend="hf", model=ZOO, step_tag="<v>")


def test_a_model_without_a_classification_head_or_the_tag_is_a_clear_error(prm_dir):
    bad_tag = MemberSpec(name="p", backend="hf", model=str(prm_dir), format="chat", verifier="prm",
                         step_tag="<extra_0>")
    with pytest.raises(BackendError, match="is 9 tokens"):
        make_backend(bad_tag)
    bad_label = MemberSpec(name="p", backend="hf", model=str(prm_dir), verifier="prm", valid_label=2)
    with pytest.raises(BackendError, match="not one of the head's 2 classes"):
        make_backend(bad_label)
    plain = make_backend(MemberSpec(name="m", backend="hf", model=ZOO))
    with pytest.raises(BackendError, match="not loaded as a process reward model"):
        plain.score_steps(["1<v>"])


def test_the_chat_layout_is_qwen_math_prms():
    seen = []

    def render(messages):
        seen.append(messages)
        return "|".join(f"{m['role']}:{m['content']}" for m in messages)

    fmt = ChatFormat(render, "prm", "<extra_0>", render_chat=render)
    text = fmt.prm_text("What is 2+3?", ["2+3 = 5."], "5")
    assert seen[-1][0]["content"] == "Please reason step by step, and put your final answer within \\boxed{}."
    assert seen[-1][2] == {"role": "assistant", "content": "2+3 = 5.<extra_0>The final answer is \\boxed{5}.<extra_0>"}
    assert text.count("<extra_0>") == 2
    with pytest.raises(ValueError, match="needs step_tag"):
        ChatFormat(render, "prm")


def test_the_endpoint_scores_with_a_prm_member(prm_dir, items):
    from verinet.serve.members import Scorer

    prm = Scorer(MemberSpec(name="p", backend="hf", model=str(prm_dir), verifier="prm")).score(items)
    verdict = Scorer(MemberSpec(name="v", backend="hf", model=ZOO, verifier="verdict")).score(items)
    assert max(abs(a - b) for ra, rb in zip(prm, verdict) for a, b in zip(ra, rb)) < 1e-5
