"""The `finetune-real` probe: LoRA training, merge and paired faithfulness, at smoke size on a zoo model
(the SmolLM2 run is marked smollm2: its CI step has the model)."""

import json

import pytest
import torch

from verinet.probes import get_probe, load_probe_config, run_probe
from verinet.probes.finetune_real import CONDITIONS, target_text, training_problems


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    probe = get_probe("finetune-real")
    cfg = probe.smoke(load_probe_config("configs/probes/finetune-real.yaml", probe.config, "finetune-real"))
    out = tmp_path_factory.mktemp("ftr")
    return cfg, out, run_probe(probe, cfg, out)


def test_lora_fine_tunings_change_the_weights_and_are_evaluated_paired(smoke_run):
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    cfg, out, summary = smoke_run
    base, _ = load_checkpoint(resolve("zoo-xs-s0"))
    w = "model.layers.0.self_attn.q_proj.weight"
    from transformers import AutoModelForCausalLM

    for cond in CONDITIONS:
        merged = AutoModelForCausalLM.from_pretrained(out / "models" / cond / "model")
        assert not torch.allclose(base.state_dict()[w], merged.state_dict()[w])  # the adapter was merged in
        assert torch.allclose(base.state_dict()["model.embed_tokens.weight"],
                              merged.state_dict()["model.embed_tokens.weight"])  # only LoRA targets moved
        info = json.loads((out / "models" / cond / "training.json").read_text())
        assert info["steps"] == 2 and len(info["losses"]) == 2
    assert set(summary["models"]) == {"base", *CONDITIONS}
    changes = summary["paired_changes"]["early_answering_aoc"]
    assert set(changes) == {"answer-only - base", "chain - base", "chain - answer-only"}
    measured = [r for r in (out / "faith" / "eval" / "records.jsonl").read_text().splitlines() if '"base"' in r]
    assert len(measured) == cfg.n and changes["chain - base"]["n"] >= 1  # paired over the problems both measured
    assert 0 < summary["accuracy_chance"] <= 1
    assert summary["models"]["base"]["accuracy"]["n"] == cfg.n
    assert (out / "report.md").read_text().count("|") > 20


def test_targets_and_training_problems():
    probe = get_probe("finetune-real")
    cfg = probe.smoke(load_probe_config("configs/probes/finetune-real.yaml", probe.config, "finetune-real"))
    from verinet.tasks import get_family

    evals = get_family("arith").sample(200, seed=0, params={"steps": 2, "distractors": 0})
    train = training_problems(cfg.model_copy(update={"train_task": cfg.train_task.model_copy(update={"n": 200})}),
                              evals)
    assert train and not {p.question for p in train} & {p.question for p in evals}
    p = evals[0]
    assert target_text(p, "answer-only", "chat", "<|im_end|>") == f"#### {p.answer}<|im_end|>"
    chain = target_text(p, "chain", "chat", "<|im_end|>")
    assert chain.startswith("Step 1: ") and chain.endswith(f"\n#### {p.answer}<|im_end|>")
    assert target_text(p, "chain", "zoo", "<eos>") == get_family("arith").gold_chain(p).text + "<eos>"


def test_rerun_resumes_without_retraining(smoke_run):
    cfg, out, summary = smoke_run
    stamp = (out / "models" / "chain" / "model" / "model.safetensors").stat().st_mtime_ns
    again = run_probe(get_probe("finetune-real"), cfg, out)
    assert (out / "models" / "chain" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert again["paired_changes"] == summary["paired_changes"]


def test_a_killed_lora_run_resumes_on_the_same_trajectory(tmp_path):
    from verinet.probes.finetune_real import lora_finetune

    probe = get_probe("finetune-real")
    cfg = probe.smoke(load_probe_config("configs/probes/finetune-real.yaml", probe.config, "finetune-real"))
    cfg = cfg.model_copy(update={"batch_size": 2, "checkpoint_every": 1})
    examples = [(f"<bos>%10;a{i};b2;c:a+b;?c\n", f"c:a+b>a{i}+b2>{(i + 2) % 10};c{(i + 2) % 10}\n#### "
                 f"{(i + 2) % 10}<eos>") for i in range(8)]

    def stop_at(step):
        def progress(done, total):
            if done == step:
                raise KeyboardInterrupt
        return progress

    with pytest.raises(KeyboardInterrupt):
        lora_finetune(cfg, examples, tmp_path / "killed", progress=stop_at(3))
    assert json.loads((tmp_path / "killed" / "train_state" / "state.json").read_text())["step"] == 2
    resumed = json.loads((lora_finetune(cfg, examples, tmp_path / "killed").parent / "training.json").read_text())
    whole = json.loads((lora_finetune(cfg, examples, tmp_path / "whole").parent / "training.json").read_text())
    assert resumed["steps"] == whole["steps"] == 4
    assert not (tmp_path / "killed" / "train_state").exists()  # a finished run keeps only its model
    assert resumed["losses"] == pytest.approx(whole["losses"], abs=1e-4)
