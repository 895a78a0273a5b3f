"""``verinet eval-steps``: ProcessBench's earliest-error metrics for any verifier config on a user's data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

console = Console()
err = Console(stderr=True)


def _fig(f: dict | None) -> str:
    if not f or f.get("value") is None:
        return "n/a"
    ci = f" [{f['ci_low']:.2f}, {f['ci_high']:.2f}]" if f.get("ci_low") is not None else ""
    return f"{f['value']:.3f}{ci}"


def eval_steps_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="A serve or ensemble config (the verifier).")],
    data: Annotated[Path, typer.Option("--data", "-d", help="ProcessBench-format JSONL: problem, steps, label, "
                                                            "optional subset.")],
    out: Annotated[Optional[Path], typer.Option(help="Write the metrics and per-chain predictions here (JSON).")]
    = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Read at most this many records.")] = None,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="P(valid) below this is an error "
                                                                             "(default: the config's).")] = None,
    chain_format: Annotated[str, typer.Option("--format", help="text (free text), or gsm8k, arith, logic.")]
    = "text",
    n_boot: Annotated[int, typer.Option(min=100, help="Bootstrap resamples (over problems) per 95% CI.")] = 1000,
    batch: Annotated[int, typer.Option(min=1, help="Chains per engine call.")] = 16,
) -> None:
    """Score a verifier's earliest-error predictions: acc_err, acc_corr and F1 per subset, with 95% CIs."""
    from verinet.stepeval.data import StepsDataError, read_records
    from verinet.stepeval.run import EvalConfigError, load_verifier_config, predict, score

    if chain_format not in ("text", "gsm8k", "arith", "logic"):
        err.print(f"[bold red]error:[/] --format must be text, gsm8k, arith or logic, got {chain_format!r}")
        raise typer.Exit(2)
    try:
        records = read_records(data, limit=limit)
        cfg = load_verifier_config(config, threshold=threshold)
    except (StepsDataError, EvalConfigError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    with Progress("[bold]verifying", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("chains", total=len(records))
        preds = predict(cfg, records, chain_format=chain_format, batch=batch,
                        progress=lambda k: bar.advance(task, k))
    metrics = score(records, preds, n_boot=n_boot)
    table = Table(title=f"earliest error (ProcessBench) - {config.name} on {data.name}, "
                        f"threshold {cfg.defaults.threshold}")
    for col in ("subset", "chains (err/corr)", "acc_err", "acc_corr", "F1", "step AUROC by kind"):
        table.add_column(col)
    for name, m in metrics.items():
        au = ", ".join(f"{k} {v:.2f}" for k, v in (m.get("step_auroc") or {}).items() if v is not None)
        table.add_row(name, f"{m['n_chains']} ({m['n_erroneous']}/{m['n_correct']})", _fig(m["acc_err"]),
                      _fig(m["acc_corr"]), _fig(m["f1"]), au or "-")
    Console(width=max(console.width, 160)).print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": str(config), "data": str(data), "threshold": cfg.defaults.threshold,
                                   "aggregation": cfg.defaults.aggregation, "topology": cfg.defaults.topology,
                                   "members": [m.name for m in cfg.ensemble_config().members],
                                   "metrics": metrics, "predictions": preds}, indent=2))
        console.print(f"wrote {out}")


def processbench_command(
    family: Annotated[str, typer.Option("--family", "-f", help="arith, logic, arith_nl, logic_nl, or gsm8k (with "
                                                              "--data).")],
    out: Annotated[Path, typer.Option(help="JSONL file to write.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Problems (each gives a gold chain and one chain "
                                                            "per injectable error kind).")] = 20,
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
    knob: Annotated[list[str], typer.Option("--knob", "-k", help="Generator knob KEY=VALUE, repeatable.")] = [],
    data: Annotated[Optional[Path], typer.Option(help="GSM8K-format JSONL (family gsm8k).")] = None,
) -> None:
    """Write labelled chains in ProcessBench format (for `verinet eval-steps`) from a task family."""
    from verinet.cli import parse_knobs
    from verinet.stepeval.data import StepsDataError, family_records
    from verinet.tasks import TaskError
    from verinet.tasks.jsonl import write_jsonl

    try:
        records = family_records(family, n, seed=seed, params=parse_knobs(knob), path=data)
    except (TaskError, StepsDataError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    write_jsonl(out, records)
    console.print(f"wrote {len(records)} chains ({sum(r['label'] >= 0 for r in records)} with an error) to {out}")
