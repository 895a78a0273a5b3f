"""Model cards: what a zoo checkpoint is, how it was trained, how well it does (JSON + Markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import verinet
from verinet.schema import FORMAT_VERSION


def build_card(training: dict[str, Any], evaluation: dict[str, Any],
               repro: dict[str, Any] | None = None, *, name: str | None = None) -> dict[str, Any]:
    """The card. ``repro`` is a small evaluation that tests rerun to check the checkpoint. ``name``: the
    checkpoint's name, by default its last phase's config name (the phases keep their own names)."""
    from verinet.zoo.train import training_phases

    cfg = training["config"]
    phases = training_phases(training)
    return {
        "format_version": FORMAT_VERSION,
        "name": name or cfg["name"],
        "verinet_version": verinet.__version__,
        "architecture": {"type": "LlamaForCausalLM", "tokenizer": "character-level", **cfg["size"],
                         "head_dim": cfg["size"]["hidden"] // cfg["size"]["heads"], "tied_embeddings": True},
        "parameters": training["parameters"],
        "training": {
            "regime": " then ".join(_distinct_in_turn(_regime(ph["config"]["objectives"]) for ph in phases)),
            "objectives": cfg["objectives"], "tasks": cfg["tasks"], "seed": cfg["training"]["seed"],
            "steps": sum(ph["steps"] for ph in phases), "tokens": sum(ph["tokens"] for ph in phases),
            "wall_s": round(sum(ph["wall_s"] for ph in phases), 1),
            "phases": [{"name": ph["config"]["name"], "start": ph["start"], "steps": ph["steps"],
                        "tokens": ph["tokens"], "wall_s": ph["wall_s"], "device": ph.get("device"), "objectives": ph["config"]["objectives"],
                        "tasks": ph["config"]["tasks"], "lr": ph["config"]["training"]["lr"],
                        "batch_size": ph["config"]["training"]["batch_size"]} for ph in phases],
            "device": training["device"], "threads": training.get("threads"),
            "hyperparameters": cfg["training"], "loss_curve": training["losses"],
        },
        "evaluation": evaluation,
        "repro": repro,
    }


_OBJECTIVES = {"solve": "solve", "verify": "step verification (verdict after each step)", "force": "answer forcing",
               "answer": "answer only"}


def _regime(objectives: dict[str, float]) -> str:
    """'supervised: solve 85% + answer forcing 15%' from a config's objective weights (and its solve-only start)."""
    weights = {k: objectives.get(k, 0.0) for k in _OBJECTIVES}
    total = sum(weights.values()) or 1.0
    mix = " + ".join(f"{_OBJECTIVES[k]} {v / total:.0%}" for k, v in weights.items() if v > 0)
    first = objectives.get("solve_first", 0.0)
    return "supervised: " + (f"solve only for the first {first:.0%} of steps, then {mix}" if first else mix)


def _distinct_in_turn(items) -> list:
    """Consecutive repeats dropped: phases that continue the same regime read as one (not a regime with a
    solve-only start, which every phase repeats)."""
    out: list = []
    for x in items:
        if not out or out[-1] != x or "solve only" in x:
            out.append(x)
    return out


def describes_run(card: dict[str, Any], training: dict[str, Any]) -> bool:
    """Whether a card was written for this training record (the weights beside it), not for another run
    whose weights were since replaced: steps, tokens and wall time of all phases together."""
    from verinet.zoo.train import run_identity

    t = card.get("training", {})
    return (t.get("steps"), t.get("tokens"), t.get("wall_s")) == run_identity(training)


def write_card(out: Path, card: dict[str, Any]) -> None:
    (out / "card.json").write_text(json.dumps(card, indent=2))
    (out / "README.md").write_text(render_markdown(card))


def render_markdown(card: dict[str, Any]) -> str:
    a, p, t, e = card["architecture"], card["parameters"], card["training"], card["evaluation"]
    lines = [
        f"# {card['name']}",
        "",
        _intro(t),
        "",
        "| | |", "|---|---|",
        f"| parameters | {p['total']:,} total, {p['non_embedding']:,} non-embedding |",
        f"| architecture | d={a['hidden']}, layers={a['layers']}, heads={a['heads']} (head_dim {a['head_dim']}), "
        f"ff={a['intermediate']}, max_len={a['max_len']} |",
        f"| training | {t['steps']} steps, {t['tokens']:,} tokens, seed {t['seed']}, {t['wall_s']:.0f} s on {t['device']} |",
        f"| regime | {t['regime']} |",
        *([f"| phase {i + 1} | {ph['name']}: {ph['steps']} steps, {ph['tokens']:,} tokens, batch {ph['batch_size']}, "
           f"lr {ph['lr']:g}" + (f", from `{ph['start']}`" if ph.get("start") else "") + " |"
           for i, ph in enumerate(t.get("phases", []))] if len(t.get("phases", [])) > 1 else []),
        "",
        f"## Held-out evaluation ({e['n_per_slice']} problems per slice, greedy)",
        "",
        "| family | difficulty | accuracy | chain fully valid | step validity | verifier acc | verifier AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in e["slices"]:
        auroc = "n/a" if s["verifier_auroc"] is None else f"{s['verifier_auroc']:.3f}"
        lines.append(f"| {s['family']} | {json.dumps(s['params'])} | {s['accuracy']:.3f} | {s['chain_valid']:.3f} | "
                     f"{s['step_validity']:.3f} | {s['verifier_accuracy']:.3f} | {auroc} |")
    lines += _verifier_lines(e)
    lines += ["", "Load it with plain transformers:", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "model = AutoModelForCausalLM.from_pretrained(PATH)",
              "tok = AutoTokenizer.from_pretrained(PATH)", "```", ""]
    return "\n".join(lines)


_SKILLS = {"solve": "to solve problems step by step", "verify": "to verify steps (a `<+>`/`<->` verdict after "
           "each `<v>`)", "force": "to answer after a given chain", "answer": "to answer without a chain"}


def _intro(t: dict[str, Any]) -> str:
    """What the model was trained to do, from the objective weights of every phase."""
    phases = t.get("phases") or [{"objectives": t["objectives"]}]
    used = [k for k in _SKILLS if any(ph["objectives"].get(k, 0.0) > 0 for ph in phases)]
    skills = ", ".join(_SKILLS[k] for k in used[:-1]) + (" and " if len(used) > 1 else "") + _SKILLS[used[-1]]
    text = ("A verinet zoo model: a small Llama-architecture causal LM with a character vocabulary, trained from "
            f"scratch by verinet on its own task families {skills}.")
    if "verify" not in used:
        text += (" It was never trained to give verdicts, so its *verdict* rows below read an untrained token "
                 "(chance is expected); it verifies by likelihood.")
    return text


def auroc_cell(x: float | None, ci: list[float] | None) -> str:
    """'0.934 [0.901, 0.962]', or the value alone when no interval was recorded."""
    if x is None:
        return "n/a"
    return f"{x:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _verifier_lines(e: dict[str, Any]) -> list[str]:
    """The verifier tables: AUROC by verifier kind and error kind, and earliest-error F1 on real errors."""
    if "verifier_auroc_by_method" not in e:
        return []
    from verinet.schema import ERROR_KINDS

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    cis = e.get("verifier_auroc_ci_by_method", {})

    lines = ["", f"## Verifier quality ({e['n_per_slice']} held-out problems per family)", "",
             "AUROC of P(valid) at the first wrong line of each injected chain against every line of the gold "
             "chains (chance 0.5), with its 95% interval where recorded (bootstrap over problems). *likelihood*: the model as a solver scores each step by its least likely "
             "token (one teacher-forced pass); *verdict*: the trained `<+>`/`<->` token after each step"
             + ("; *prm*: the token-level process reward model fine-tuned from this checkpoint (`prm/`, "
                "`verinet zoo train-prm`; its `prm.json` says how), read at every token, a step scoring its least "
                "valid token" if "prm" in e["verifier_auroc_by_method"] else "") + "."
             + (f" The *prm* rows are not this checkpoint's own: {e['prm_source_mismatch']}."
                if e.get("prm_source_mismatch") else ""), "",
             "| family | slice | verifier | " + " | ".join(ERROR_KINDS) + " |",
             "|---|---|---|" + "---|" * len(ERROR_KINDS)]
    for method, fams in e["verifier_auroc_by_method"].items():
        for fam, kinds in fams.items():
            ci = cis.get(method, {}).get(fam, {})
            lines.append(f"| {fam} | {json.dumps(e['verifier_slices'][fam])} | {method} | "
                         + " | ".join(auroc_cell(kinds[k], ci.get(k)) for k in ERROR_KINDS) + " |")
    own = e.get("own_error_detail")
    if own:
        lines += ["", "Earliest-error F1 (ProcessBench) on chains the models " + ", ".join(own["writers"])
                  + " wrote greedily on held-out problems"
                  + (f" (new tokens: {own['max_new_tokens']})" if own.get("max_new_tokens") else "")
                  + ", labelled by the exact checker, balanced between correct and erroneous chains; the threshold "
                  "is fitted on half of the problems and F1 read on the other half, with a 95% bootstrap interval "
                  "over those problems; chance is a uniform guesser's F1.", "",
                  "| family | chains (test half) | verifier | acc_err | acc_corr | F1 [95% CI] | chance |",
                  "|---|---|---|---|---|---|---|"]
        for fam, methods in own["by_family"].items():
            for method, r in methods.items():
                interval = f" [{f(r['ci_low'])}, {f(r['ci_high'])}]" if r.get("ci_low") is not None else ""
                lines.append(f"| {fam} | {r.get('n_chains', 0)} | {method} | {f(r['acc_err'])} | "
                             f"{f(r['acc_corr'])} | {f(r['f1'])}{interval} | {f(r.get('chance'))} |")
    return lines
