"""The `length` probe: its chain renderings are exact, its training examples, and the probe end to end."""

import json
import re

import pytest

from verinet.probes import ProbeError, arith_chains as ac, get_probe, load_probe_config, run_probe
from verinet.tasks import get_family
from verinet.tasks.arith import OPS
from verinet.zoo.config import ZooConfig
from verinet.zoo.data import IGNORE
from verinet.zoo.tokenizer import build_tokenizer

FAM = get_family("arith")
PROBS = [FAM.generate(s, {"steps": 1 + s % 8, "distractors": s % 2, "branching": 0.0 if s % 3 else 0.5})
         for s in range(48)]


def _lines(p, rendering, instruct=False):
    text = ac.chain_text(p, rendering, instruct=instruct)
    *lines, answer = text.split("\n")
    assert answer == f"#### {ac.words(p.answer) if instruct else p.answer}"
    return lines


@pytest.mark.parametrize("p", PROBS, ids=lambda p: p.id)
def test_every_rendering_computes_the_true_values(p):
    values = ac.true_values(p)
    mod, defs, needed = p.meta["modulus"], p.meta["defs"], p.meta["solution"]
    one = ac.chain_text(p, ac.Rendering("one"))
    assert one == FAM.gold_chain(p).text and FAM.check(p, one).n_valid == len(needed)
    assert ac.to_canonical(ac.chain_text(p, ac.Rendering("tool"))) == one
    assert [ln.removesuffix(" " + "." * 5) for ln in _lines(p, ac.Rendering("padded", pad=5))] == _lines(
        p, ac.Rendering("one"))
    spelled = _lines(p, ac.Rendering("spelled"))
    assert len(spelled) == 4 * len(needed)
    for j, name in enumerate(needed):  # definition, operand, operand, result: each exact
        a, op, b = defs[name]
        assert spelled[4 * j:4 * j + 4] == [f"{name}:{a}{op}{b}", f"{a}{values[a]}", f"{b}{values[b]}",
                                            f"{values[a]}{op}{values[b]}>{values[name]};{name}{values[name]}"]
    for group in (2, 3):  # every line's expression evaluates to its result, from true operand values
        lines = _lines(p, ac.Rendering("multi", group=group))
        assert len(lines) == -(-len(needed) // group)
        for line in lines:
            m = re.fullmatch(r"([a-z]):([^>]+)>([^>]+)>(\d+);([a-z])(\d+)", line)
            name, expr, with_values, res, name2, res2 = m.groups()
            assert name == name2 and res == res2 == str(values[name])
            assert re.sub(r"([a-z])\d+", r"\1", with_values) == expr
            assert all(values[v] == int(x) for v, x in re.findall(r"([a-z])(\d+)", with_values))
            assert eval(re.sub(r"[a-z]", "", with_values), {"__builtins__": {}}) % mod == values[name]
        assert lines[-1].startswith(f"{p.meta['query']}:")
    for r in ac.KINDS:
        text = ac.chain_text(p, ac.Rendering(r), instruct=True)
        assert ac.read_answer(text) == (p.answer, True) and ac.read_statements(text)[-1] == (p.meta["query"],
                                                                                                int(p.answer))


def test_tool_results_and_answers_read_back():
    assert ac.tool_result("x:i-t>i3-t7", 10) == "6" and ac.tool_result("x:i*t>i03*t7", 10) == "1"
    assert ac.tool_result("x:i*t>i3*", 10) is None
    assert ac.read_answer("a\n#### 12") == ("12", False) and ac.read_answer("#### one-two") == ("12", True)
    assert ac.read_answer("#### twelve") == (None, False) and ac.read_answer("x:1") == (None, False)
    assert OPS["-"](3, 7) % 10 == int(ac.tool_result("x:i-t>i3-t7", 10))


def test_instructed_examples_carry_the_rule_and_the_words():
    tok = build_tokenizer()
    cfg = ZooConfig.model_validate({"name": "t", "size": {"hidden": 32, "layers": 1, "heads": 1, "intermediate": 64},
                                    "tasks": [{"family": "arith", "params": [{"steps": 2, "distractors": 0}]}],
                                    "training": {"steps": 1, "batch_size": 64}})
    variants = [ac.Variant(ac.Rendering("spelled"), "&0;"), ac.Variant(ac.Rendering("multi"), "&1;")]
    b = ac.RenderedChainBuilder(cfg, tok, variants=variants, instruct=0.3)
    batch = b.batch(0)
    assert [e.ids for e in batch] == [e.ids for e in b.batch(0)]
    told = 0
    for e in batch:
        text = tok.decode(e.ids)
        trained = tok.decode([t for t in e.targets if t != IGNORE], skip_special_tokens=True)
        tag = text[len(tok.bos_token):][:3]
        instructed = text[len(tok.bos_token) + 3:].startswith(ac.INSTRUCTION)
        told += instructed
        spelled = text.count("\n") > 2 * 1 + 1  # spelled: four lines an operation; multi: one line for both
        assert tag == ("&0;" if spelled else "&1;")
        assert ac.read_answer(trained)[1] == instructed  # words exactly when asked for
        assert e.targets[-2] == tok.eos_token_id and text.endswith(tok.eos_token)
        assert trained == text.split("\n", 1)[1].removesuffix(tok.eos_token)  # the whole chain, not the prompt
    assert 0.1 < told / len(batch) < 0.55


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    probe = get_probe("length")
    cfg = probe.smoke(load_probe_config("configs/probes/length.yaml", probe.config, "length"))
    out = tmp_path_factory.mktemp("length")
    return probe, cfg, out, run_probe(probe, cfg, out)


def test_length_smoke_reports_every_rendering_size_and_difficulty(smoke_run):
    probe, cfg, out, summary = smoke_run
    cells = {(c["size"], c["rendering"], c["steps"]): c for c in summary["cells"]}
    assert set(cells) == {(s, r, L) for s in cfg.sizes for r in cfg.renderings for L in cfg.eval_steps}
    for c in cells.values():
        for key in ("accuracy", "adherence", "accuracy_instructed", "words_unasked"):
            assert set(c[key]) == {"value", "ci_low", "ci_high", "n"} and c[key]["n"] == cfg.n
    for L in cfg.eval_steps:  # the renderings' lengths differ as designed
        chars = {r: cells[("a", r, L)]["gold_chars"] for r in cfg.renderings}
        assert chars["multi"] <= chars["one"] < chars["spelled"] < chars["padded"]
    for key, o in summary["optimum"].items():
        assert o["best"] in cfg.renderings and o["best"] in o["ties"] and set(o["best_minus"]) | {o["best"]} == set(
            cfg.renderings)
    assert set(summary["adherence_slope_per_100_chars"]["a"]) == {"pooled", *map(str, cfg.eval_steps)}
    assert summary["findings"] and all(isinstance(f, str) and f for f in summary["findings"])
    for f in ("summary.json", "report.md", "report.html", "length.png"):
        assert (out / f).is_file()
    recs = [json.loads(line) for line in (out / "records" / "a-spelled.jsonl").read_text().splitlines()]
    assert len(recs) == 2 * cfg.n * len(cfg.eval_steps) and sum(r["instruct"] for r in recs) == len(recs) // 2


def test_length_rerun_resumes_without_retraining_or_reevaluating(smoke_run):
    probe, cfg, out, summary = smoke_run
    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("models/*/model.safetensors"), *out.glob("records/*")]}
    again = run_probe(probe, cfg, out)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["cells"] == summary["cells"]


@pytest.mark.parametrize("change, field", [({"renderings": {"one": {"kind": "tool"}}}, "renderings"),
                                           ({"renderings": {"one": {"kind": "one"}}}, "renderings"),
                                           ({"instruction_share": 1.5}, "instruction_share"),
                                           ({"knobs": {"distractors": 30}}, "knobs|distractors")])
def test_bad_length_config_names_the_field(tmp_path, change, field):
    import yaml

    base = yaml.safe_load(open("configs/probes/length.yaml"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**base, **change}))
    with pytest.raises(ProbeError, match=field):
        load_probe_config(tmp_path / "c.yaml", get_probe("length").config, "length")
