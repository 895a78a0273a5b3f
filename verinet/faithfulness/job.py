"""The ``verinet faithfulness`` job: every model x every problem x the tests, resumable.

Output directory:

* ``config.yaml``   the resolved config (a rerun must match it, except n, n_boot, batch_size);
* ``records.jsonl`` one record per (model, problem), and per problem for the ensemble
  pipeline, appended as each batch completes; a rerun skips what is written;
* ``summary.json``  figures with 95% CIs per model (and for the pipeline), curves, sizes;
* ``curves.png``, ``bars.png``  Lanham-style plots.

Models run in this process (:class:`~verinet.orchestration.LocalMembers`); every
round of a batch is one batched ``generate`` per model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from verinet.backends import make_backend
from verinet.backends.base import Usage
from verinet.backends.formats import format_for
from verinet.faithfulness.config import FaithfulnessConfig, FaithfulnessConfigError, problems_for
from verinet.faithfulness.pipeline import run_pipeline
from verinet.faithfulness.plots import plot_bars, plot_curves
from verinet.faithfulness.runner import run_models
from verinet.results import ResultsLog
from verinet.faithfulness.summary import summarize, summarize_pipeline
from verinet.orchestration import LocalMembers
from verinet.schema import FORMAT_VERSION

Progress = Callable[[int, int], None]


def _check_resume(config: FaithfulnessConfig, out: Path) -> None:
    saved = out / "config.yaml"
    if saved.is_file():
        try:
            old = FaithfulnessConfig.model_validate(yaml.safe_load(saved.read_text(encoding="utf-8")))
        except Exception as e:  # an unreadable or outdated file: refuse rather than mix results
            raise FaithfulnessConfigError(f"{saved}: cannot read the config of the earlier run ({e}); "
                                          "use a fresh --out directory") from None
        differ = config.resumable_with(old)
        if differ:
            raise FaithfulnessConfigError(
                f"{out} holds a run with a different config ({', '.join(differ)} differ); its records cannot be "
                "mixed with this one's: use a fresh --out directory, or the earlier config")
    saved.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_job(config: FaithfulnessConfig, out_dir: str | Path | None = None, *,
            progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) the job; returns what it writes to summary.json."""
    out = Path(out_dir or config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(config, out)
    tasks = problems_for(config)
    batches = [chunk for _, ps in tasks for chunk in _chunks(ps, config.batch_size)]
    total = len(batches) * (2 if config.pipeline else 1)
    done = 0
    names = [m.name for m in config.models]
    usage: dict[str, Usage] = {}
    backends = {}
    try:
        for spec in config.models:
            backends[spec.name] = make_backend(spec)
        formats = {spec.name: format_for(spec, backends[spec.name]) for spec in config.models}
        sizes = {spec.name: _size(spec, backends[spec.name]) for spec in config.models}
        caller = LocalMembers(backends)
        with ResultsLog(out / "records.jsonl", key="id") as store:
            for chunk in batches:
                work = {m: [p for p in chunk if f"{m}/{p.id}" not in store] for m in names}
                work = {m: ps for m, ps in work.items() if ps}
                if work:
                    recs = run_models(caller, {m: formats[m] for m in work}, work, tests=config.tests,
                                      seed=config.seed, answer_tokens=config.answer_tokens, usage=usage,
                                      max_steps=config.max_steps)
                    for m in work:
                        for r in recs[m]:
                            store.append(r)
                done += 1
                if progress:
                    progress(done, total)
            if config.pipeline:
                pl = config.pipeline
                sub = LocalMembers({m: backends[m] for m in pl.members})
                for chunk in batches:
                    pending = [p for p in chunk if f"pipeline/{p.id}" not in store]
                    if pending:
                        for r in run_pipeline(sub, {m: formats[m] for m in pl.members}, pending, seed=config.seed,
                                              answer_tokens=config.answer_tokens, usage=usage,
                                              topology=pl.topology, k=pl.k, aggregation=pl.aggregation,
                                              selection=pl.selection, threshold=pl.threshold):
                            store.append(r)
                    done += 1
                    if progress:
                        progress(done, total)
            records = list(store.records.values())
    finally:
        for b in backends.values():
            b.close()
    summary = summarize_job(config, records, {p.id for _, ps in tasks for p in ps}, sizes, usage)
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    write_plots(summary, out)
    return summary


def _size(spec: Any, backend: Any) -> int | None:
    """Non-embedding parameters: what the backend counted (hf), else the checkpoint's config (vllm, openai
    serving a local or zoo model); None when neither says, and the model sorts last."""
    n = backend.info().get("non_embedding_parameters")
    if n is not None:
        return int(n)
    from verinet.experiments.cost import CostError, checkpoint_parameters

    if spec.backend == "openai":  # its model is a served name; a zoo or local model is found by its tokenizer
        local = spec.tokenizer_location()
        if not local:
            return None
        spec = spec.model_copy(update={"backend": "hf", "model": str(local)})
    try:
        return int(checkpoint_parameters(spec))
    except CostError:
        return None


def summarize_job(config: FaithfulnessConfig, records: list[dict[str, Any]], problem_ids: set[str],
                  sizes: dict[str, int | None], usage: dict[str, Usage]) -> dict[str, Any]:
    """Per-model summaries (smallest model first) and the pipeline's, from the records of this config's problems."""
    records = [r for r in records if r["problem_id"] in problem_ids]
    order = sorted(range(len(config.models)),
                   key=lambda i: (sizes.get(config.models[i].name) is None, sizes.get(config.models[i].name) or 0, i))
    models = {}
    for i in order:
        m = config.models[i].name
        s = summarize([r for r in records if r.get("kind") == "model" and r["member"] == m],
                      n_boot=config.n_boot, seed=config.seed)
        u = usage.get(m)
        s["info"]["usage_this_run"] = {"prefill": u.prefill, "decode": u.decode} if u else None
        models[m] = {"parameters": sizes.get(m), "model": config.models[i].model, "summary": s}
    pipeline = None
    if config.pipeline:
        pipeline = {"label": config.pipeline.label, "members": config.pipeline.members,
                    "summary": summarize_pipeline([r for r in records if r.get("kind") == "pipeline"],
                                                  n_boot=config.n_boot, seed=config.seed)}
    return {"format_version": FORMAT_VERSION, "name": config.name, "config": config.model_dump(mode="json"),
            "models": models, "pipeline": pipeline}


def write_plots(summary: dict[str, Any], out: Path) -> list[Path]:
    curves = {m: v["summary"] for m, v in summary["models"].items()}
    if summary.get("pipeline"):
        curves[summary["pipeline"]["label"]] = summary["pipeline"]["summary"]
    title = summary.get("name")
    return [plot_curves(curves, out / "curves.png", title=title),
            plot_bars({m: v["summary"] for m, v in summary["models"].items()}, out / "bars.png", title=title)]


__all__ = ["run_job", "summarize_job", "write_plots"]
