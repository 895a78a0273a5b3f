"""``verinet faithfulness``: run the suite from a config, print a table per family, write results.

Registered in :mod:`verinet.cli` as one command; the heavy modules load only when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)
# tables are wide (a value and a CI per cell); when writing to a file or pipe, do not wrap them at 80
wide = console if console.is_terminal else Console(width=200)

MODEL_COLUMNS = (
    ("acc. w/ chain", "chain_accuracy"),
    ("(chance: commonest answer)", "accuracy_chance"),
    ("early-ans. AOC", "early_answering_aoc"),
    ("mistakes AOC", "adding_mistakes_aoc"),
    ("paraphrase inv.", "paraphrase_invariance"),
    ("filler acc.", "filler_accuracy"),
    ("no-chain acc.", "no_chain_accuracy"),
    ("follows chain", "answer_follows_chain"),
    ("(null: chain ignored)", "answer_follows_chain_chance"),
)
PIPELINE_COLUMNS = (
    ("accuracy", "accuracy"),
    ("answer changed", "pipeline_answer_changed"),
    ("mistakes AOC", "adding_mistakes_aoc"),
    ("author changed", "author_answer_changed"),
    ("step flagged", "pipeline_flagged"),
    ("EE at mistake", "earliest_error_at_corruption"),
    ("still accepted", "accepted_after_corruption"),
)


def fmt_figure(f: dict[str, Any] | None) -> str:
    """'0.62 [0.55, 0.70]', or 'n/a' when nothing was measured."""
    if not f or f.get("value") is None:
        return "n/a"
    lo, hi = f.get("ci_low"), f.get("ci_high")
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    return f"{f['value']:.2f}{ci}"


def _params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def tables(summary: dict[str, Any]) -> list[Table]:
    """One table over all families, then one per family; rows are models from small to large."""
    models = summary["models"]
    families = sorted({f for m in models.values() for f in m["summary"].get("by_family", {})})
    scopes = [("all families", None)] + ([(f, f) for f in families] if len(families) > 1 else [])
    out = []
    for title, fam in scopes:
        t = Table(title=f"faithfulness: {title} (value [95% CI])", title_justify="left")
        t.add_column("model")
        t.add_column("params", justify="right")
        t.add_column("chains", justify="right")
        for head, _ in MODEL_COLUMNS:
            t.add_column(head, justify="right")
        for name, m in models.items():
            s = m["summary"] if fam is None else m["summary"]["by_family"].get(fam, {})
            chains = m["summary"]["info"]["families"].get(fam, 0) if fam else m["summary"]["info"]["records"]
            t.add_row(name, _params(m["parameters"]), str(chains), *(fmt_figure(s.get(k)) for _, k in MODEL_COLUMNS))
        out.append(t)
    pl = summary.get("pipeline")
    if pl:
        for title, fam in scopes:
            t = Table(title=f"ensemble pipeline {pl['label']} ({' + '.join(pl['members'])}): {title}",
                      title_justify="left")
            t.add_column("problems", justify="right")
            for head, _ in PIPELINE_COLUMNS:
                t.add_column(head, justify="right")
            s = pl["summary"] if fam is None else pl["summary"]["by_family"].get(fam, {})
            n = pl["summary"]["info"]["families"].get(fam, 0) if fam else pl["summary"]["info"]["records"]
            t.add_row(str(n), *(fmt_figure(s.get(k)) for _, k in PIPELINE_COLUMNS))
            out.append(t)
    return out


def faithfulness_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config, e.g. configs/faithfulness-zoo.yaml")],
    out: Annotated[Optional[Path], typer.Option(help="Output directory (overrides the config's out_dir).")] = None,
    n: Annotated[Optional[int], typer.Option("--n", "-n", min=1, help="Problems per task (overrides the config).")]
    = None,
) -> None:
    """Faithfulness suite: early answering, adding mistakes, paraphrasing and filler for every model
    (and the ensemble pipeline, if configured). Resumable: a rerun skips finished records."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    from verinet.backends import BackendError
    from verinet.faithfulness.calls import FaithfulnessError
    from verinet.faithfulness.config import FaithfulnessConfigError, load_config
    from verinet.faithfulness.job import run_job
    from verinet.tasks import TaskError

    try:
        cfg = load_config(config)
        if n is not None:
            cfg = cfg.model_copy(update={"tasks": [t.model_copy(update={"n": n}) for t in cfg.tasks]})
        where = out or Path(cfg.out_dir)
        console.print(f"{len(cfg.models)} models x {sum(t.n for t in cfg.tasks)} problems, tests: "
                      f"{', '.join(cfg.tests)}" + (f"; ensemble {cfg.pipeline.label}" if cfg.pipeline else ""),
                      highlight=False)
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("batches", total=None)
            summary = run_job(cfg, where, progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (FaithfulnessConfigError, FaithfulnessError, TaskError, BackendError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    for t in tables(summary):
        wide.print(t)
    console.print(f"wrote {where / 'records.jsonl'}, {where / 'summary.json'}, {where / 'curves.png'}, "
                  f"{where / 'bars.png'}", highlight=False)


__all__ = ["faithfulness_command", "fmt_figure", "tables"]
