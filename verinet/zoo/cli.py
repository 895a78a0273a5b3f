"""``verinet zoo ...``: train, list and evaluate zoo checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

REPRO_N = 20  # problems per slice in the card's small sample that tests reproduce

zoo_app = typer.Typer(help="The model zoo: train, list and evaluate small reasoners.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


@zoo_app.command("train")
def zoo_train(
    config: Annotated[Path, typer.Option("--config", "-c", help="configs/zoo/NAME.yaml")],
    out: Annotated[Optional[Path], typer.Option(help="Output directory; default: the package's zoo.")] = None,
) -> None:
    """Train a zoo model (resumes an interrupted run), evaluate it and write its model card."""
    from verinet.zoo.card import build_card, write_card
    from verinet.zoo.config import ZooError, load_zoo_config
    from verinet.zoo.evaluate import evaluate
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import MODELS_DIR
    from verinet.zoo.train import read_training_info, train

    try:
        cfg = load_zoo_config(config)
        target = out or MODELS_DIR / cfg.name
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.3f}  {task.fields[tps]:,.0f} tok/s"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(cfg.name, total=cfg.training.steps, loss=float("nan"), tps=0.0)
            result = train(cfg, target, on_step=lambda s, loss, tps: bar.update(task, completed=s, loss=loss, tps=tps))
        console.print(f"trained {cfg.name}: {result.steps} steps, {result.tokens:,} tokens, {result.wall_s:.0f} s "
                      f"on {result.device}; final loss {result.final_loss:.4f}")
        console.print("evaluating on held-out problems ...")
        model, tok = load_checkpoint(target)
        card = build_card(read_training_info(target), evaluate(model, tok, list(cfg.tasks), cfg.eval_n),
                          repro=evaluate(model, tok, list(cfg.tasks), REPRO_N))
        write_card(target, card)
    except ZooError as e:
        raise _fail(str(e)) from None
    _print_eval(card["evaluation"])
    console.print(f"model card: {target / 'README.md'}")


@zoo_app.command("list")
def zoo_list() -> None:
    """Table of committed checkpoints with parameters and headline accuracy."""
    from verinet.zoo.registry import list_checkpoints

    t = Table(title="verinet zoo")
    for col in ("name", "params (non-emb)", "train tokens", "accuracy", "step validity", "verifier AUROC"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for name, _, card in list_checkpoints():
        o = card["evaluation"]["overall"]
        t.add_row(name, f"{card['parameters']['non_embedding']:,}", f"{card['training']['tokens']:,}",
                  f"{o['accuracy']:.3f}", f"{o['step_validity']:.3f}", f"{o['verifier_auroc']:.3f}")
    console.print(t)


@zoo_app.command("eval")
def zoo_eval(
    name: Annotated[str, typer.Argument(help="Checkpoint name (see `verinet zoo list`) or directory.")],
    n: Annotated[int, typer.Option("--n", "-n", min=10, help="Held-out problems per family and difficulty.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the held-out sample.")] = 9_000_000,
) -> None:
    """Held-out accuracy, step validity, verifier accuracy and AUROC, by difficulty."""
    import json

    from verinet.zoo.config import TaskMix, ZooError
    from verinet.zoo.evaluate import evaluate
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    try:
        path = resolve(name)
        model, tok = load_checkpoint(path)
        card_file = path / "card.json"
        if not card_file.is_file():
            raise ZooError(f"{path}: no card.json, so the training tasks are unknown; run `verinet zoo train`")
        tasks = [TaskMix.model_validate(t) for t in json.loads(card_file.read_text())["training"]["tasks"]]
        _print_eval(evaluate(model, tok, tasks, n, seed=seed))
    except ZooError as e:
        raise _fail(str(e)) from None


def _print_eval(ev: dict) -> None:
    t = Table(title=f"held-out evaluation ({ev['n_per_slice']} per slice)")
    for col in ("family", "difficulty", "accuracy", "chain valid", "step validity", "verifier acc", "verifier AUROC"):
        t.add_column(col, justify="left" if col in ("family", "difficulty") else "right")
    for s in ev["slices"]:
        auroc = "n/a" if s["verifier_auroc"] is None else f"{s['verifier_auroc']:.3f}"
        t.add_row(s["family"], ", ".join(f"{k}={v}" for k, v in s["params"].items()), f"{s['accuracy']:.3f}",
                  f"{s['chain_valid']:.3f}", f"{s['step_validity']:.3f}", f"{s['verifier_accuracy']:.3f}", auroc)
    console.print(t)
