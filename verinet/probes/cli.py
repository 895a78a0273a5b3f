"""``verinet probe NAME --config configs/probes/NAME.yaml`` and ``verinet probe list``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


def probe_command(
    name: Annotated[str, typer.Argument(help="a probe (see `verinet probe list`), or `list`")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config; default "
                                                   "configs/probes/NAME.yaml")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output directory (default: the config's out_dir, "
                                                "else runs/probes/NAME)")] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="Run at a tiny size (well under a minute): checks the "
                                        "whole probe end to end; its numbers mean nothing")] = False,
) -> None:
    """Probes of what drives faithfulness: train or prompt models under controlled conditions, then measure.
    Resumable: a rerun with the same config and --out skips finished models and records."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from verinet.backends import BackendError
    from verinet.faithfulness.calls import FaithfulnessError
    from verinet.probes import MODULES, ProbeError, get_probe, load_probe_config, run_probe
    from verinet.tasks import TaskError
    from verinet.zoo.config import ZooError

    if name == "list":
        t = Table("probe", "question")
        for n in MODULES:
            t.add_row(n, get_probe(n).question)
        console.print(t)
        return
    try:
        probe = get_probe(name)
        cfg = load_probe_config(config or Path("configs") / "probes" / f"{name}.yaml", probe.config, name)
        if smoke:
            cfg = probe.smoke(cfg)
        where = out or Path(cfg.out_dir or f"runs/probes/{name}" + ("-smoke" if smoke else ""))
        t0 = time.perf_counter()
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as bar:
            stages: dict[str, int] = {}

            def progress(stage: str, done: int, total: int | None) -> None:
                if stage not in stages:
                    stages[stage] = bar.add_task(stage, total=total)
                bar.update(stages[stage], completed=done, total=total)

            summary = run_probe(probe, cfg, where, progress=progress)
    except (ProbeError, ZooError, TaskError, BackendError, FaithfulnessError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume", highlight=False)
        raise typer.Exit(130) from None
    for line in summary.get("findings", []):
        console.print(f"- {line}", highlight=False)
    console.print(f"wrote {where / 'summary.json'}, {where / 'report.md'}, {where / 'report.html'} "
                  f"in {time.perf_counter() - t0:.0f} s", highlight=False)


__all__ = ["probe_command"]
