"""The comparison job's driver.

Stage implemented so far: the labelled step-error set. For every problem it
builds the gold chain and one injected chain per error kind, and checks each
with the family's exact checker. That set is what verifiers are scored on
(earliest-error F1) once the model arms exist; the model arms, verification
graph and faithfulness stages plug into the same per-problem loop.

Results are appended to ``results.jsonl`` as each problem completes; a rerun
with the same config skips finished problems.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from verinet.experiments.config import CompareConfig, ConfigError
from verinet.experiments.results import ResultsLog
from verinet.schema import Problem
from verinet.tasks import InjectionUnsupported, TaskFamily, get_family


def iter_problems(config: CompareConfig) -> Iterator[tuple[TaskFamily, Problem]]:
    for i, spec in enumerate(config.tasks):
        fam = get_family(spec.family)
        if spec.family == "gsm8k":
            from verinet.tasks.gsm8k import load_gsm8k

            for p in load_gsm8k(spec.path, limit=spec.n):
                yield fam, p
        else:
            for p in fam.sample(spec.n, seed=config.seed * 1000 + i, params=spec.params):
                yield fam, p


def check_problem(fam: TaskFamily, problem: Problem, kinds: list[str], seed: int) -> dict[str, Any]:
    """Gold and injected chains of one problem, each scored by the exact checker."""
    gold = fam.check(problem, fam.gold_chain(problem).text)
    injected = []
    for kind in kinds:
        if kind not in fam.error_kinds:
            continue
        try:
            chain = fam.inject(problem, kind, seed=seed)
        except InjectionUnsupported:
            continue
        found = fam.check(problem, chain.text).first_error
        injected.append({"kind": kind, "label": chain.first_error, "found": found,
                         "n_steps": len(chain.steps)})
    return {
        "problem_id": problem.id,
        "family": problem.family,
        "n_steps": len(problem.gold_steps),
        "gold": {"first_error": gold.first_error, "answer_correct": gold.answer_correct,
                 "n_supported": gold.n_supported},
        "injected": injected,
    }


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    fams: dict[str, dict[str, Any]] = defaultdict(lambda: {"problems": 0, "gold_valid": 0, "kinds": {}})
    for r in records:
        f = fams[r["family"]]
        f["problems"] += 1
        f["gold_valid"] += r["gold"]["first_error"] == -1 and r["gold"]["answer_correct"]
        for inj in r["injected"]:
            k = f["kinds"].setdefault(inj["kind"], {"n": 0, "found_at_label": 0})
            k["n"] += 1
            k["found_at_label"] += inj["label"] == inj["found"]
    return {"problems": len(records), "families": dict(fams)}


def run_compare(config: CompareConfig, *, progress: Callable[[int, int], None] | None = None,
                out_dir: Path | None = None) -> Path:
    """Run the job, writing results as it goes; return the report path."""
    out = Path(out_dir or config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = config.model_dump(mode="json")
    cfg_path = out / "config.yaml"
    if cfg_path.exists():
        previous = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        if previous != {**resolved, "out_dir": previous.get("out_dir")}:
            raise ConfigError(
                f"{out} holds results of a different config ({cfg_path}); "
                "choose another --out, or delete that directory to start over"
            )
    else:
        cfg_path.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    work = list(iter_problems(config))
    t0 = time.perf_counter()
    with ResultsLog(out / "results.jsonl") as log:
        done = len([1 for _, p in work if p.id in log])
        if progress:
            progress(done, len(work))
        for fam, p in work:
            if p.id in log:
                continue
            log.append(check_problem(fam, p, list(config.inject), config.seed))
            done += 1
            if progress:
                progress(done, len(work))
        records = [log.records[p.id] for _, p in work]
    summary = summarize(records) | {"wall_s": round(time.perf_counter() - t0, 3), "config": resolved}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    report = out / "report.md"
    report.write_text(render_report(config, summary), encoding="utf-8")
    return report


def render_report(config: CompareConfig, summary: dict[str, Any]) -> str:
    lines = [
        f"# verinet report: {config.name}",
        "",
        f"{summary['problems']} problems. Stage run: the labelled step-error set "
        "(gold chains and injected errors, scored by the exact checker).",
        "",
        "| family | problems | gold chains fully valid | error kind | injected | first error found at label |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in summary["families"].items():
        for kind, k in sorted(f["kinds"].items()):
            lines.append(f"| {name} | {f['problems']} | {f['gold_valid']} | {kind} | {k['n']} | "
                         f"{k['found_at_label']} ({k['found_at_label'] / max(k['n'], 1):.1%}) |")
    lines.append("")
    return "\n".join(lines)
