"""``verinet zoo ...``: train, list and evaluate zoo checkpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from verinet.signals import sigterm_interrupts
from verinet.zoo.config import EXIT_RESUMABLE
from verinet.zoo.ladder_run import HARD_SLICES_TEXT

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
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Train only: no evaluation and no card. Run the same "
                                          "command without it later to evaluate and write the card.")] = False,
    loader_workers: Annotated[int, typer.Option(min=0, max=64, help="Processes that build batches ahead (the "
                                                "same batches; for a GPU, where one core cannot keep up).")] = 0,
    budget_s: Annotated[Optional[float], typer.Option(min=1, help="Stop after this many seconds, state saved, "
                                                      f"exit code {EXIT_RESUMABLE} (as on SIGTERM; Ctrl-C saves and "
                                                      "exits 130); the same command resumes.")] = None,
) -> None:
    """Train a zoo model (resumes an interrupted run), evaluate it and write its model card."""
    from verinet.zoo.card import build_card, write_card
    from verinet.zoo.config import ZooError, load_zoo_config
    from verinet.zoo.registry import MODELS_DIR, ladder
    from verinet.zoo.train import read_training_info, train

    target = out
    try:
        cfg = load_zoo_config(config)
        target = out or MODELS_DIR / cfg.name
        deadline = None if budget_s is None else time.time() + budget_s
        every = cfg.training.checkpoint_every * 10

        def plain(step: int, loss: float, tps: float) -> None:  # a log file gets no live bar: a line now and then
            if not console.is_terminal and (step % every == 0 or step == cfg.training.steps):
                console.print(f"{cfg.name} step {step}/{cfg.training.steps} loss {loss:.4f} {tps:,.0f} tok/s "
                              f"at {time.strftime('%H:%M:%S')}", highlight=False)

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.3f}  {task.fields[tps]:,.0f} tok/s"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(cfg.name, total=cfg.training.steps, loss=float("nan"), tps=0.0)
            result = train(cfg, target, on_step=lambda s, loss, tps: (bar.update(task, completed=s, loss=loss, tps=tps),
                                                                      plain(s, loss, tps)),
                           loader_workers=loader_workers, deadline=deadline, stop_on_signals=True)
        if result.steps < cfg.training.steps:
            why = "--budget-s" if result.stopped_by in (None, "deadline") else result.stopped_by
            console.print(f"{cfg.name}: stopped at step {result.steps} of {cfg.training.steps} ({why}), state saved "
                          f"in {target}; the same command resumes", highlight=False)
            # Ctrl-C is the user's stop, not a spent budget: 130, so a script or a resume loop stops too
            raise typer.Exit(130 if result.stopped_by == "SIGINT" else EXIT_RESUMABLE)
        console.print(f"trained {cfg.name}: {result.steps} steps, {result.tokens:,} tokens, {result.wall_s:.0f} s "
                      f"on {result.device}; final loss {result.final_loss:.4f}")
        if no_eval:
            console.print(f"weights in {target}; no card yet (--no-eval): rerun without --no-eval to write it")
            return
        console.print("evaluating on held-out problems ...")
        stub = build_card(read_training_info(target), {})
        ev, repro = _full_evaluation(target, stub, cfg.eval_n, 9_000_000,
                                     [n for n, _, _ in ladder()] or [cfg.name])
        card = build_card(read_training_info(target), ev, repro=repro)
        write_card(target, card)
    except ZooError as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:  # in set-up, a second Ctrl-C in training, or in evaluation: the user's stop
        err.print(_interrupted_message(target), highlight=False)
        raise typer.Exit(130) from None
    _print_eval(card["evaluation"])
    console.print(f"model card: {target / 'README.md'}")


def _interrupted_message(target: Path | None) -> str:
    """What an interrupted `zoo train` leaves, and what the same command does next."""
    from verinet.zoo.config import ZooError
    from verinet.zoo.train import STATE_DIR, read_training_info

    try:
        finished = target is not None and read_training_info(target) is not None
    except ZooError:
        finished = False
    if finished:
        return (f"interrupted after training: the weights in {target} are complete but have no card yet; the same "
                "command (without --no-eval) evaluates them without training again")
    if target is not None and (target / STATE_DIR / "state.json").is_file():
        return f"interrupted: the run keeps its last saved state in {target}; the same command resumes"
    return "interrupted before any state was saved; the same command starts the run"


@zoo_app.command("train-ladder")
def zoo_train_ladder(
    configs: Annotated[list[Path], typer.Argument(help="configs/zoo/NAME.yaml files, one model each.")],
    out_root: Annotated[Path, typer.Option("--out-root", help="Each model goes to OUT_ROOT/NAME, with "
                                           "NAME.log beside it and ladder.json with the grades.")],
    parallel: Annotated[int, typer.Option(min=1, max=32, help="Models trained at once (on one GPU, several "
                                          "small models use it better than one).")] = 1,
    loader_workers: Annotated[int, typer.Option(min=0, max=64, help="Batch-building processes per model.")] = 0,
    grade_with: Annotated[str, typer.Option(help="Comma-separated trained checkpoints graded beside the new "
                                            "ones (e.g. the smallest size's seeds).")] = "",
    slices: Annotated[str, typer.Option(help="Slices to grade on, 'FAMILY:KEY=INT,...;...'.")] = HARD_SLICES_TEXT,
    n: Annotated[int, typer.Option("--n", "-n", min=10, help="Held-out problems per slice.")] = 100,
    budget_s: Annotated[Optional[float], typer.Option(min=1, help="Seconds for training, all models together: "
                                                      "then every run saves its state and stops, and what finished "
                                                      "is graded. The same command resumes.")] = None,
    pack: Annotated[Optional[Path], typer.Option(help="At the end, also after a failure, Ctrl-C or SIGTERM (not a kill), put "
                                                 "OUT_ROOT in this .tar.gz (finished runs without their training state).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (sizes, tokens, device); train nothing.")]
        = False,
) -> None:
    """Train several zoo configs in one call (several at once, each resumable) and grade solving by size:
    held-out accuracy and the share of fully valid chains on the hardest slices with Wilson intervals, and
    whether the largest model's interval lies above the smallest's. Weights only; `verinet zoo train --config C --out OUT_ROOT/NAME` writes each card."""

    from verinet.zoo import ladder_run
    from verinet.zoo.config import ZooError
    from verinet.zoo.registry import resolve

    try:
        grade_slices = ladder_run.parse_slices(slices)
        others = {w.strip(): resolve(w.strip()) for w in grade_with.split(",") if w.strip()}
        rows = ladder_run.plan(configs)
    except ZooError as e:
        raise _fail(str(e)) from None
    t = Table(title="ladder plan")
    for col in ("name", "params (non-emb)", "steps", "batch", "tokens (est.)", "device"):
        t.add_column(col, justify="left" if col in ("name", "device") else "right")
    for r in rows:
        t.add_row(r["name"], f"{r['non_embedding']:,}", f"{r['steps']:,}", str(r["batch_size"]),
                  f"{r['tokens_estimate']:,}", r["device"])
    console.print(t)
    out_root.mkdir(parents=True, exist_ok=True)
    ladder_run.write_json(out_root / "plan.json", {"plan": rows, "slices": slices, "grade_with": list(others)})
    if dry_run:
        return
    summary: dict = {"plan": rows, "slices": slices, "grade_with": list(others), "budget_s": budget_s}
    try:
        with sigterm_interrupts():  # SIGTERM while grading: still recorded and packed
            _train_and_grade(summary, rows, others, grade_slices, out_root, parallel, loader_workers, budget_s, n)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runs saved their state (train_all waited for them)
        ended = ", ".join(f"{k} {v['status']}" for k, v in summary.get("runs", {}).items()) or "none"
        err.print(f"interrupted; runs: {ended}; the same command resumes", highlight=False)
        raise typer.Exit(130) from None
    finally:
        ladder_run.write_json(out_root / "ladder.json", summary)  # whatever ended it: the runs as recorded
        if pack is not None:
            names = ladder_run.pack(out_root, pack, summary.get("runs", {}))
            console.print(f"packed {len(names)} files into {pack}", highlight=False)
    not_done = {k: v["status"] for k, v in summary["runs"].items() if v["status"] != "finished"}
    if not_done:
        raise _fail("not finished: " + ", ".join(f"{k} ({v})" for k, v in not_done.items()) +
                    f"; logs in {out_root}; the same command resumes stopped runs")


def _train_and_grade(summary: dict, rows: list, others: dict, grade_slices: list, out_root: Path, parallel: int,
                     loader_workers: int, budget_s: float | None, n: int) -> None:
    """train-ladder's work; ``summary`` fills in as it goes and lands in OUT_ROOT/ladder.json at every stage."""
    import torch

    from verinet.zoo import ladder_run

    t0 = time.time()
    summary["runs"] = {}  # filled as runs end, so that an interrupted call still records (and packs) them
    ladder_run.train_all(rows, out_root, parallel=parallel, loader_workers=loader_workers, budget_s=budget_s,
                         log=lambda s: console.print(s, highlight=False), done=summary["runs"])
    summary["train_seconds"] = round(time.time() - t0, 1)
    ladder_run.write_json(out_root / "ladder.json", summary)
    models = {**others, **{r["name"]: out_root / r["name"] for r in rows
                           if summary["runs"][r["name"]]["status"] == "finished"}}

    def saved(name, row, partial, how):  # results as they come: a crash while grading keeps the graded ones
        summary["grades"] = partial
        ladder_run.write_json(out_root / "ladder.json", summary)
        _print_graded_model(name, row, how)

    summary["grades"] = ladder_run.grade(models, grade_slices, n, device="cuda" if torch.cuda.is_available() else "cpu",
                                         on_model=saved)
    ladder_run.write_json(out_root / "ladder.json", summary)
    _print_grade_summary(summary["grades"], out_root / "ladder.json")


@zoo_app.command("grade")
def zoo_grade(
    models: Annotated[list[str], typer.Argument(help="Checkpoint names (see `verinet zoo list`) or run directories; "
                                                "each is reported under its directory's name (with its parent's "
                                                "when two share one).")],
    slices: Annotated[str, typer.Option(help="Slices to grade on, 'FAMILY:KEY=INT,...;...'.")] = HARD_SLICES_TEXT,
    n: Annotated[int, typer.Option("--n", "-n", min=10, help="Held-out problems per slice.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the held-out sample.")] = 9_000_000,
    out: Annotated[Optional[Path], typer.Option(help="JSON file written after every model. Run again on the same "
                                                "file (same slices, n and seed), it keeps the models graded there "
                                                "and grades only the new ones, or those whose weights changed.")]
        = None,
) -> None:
    """Grade solving by size without training: held-out greedy accuracy (with its chance level) and the share
    of fully valid chains per slice, with Wilson intervals, and whether the largest models' intervals lie
    above the smallest's (what `train-ladder` reports after training)."""
    import torch

    from verinet.zoo import ladder_run
    from verinet.zoo.config import ZooError

    try:
        grade_slices = ladder_run.parse_slices(slices)
        paths = _grade_labels(models)
        earlier = _earlier_grades(out, {"n": n, "seed": seed,
                                        "slices": [{"family": f, "params": p} for f, p in grade_slices]})

        def saved(name, row, partial, how):
            if out is not None:
                ladder_run.write_json(out, partial)
            _print_graded_model(name, row, how)

        g = ladder_run.grade(paths, grade_slices, n, seed=seed, on_model=saved, earlier=earlier,
                             device="cuda" if torch.cuda.is_available() else "cpu")
    except ZooError as e:
        raise _fail(str(e)) from None
    if out is not None:
        ladder_run.write_json(out, g)
    _print_grade_summary(g, out)


def _grade_labels(models: list[str]) -> dict[str, Path]:
    """{label: checkpoint directory}: a directory's name, or parent/name where two directories share a name;
    a directory named twice is graded once. Each must hold a checkpoint, checked before any grading."""
    import os

    from verinet.zoo.config import ZooError
    from verinet.zoo.registry import resolve

    paths = list(dict.fromkeys(Path(os.path.abspath(resolve(m))) for m in models))
    for p in paths:
        missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (p / f).is_file()]
        if missing:
            raise ZooError(f"{p} holds no finished checkpoint (no {', '.join(missing)}); a run still training "
                           "has only train_state/: let it finish, or give another directory")
    short = [p.name for p in paths]
    labels = [p.name if short.count(p.name) == 1 else f"{p.parent.name}/{p.name}" for p in paths]
    if len(set(labels)) < len(labels):
        raise ZooError("two directories would be reported under one name: " + ", ".join(
            f"{lb} ({p})" for lb, p in zip(labels, paths) if labels.count(lb) > 1) + "; grade them in separate files")
    return dict(zip(labels, paths))


def _earlier_grades(out: Path | None, grading: dict) -> dict | None:
    """The grades already in ``out`` (None if it does not exist yet); errors before any grading when the file
    cannot be written or holds something else than grades on the same problems."""
    from verinet.zoo import ladder_run
    from verinet.zoo.config import ZooError

    if out is None:
        return None
    if out.is_dir():
        raise ZooError(f"--out {out} is a directory; give a file, e.g. {out / 'grades.json'}")
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        return None
    try:
        earlier = json.loads(out.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"--out {out} is not a grade file ({e}); give another file or delete it") from None
    if not isinstance(earlier, dict) or not isinstance(earlier.get("models"), dict):
        hint = " (a train-ladder ladder.json: its grades are under 'grades')" if isinstance(earlier, dict) and \
            "grades" in earlier else ""
        raise ZooError(f"--out {out} is not a grade file{hint}; give another file or delete it")
    if not ladder_run.same_grading(earlier, grading):
        raise ZooError(f"--out {out} holds grades on other problems (n={earlier.get('n')}, seed={earlier.get('seed')}, "
                       f"slices {earlier.get('slices')}); give another file or delete it")
    return earlier


def _print_graded_model(name: str, row: dict, how: str = "graded") -> None:
    console.print(f"{how} {name} ({row['non_embedding']:,} non-embedding): accuracy "
                  + _rates(row["accuracy"], chance=True) + "; chains valid " + _rates(row["valid"]), highlight=False)


def _print_grade_summary(g: dict, where: Path | None) -> None:
    at = f"; {where}" if where is not None else ""
    if g["graded"] is None:
        console.print(f"not graded by size: fewer than two sizes{at}", highlight=False)
    else:
        console.print(f"graded by size ({', '.join(g['largest'])} against {', '.join(g['smallest'])}: the largest's "
                      f"interval above the smallest's), per slice: accuracy {g['graded']}, chains valid "
                      f"{g['graded_valid']}{at}", highlight=False)


def _rates(rates: list[dict], chance: bool = False) -> str:
    return ", ".join(f"{a['value']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}]"
                     + (f" (chance {a['chance']:.2f})" if chance else "") for a in rates)


@zoo_app.command("list")
def zoo_list() -> None:
    """Table of committed checkpoints with parameters and headline accuracy."""
    from verinet.zoo.registry import in_ladder, list_checkpoints

    t = Table(title="verinet zoo", caption="accuracy etc.: means over each model's own training slices, so they "
                                           "compare within the size ladder; other recipes train on other slices")
    for col in ("name", "ladder", "params (non-emb)", "train tokens", "accuracy", "step validity", "verdict AUROC"):
        t.add_column(col, justify="left" if col in ("name", "ladder") else "right")
    for name, _, card in list_checkpoints():
        o = card["evaluation"]["overall"]
        t.add_row(name, "yes" if in_ladder(name) else "no", f"{card['parameters']['non_embedding']:,}",
                  f"{card['training']['tokens']:,}", f"{o['accuracy']:.3f}", f"{o['step_validity']:.3f}",
                  f"{o['verifier_auroc']:.3f}")
    console.print(t)


@zoo_app.command("eval")
def zoo_eval(
    names: Annotated[list[str], typer.Argument(help="Checkpoint names (see `verinet zoo list`) or directories.")],
    n: Annotated[int, typer.Option("--n", "-n", min=10, help="Held-out problems per family and difficulty.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the held-out sample.")] = 9_000_000,
    writers: Annotated[Optional[str], typer.Option(
        help="Comma-separated zoo models whose own greedy chains form the real-error set; default: the whole "
             "committed size ladder, zoo-xs-s*, zoo-s, zoo-m, zoo-l (on the real-error slices its larger sizes write "
             "most of the correct chains, its smaller most of the erroneous); other recipes such as zoo-xs-sf only "
             "when named.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    update_card: Annotated[bool, typer.Option(
        "--update-card/--no-update-card", help="Write the evaluation into the checkpoint's model card.")] = False,
) -> None:
    """Held-out solving (accuracy, step validity) and verifier quality by verifier kind and error kind:
    AUROC on injected errors, earliest-error F1 on chains that the ladder's models wrote themselves."""
    import json

    from verinet.zoo.config import ZooError

    results = {}
    try:
        own_errors: dict = {}  # the real-error set is written once and verified by every model
        for name in names:
            path, card = _checkpoint_with_card(name)
            card = _card_for_these_weights(path, card)
            ev, repro = _full_evaluation(path, card, n, seed, _writer_names(writers), own_errors)
            if update_card:
                from verinet.zoo.card import write_card

                write_card(path, {**card, "evaluation": ev, "repro": repro})
                from verinet.zoo.token_prm import companion, write_repro

                if companion(path) is not None:
                    write_repro(companion(path), REPRO_N)
            results[name] = ev
            if not as_json:
                console.print(f"[bold]{name}[/]")
                _print_eval(ev)
                _print_verifiers(ev)
    except ZooError as e:
        raise _fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(results[names[0]] if len(names) == 1 else results, indent=2, allow_nan=False))


@zoo_app.command("threshold")
def zoo_threshold(
    names: Annotated[list[str], typer.Argument(help="The members whose mean score is thresholded.")],
    n: Annotated[int, typer.Option("--n", "-n", min=8, help="Held-out problems per family.")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the labelled problems (not the card's held-out seed).")
                    ] = 7_000_000,
    method: Annotated[str, typer.Option(help="Verifier kind: likelihood or verdict.")] = "likelihood",
) -> None:
    """Fit the earliest-error threshold for an ensemble's mean score (what a serve config's
    defaults.threshold should be) on labelled gold and injected chains; print it with F1 on held-out halves."""
    from verinet.zoo.config import ZooError
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve
    from verinet.zoo.verifiers import METHODS, fit_threshold

    if method not in METHODS:
        raise _fail(f"--method must be one of {list(METHODS)}, got {method!r}")
    try:
        members = [load_checkpoint(resolve(name)) for name in names]
    except ZooError as e:
        raise _fail(str(e)) from None
    with console.status("scoring labelled chains ..."):
        r = fit_threshold(members, n, seed=seed, method=method)
    typer.echo(json.dumps(r, indent=2, allow_nan=False))


@zoo_app.command("prm")
def zoo_prm(
    name: Annotated[str, typer.Argument(help="A zoo checkpoint name (see `verinet zoo list`) or directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the PRM checkpoint (a new one).")],
) -> None:
    """Export a zoo checkpoint as a process reward model: LlamaForTokenClassification scored at <v>, for
    members with `verifier: prm` (transformers, or vLLM's pooling runner). Its P(valid) is the verdict kind's."""
    from verinet.zoo.config import ZooError
    from verinet.zoo.prm import STEP_TAG, export_prm

    try:
        where = export_prm(name, out)
    except ZooError as e:
        raise _fail(str(e)) from None
    console.print(f"PRM written to {where} (step tag {STEP_TAG}, valid label 1); use it as a member with "
                  f"backend hf or vllm, format zoo, verifier prm, model {where}", highlight=False)


@zoo_app.command("train-prm")
def zoo_train_prm(
    name: Annotated[str, typer.Argument(help="The zoo checkpoint to fine-tune (name or directory).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory for the PRM; default: NAME/prm, "
                                                "where `verinet zoo eval NAME` finds it.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 1000,
    batch_size: Annotated[int, typer.Option(min=1, help="Chains per step.")] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (linear warm-up and decay).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the training batches.")] = 0,
    own_writers: Annotated[str, typer.Option(
        help="Comma-separated zoo models whose own greedy chains with errors join the negatives ('' for none).")
    ] = "zoo-xs-s0,zoo-s",
    own_n: Annotated[int, typer.Option(min=0, help="Problems per training slice the writers solve.")] = 200,
    own_slices: Annotated[Optional[str], typer.Option(
        help="Slices the writers solve, 'FAMILY:KEY=INT,...;...' (default: the PRM's training slices); e.g. the "
             "longer ones where an ensemble's members err. A family left out gets no own mistakes.")] = None,
    eval_every: Annotated[int, typer.Option(min=0, help="Steps between held-out AUROC reports and saved states "
                                            "(0: at the end only).")] = 100,
    n: Annotated[int, typer.Option("--n", "-n", min=10, help="Held-out problems per family for the reports.")] = 100,
    extra_layers: Annotated[int, typer.Option(min=0, max=8, help="Decoder layers added on top (copies of the "
                                              "last, starting as the identity).")] = 2,
    init_from: Annotated[Optional[Path], typer.Option(help="Continue training this token-level PRM of NAME "
                                                      "(e.g. its NAME/prm) instead of starting from NAME.")] = None,
    distill: Annotated[float, typer.Option(min=0.0, help="Weight of a dense loss towards NAME's own view of each "
                                           "chain token (P(token) / max P, teacher-forced); 0: none.")] = 0.0,
    freeze_backbone: Annotated[bool, typer.Option(help="Train only the added layers (--extra-layers >= 1), the final norm "
                                           "and the head.")] = False,
    same_parity: Annotated[float, typer.Option(min=0.0, max=1.0, help="Probability of drawing again an injected "
                                               "wrong result whose digit has the other parity than the right one "
                                               "(hard negatives against a parity check); 0: none.")] = 0.0,
    lm_loss: Annotated[float, typer.Option(min=0.0, help="Weight of NAME's own next-token loss on valid tokens, "
                                           "read after the backbone through NAME's frozen head; 0: none.")] = 0.0,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Torch CPU threads.")] = None,
) -> None:
    """Fine-tune a zoo checkpoint into a token-level process reward model: a two-class head read at every
    token of the solve layout, trained on gold chains, injected errors and the writers' own mistakes
    (labels up to the first wrong character); a step scores its least valid token. Saves its state at every
    report (--eval-every) and resumes from it in the same --out. Serve it with `verifier: prm`,
    `step_pooling: min`."""
    import torch

    from verinet.tasks import get_family
    from verinet.zoo import token_prm
    from verinet.zoo.evaluate import BUDGET_RULE
    from verinet.zoo.config import ZooError
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve

    if threads:
        torch.set_num_threads(threads)

    try:
        src = resolve(name)
        target = out or src / "prm"
        if (target / "prm.json").is_file():
            raise ZooError(f"{target}: a trained PRM is already here; remove it or choose another --out")
        writers = [w.strip() for w in own_writers.split(",") if w.strip()]
        slices = None
        if own_slices:
            from verinet.zoo.ladder_run import parse_slices

            slices = {}
            for fam, params in parse_slices(own_slices, "--own-slices"):
                if fam not in token_prm.TRAIN_SLICES:
                    raise ZooError(f"--own-slices: the PRM trains on {', '.join(token_prm.TRAIN_SLICES)} only, "
                                   f"not {fam}")
                try:
                    get_family(fam).knobs(params)
                except Exception as e:  # noqa: BLE001 - the family's own message says which knob
                    raise ZooError(f"--own-slices: {fam}:{params} is not a valid slice: {e}") from None
                slices.setdefault(fam, []).append(params)
        own = []
        if writers:
            with console.status(f"collecting own mistakes of {', '.join(writers)} ..."):
                own = token_prm.own_error_pool([(w, *load_checkpoint(resolve(w))) for w in writers], own_n,
                                               seed=seed + 5_000_000, slices=slices)
            console.print(f"{len(own)} model-written chains with a placeable first error")
        request = {"writers": writers, "n_per_slice": own_n, "slices": slices or token_prm.TRAIN_SLICES,
                   "max_new_tokens": BUDGET_RULE} if writers else None
        _, _, info = token_prm.train(src, target, steps=steps, batch_size=batch_size, lr=lr, seed=seed, own=own,
                                     own_request=request,
                                     eval_every=eval_every, evaluate=lambda m, t: token_prm.held_out_auroc(m, t, n),
                                     extra_layers=extra_layers, init_from=init_from, distill=distill,
                                     freeze_backbone=freeze_backbone, same_parity=same_parity,
                                     lm_loss=lm_loss, log=lambda s: console.print(s, highlight=False))
        token_prm.write_repro(target, REPRO_N)
    except ZooError as e:
        raise _fail(str(e)) from None
    console.print(f"token-level PRM written to {target} in {info['seconds']:.0f} s; serve it as a member with "
                  f"backend hf or vllm, format zoo, verifier prm, step_pooling min, model {target}", highlight=False)


def _checkpoint_with_card(name: str):
    import json

    from verinet.zoo.config import ZooError
    from verinet.zoo.registry import resolve

    path = resolve(name)
    card_file = path / "card.json"
    if not card_file.is_file():
        raise ZooError(f"{path}: no card.json, so the training tasks are unknown; run `verinet zoo train`")
    return path, json.loads(card_file.read_text())


def _card_for_these_weights(path: Path, card: dict) -> dict:
    """The card itself, or, when the weights were retrained since it was written (training.json records
    another run), a new card from training.json without figures: nothing of the old one is reused, and
    --update-card writes the new run's training and phases (each under its run's name) with the new
    figures. The card keeps the checkpoint's name: a ladder is swapped by copying each size's last run
    into the zoo-<size> it replaces."""
    from verinet.zoo.card import build_card, describes_run
    from verinet.zoo.train import read_training_info

    info = read_training_info(path)
    if info is None or describes_run(card, info):
        return card
    err.print(f"{path}: card.json describes another run than training.json; evaluating these weights from "
              "scratch (--update-card writes their card)", highlight=False)
    return build_card(info, {}, None, name=card.get("name") or path.name)


def _writer_names(writers: Optional[str]) -> list[str]:
    from verinet.zoo.registry import ladder

    names = [w.strip() for w in writers.split(",") if w.strip()] if writers else [n for n, _, _ in ladder()]
    if not names:
        raise _fail("no writer models: give --writers or commit a zoo ladder")
    return names


def _full_evaluation(path: Path, card: dict, n: int, seed: int, writer_names: list[str],
                     own_errors: dict | None = None) -> tuple[dict, dict]:
    """(evaluation, repro): solving by difficulty and verifier quality; repro is the small sample tests
    rerun. ``own_errors`` caches the writers' labelled chains across calls (filled on first use)."""
    from verinet.zoo.config import TaskMix
    from verinet.zoo.model import load_checkpoint
    from verinet.zoo.registry import resolve
    from verinet.zoo.verifiers import OWN_ERROR_SEED, VERIFIER_SLICES, evaluate_verifiers, own_error_set

    from verinet.zoo.token_prm import companion, load_token_prm, source_mismatch

    model, tok = load_checkpoint(path)
    prm = load_token_prm(companion(path)) if companion(path) is not None else None
    prm_note = source_mismatch(companion(path), path) if prm is not None else None
    tasks = [TaskMix.model_validate(t) for t in card["training"]["tasks"]]
    own_errors = {} if own_errors is None else own_errors
    with console.status("evaluating solving and verifiers on held-out problems ..."):
        if not own_errors:
            writers = [(w, *load_checkpoint(resolve(w))) for w in writer_names]
            own_errors.update({fam: own_error_set(writers, fam, n, seed=seed + OWN_ERROR_SEED) for fam in VERIFIER_SLICES})
        ev = {**_solving(card.get("evaluation"), model, tok, tasks, n, seed),
              **evaluate_verifiers(model, tok, n, seed=seed, own_errors=own_errors, prm=prm),
              **({"prm_source_mismatch": prm_note} if prm_note else {})}
        repro = {**_solving(card.get("repro"), model, tok, tasks, REPRO_N, seed),
                 **evaluate_verifiers(model, tok, REPRO_N, seed=seed)}
    return ev, repro


SOLVING_KEYS = ("n_per_slice", "seed", "overall", "by_family", "slices")


def _solving(saved: dict | None, model, tok, tasks, n: int, seed: int) -> dict:
    """Held-out solving figures; a card's own, when it holds them for the same sample (greedy
    decoding of the same checkpoint gives the same chains, so they are not recomputed)."""
    from verinet.zoo.evaluate import evaluate

    if saved and saved.get("n_per_slice") == n and saved.get("seed") == seed and "slices" in saved:
        return {k: saved[k] for k in SOLVING_KEYS}
    return evaluate(model, tok, tasks, n, seed=seed)


def _print_eval(ev: dict) -> None:
    t = Table(title=f"held-out evaluation ({ev['n_per_slice']} per slice)")
    for col in ("family", "difficulty", "accuracy", "chain valid", "step validity", "verifier acc", "verifier AUROC"):
        t.add_column(col, justify="left" if col in ("family", "difficulty") else "right")
    for s in ev["slices"]:
        auroc = "n/a" if s["verifier_auroc"] is None else f"{s['verifier_auroc']:.3f}"
        t.add_row(s["family"], ", ".join(f"{k}={v}" for k, v in s["params"].items()), f"{s['accuracy']:.3f}",
                  f"{s['chain_valid']:.3f}", f"{s['step_validity']:.3f}", f"{s['verifier_accuracy']:.3f}", auroc)
    console.print(t)


def _print_verifiers(ev: dict) -> None:
    from verinet.schema import ERROR_KINDS
    from verinet.zoo.card import auroc_cell

    t = Table(title="verifier AUROC on injected errors, at the first wrong line vs gold lines (chance 0.5; 95% CI, "
                     "bootstrap over problems)")
    for col in ("family", "slice", "verifier", *ERROR_KINDS):
        t.add_column(col, justify="left" if col in ("family", "slice", "verifier") else "right")
    for method, fams in ev["verifier_auroc_by_method"].items():
        for fam, kinds in fams.items():
            ci = ev.get("verifier_auroc_ci_by_method", {}).get(method, {}).get(fam, {})
            t.add_row(fam, json.dumps(ev["verifier_slices"][fam]), method,
                      *(auroc_cell(kinds[k], ci.get(k)) for k in ERROR_KINDS))
    console.print(t)
    own = ev.get("own_error_detail")
    if own:
        t = Table(title=f"earliest-error F1 on chains written by {', '.join(own['writers'])} "
                        "(balanced correct/erroneous; threshold fitted on the other half)")
        for col in ("family", "chains", "verifier", "acc_err", "acc_corr", "F1"):
            t.add_column(col, justify="left" if col in ("family", "verifier") else "right")
        for fam, methods in own["by_family"].items():
            for method, r in methods.items():
                t.add_row(fam, str(r.get("n_chains", 0)), method, *(
                    "n/a" if r[k] is None else f"{r[k]:.3f}" for k in ("acc_err", "acc_corr", "f1")))
        console.print(t)
