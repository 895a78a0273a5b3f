"""The `tools` probe: its calculator runtime, its training examples, and the probe end to end at smoke size."""

import json
import re

import pytest
import torch

from verinet.probes import ProbeError, arith_chains as ac, get_probe, load_probe_config, run_probe
from verinet.probes.tools import MODES, TAGS, corruption, plan
from verinet.tasks import get_family
from verinet.zoo.config import ZooConfig
from verinet.zoo.data import IGNORE
from verinet.zoo.tokenizer import build_tokenizer

FAM = get_family("arith")


class FaithfulSolver(torch.nn.Module):
    """A scripted stand-in for a trained model: it writes the chain of the problem in its prompt in the
    ``tool`` or ``text`` rendering, reading every value from the text it has seen, so whatever the
    runtime writes is what it copies on (a perfectly faithful solver). Where the runtime should have
    written a result and did not, it writes ``X``."""

    def __init__(self, tok, mode: str) -> None:
        super().__init__()
        self.tok, self.mode = tok, mode
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.strings = [tok.decode([i], skip_special_tokens=False) for i in range(len(tok))]

    def next_text(self, text: str) -> str:
        question, _, gen = text.removeprefix(self.tok.bos_token).partition("\n")
        parts = question.split(";")
        mod = int(parts[0][1:])
        values = {p[0]: int(p[1:]) for p in parts if re.fullmatch(r"[a-z]\d+", p)}
        defs = [re.fullmatch(r"([a-z]):([a-z])([-+*])([a-z])", p).groups() for p in parts if ":" in p]
        query = parts[-1][1:]
        values.update({n: int(v) for n, v in ac.read_statements(gen)})
        *done, cur = gen.split("\n")
        if len(done) == len(defs):
            line = f"#### {values[query]}"
            return line[len(cur)] if len(cur) < len(line) else self.tok.eos_token
        name, a, op, b = defs[len(done)]
        prefix = f"{name}:{a}{op}{b}>{a}{values[a]}{op}{b}{values[b]}" + (ac.TOOL if self.mode == "tool" else ">")
        if len(cur) < len(prefix):
            return prefix[len(cur)]
        rest = cur[len(prefix):]
        if not rest:  # the result: the runtime's to write with a tool, the model's own in text
            return "X" if self.mode == "tool" else str(ac.tool_result(prefix[:-1], mod))
        result = rest.split(";")[0]
        if not result.isdigit():
            return self.tok.eos_token
        return (prefix + result + f";{name}{result}\n")[len(cur)]

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True):
        seqs = input_ids if cache is None else torch.cat([cache, input_ids], 1)
        logits = torch.zeros(seqs.shape[0], 1, len(self.tok))  # decode reads the last position only
        for b, row in enumerate(seqs.tolist()):
            text = "".join(self.strings[i] for i in row if i != self.tok.pad_token_id)
            logits[b, -1, self.tok.convert_tokens_to_ids(self.next_text(text))] = 1.0
        return {"logits": logits, "cache": seqs}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def probs():
    return [FAM.generate(s, {"steps": 1 + s % 8, "distractors": 0}) for s in range(16)]


def test_runtime_fills_every_tool_result_exactly_in_a_batch_of_mixed_lengths(tok, probs):
    got = ac.decode(FaithfulSolver(tok, "tool"), tok, [ac.prompt(p) for p in probs], max_new_tokens=200,
                    hooks=[ac.calculator(10) for _ in probs], batch_size=7)
    for p, d in zip(probs, got):
        assert d.finished and d.text == ac.chain_text(p, MODES["tool"]), p.id
        assert [v for _, v in d.forced] == [s.value for s in p.gold_steps]  # one call per step, exact results
        assert FAM.check(p, ac.to_canonical(d.text)).n_valid == len(p.gold_steps)


def test_without_the_runtime_the_tool_chain_breaks(tok, probs):
    got = ac.decode(FaithfulSolver(tok, "tool"), tok, [ac.prompt(probs[3])], max_new_tokens=40)
    assert not got[0].forced and "@X" in got[0].text


@pytest.mark.parametrize("mode", ["tool", "text"])
def test_a_corrupted_result_reaches_the_answer_of_a_faithful_solver(tok, probs, mode):
    items = [(p, c) for p in probs if (c := corruption(p, 0))]
    hooks = [ac.calculator(10, corrupt_line=k, offset=o, trigger=mode) for _, (k, o, _) in items]
    got = ac.decode(FaithfulSolver(tok, mode), tok, [ac.prompt(p) for p, _ in items], max_new_tokens=200, hooks=hooks)
    assert len(items) >= 10
    for (p, (k, o, propagated)), d in zip(items, got):
        assert propagated != p.answer
        assert len(d.forced) == (len(p.gold_steps) if mode == "tool" else 1)
        at, value = next((at, v) for at, v in d.forced if d.text[:at].count("\n") == k)
        assert int(value) == (int(p.gold_steps[k].value) + o) % 10
        assert ac.read_answer(d.text) == (propagated, False)


def test_clean_text_decoding_matches_the_canonical_chain(tok, probs):
    got = ac.decode(FaithfulSolver(tok, "text"), tok, [ac.prompt(p) for p in probs], max_new_tokens=200)
    assert [d.text for d in got] == [FAM.gold_chain(p).text for p in probs]
    assert not any(d.forced for d in got)


def test_tool_results_are_read_but_never_trained(tok, probs):
    cfg = ZooConfig.model_validate({"name": "t", "size": {"hidden": 32, "layers": 1, "heads": 1, "intermediate": 64},
                                    "tasks": [{"family": "arith", "params": [{"steps": 3}]}],
                                    "training": {"steps": 1}})
    b = ac.RenderedChainBuilder(cfg, tok, variants=[ac.Variant(MODES["tool"])])
    for p in probs:
        ex = b.example(p, b.variants[0])
        text = [tok.decode([i]) for i in ex.ids]
        tools = [j for j, t in enumerate(text) if t == ac.TOOL]
        assert len(tools) == len(p.gold_steps)
        for j, step in zip(tools, p.gold_steps):
            assert text[j + 1] == step.value and ex.targets[j] == IGNORE  # the result: an input only
            assert ex.targets[j - 1] == ex.ids[j] and ex.targets[j + 1] == ex.ids[j + 2]  # the marker and ';' trained
        start = text.index("\n") + 1
        trained = [ex.targets[j - 1] != IGNORE for j in range(start, len(ex.ids))]
        assert sum(trained) == len(ex.ids) - start - len(tools)
    assert [e.ids for e in b.batch(3)] == [e.ids for e in b.batch(3)]  # a pure function of the step


def test_corruption_changes_the_answer_or_is_refused():
    for s in range(40):
        p = FAM.generate(s, {"steps": 1 + s % 5, "distractors": 0})
        c = corruption(p, 0)
        if c is None:  # no wrong result changes the answer (e.g. a later step multiplies by 0)
            assert all(ac.true_values(p, {n: o})[p.meta["query"]] == int(p.answer)
                       for n in p.meta["solution"] for o in range(1, 10))
        else:
            k, o, propagated = c
            assert propagated == str(ac.true_values(p, {p.meta["solution"][k]: o})[p.meta["query"]]) != p.answer


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    probe = get_probe("tools")
    cfg = probe.smoke(load_probe_config("configs/probes/tools.yaml", probe.config, "tools"))
    out = tmp_path_factory.mktemp("tools")
    return probe, cfg, out, run_probe(probe, cfg, out)


def test_tools_smoke_reports_accuracy_by_length_for_both_modes(smoke_run):
    probe, cfg, out, summary = smoke_run
    assert {(m["size"], m["mode"]) for m in summary["models"]} == {(s, m) for s in cfg.sizes for m in MODES}
    for m in summary["models"]:
        assert list(m["accuracy"]) == [str(L) for L in cfg.eval_steps]
        for f in m["accuracy"].values():
            assert set(f) == {"value", "ci_low", "ci_high", "n"} and f["n"] == cfg.n
            assert f["ci_low"] <= f["value"] <= f["ci_high"]
        assert m["cliff"] is None or m["cliff"] in cfg.eval_steps
    assert {m["model"] for m in summary["models"]} == ({"a-shared"} if cfg.shared else {"a-text", "a-tool"})
    assert set(summary["accuracy_chance"]) == {str(L) for L in cfg.eval_steps}
    assert all(0 < c <= 1 for c in summary["accuracy_chance"].values())
    assert set(summary["faithfulness"]) == {f"{s}-{m}" for s in cfg.sizes for m in MODES}
    assert summary["findings"] and all(isinstance(f, str) and f for f in summary["findings"])
    for f in ("summary.json", "report.md", "report.html", "tools.png", "config.yaml"):
        assert (out / f).is_file()
    recs = [json.loads(line) for line in (out / "records" / "a-tool-solve.jsonl").read_text().splitlines()]
    assert len(recs) == cfg.n * len(cfg.eval_steps)
    assert all(r["tool_calls"] == r["chain"].count(ac.TOOL) for r in recs)  # the runtime answered every call
    text = [json.loads(line) for line in (out / "records" / "a-text-solve.jsonl").read_text().splitlines()]
    assert not any(r["tool_calls"] for r in text)


def test_one_shared_model_or_one_per_mode():
    variants = {m: ac.Variant(r, TAGS[m]) for m, r in MODES.items()}
    assert plan(variants, True) == {"text": ("shared", variants["text"]), "tool": ("shared", variants["tool"])}
    assert plan(variants, False) == {"text": ("text", ac.Variant(MODES["text"])), "tool": ("tool", ac.Variant(MODES["tool"]))}


def test_tools_rerun_resumes_without_retraining_or_reevaluating(smoke_run):
    probe, cfg, out, summary = smoke_run
    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("models/*/model.safetensors"), *out.glob("records/*")]}
    again = run_probe(probe, cfg, out)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["models"] == summary["models"] and again["faithfulness"] == summary["faithfulness"]


@pytest.mark.parametrize("change, field", [({"sizes": {"Big": {"size": {"hidden": 32, "layers": 1, "heads": 1,
                                                                         "intermediate": 64}, "steps": 1}}}, "sizes"),
                                           ({"knobs": {"steps": 3}}, "steps"),
                                           ({"faith_steps": [13]}, "faith_steps"),
                                           ({"eval_steps": [0, 3]}, "eval_steps")])
def test_bad_tools_config_names_the_field(tmp_path, change, field):
    import yaml

    base = yaml.safe_load(open("configs/probes/tools.yaml"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**base, **change}))
    with pytest.raises(ProbeError, match=field):
        load_probe_config(tmp_path / "c.yaml", get_probe("tools").config, "tools")
