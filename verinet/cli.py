"""The ``verinet`` command line."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import verinet
from verinet.serve.cli import monitor_command, serve_command
from verinet.faithfulness.cli import faithfulness_command
from verinet.models.cli import models_app
from verinet.probes.cli import probe_command
from verinet.stepeval.cli import eval_steps_command, processbench_command
from verinet.zoo.cli import zoo_app

app = typer.Typer(
    help="verinet: ensembles of small language models that cross-verify each other's reasoning steps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="Task families: sample problems, check chains.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(zoo_app, name="zoo")
app.add_typer(models_app, name="models")
app.command("eval-steps")(eval_steps_command)
tasks_app.command("processbench")(processbench_command)
app.command("faithfulness")(faithfulness_command)
app.command("probe")(probe_command)
app.command("serve")(serve_command)
app.command("monitor")(monitor_command)

console = Console()
err = Console(stderr=True)
# Tables written to a pipe or a file are not cut at rich's default 80 columns ("answer_co…").
PIPE_WIDTH = 200


def _flags_show_no_type() -> None:
    """On/off flags take no value, so help shows no type for them (typer 0.2x prints ``<bool>``)."""
    from typer.core import TyperOption

    show = TyperOption.display_type_rich
    if getattr(show, "_verinet", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag and self.metavar is None else show(self, ctx)

    display_type_rich._verinet = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        console.print(f"verinet {verinet.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """verinet command line."""
    # transformers' per-checkpoint "Loading weights" bars say nothing here; verinet shows its own progress.
    # Read when transformers is first imported (HF_HUB_DISABLE_PROGRESS_BARS=0 brings them back).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "COLUMNS" not in os.environ and not sys.stdout.isatty():
        os.environ["COLUMNS"] = str(PIPE_WIDTH)
        ctx.call_on_close(lambda: os.environ.pop("COLUMNS", None))


def parse_knobs(items: list[str]) -> dict[str, Any]:
    """``['steps=4', 'ops=+-']`` -> ``{'steps': 4, 'ops': '+-'}`` (values read as YAML scalars)."""
    knobs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"--knob expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        knobs[key.strip()] = value if isinstance(value, (bool, int, float, str)) else raw
    return knobs


_GSM8K_NEEDS_DATA = ("gsm8k problems are loaded from a file, not generated: pass --data FILE.jsonl "
                     "(one {\"question\", \"answer\"} object per line, the answer ending in '#### N')")


def load_problems(family: str, n: int, *, seed: int, knobs: list[str], data: Path | None,
                  dev_n: int = 0) -> tuple[list[Any], list[Any]]:
    """(problems, dev problems): generated for arith/logic, read from --data for gsm8k.

    From a file, the first ``dev_n`` problems are the dev split and the next ``n`` the test set.
    """
    from verinet.tasks import TaskError, get_family

    fam = get_family(family)
    if data is None:
        if family == "gsm8k":
            raise TaskError(_GSM8K_NEEDS_DATA)
        from verinet.experiments.compare import generated_split

        return generated_split(fam, n, dev_n, seed=seed, params=parse_knobs(knobs))
    if family != "gsm8k":
        raise TaskError(f"--data is for family gsm8k; {family} problems are generated")
    if knobs:
        raise TaskError("--knob is for generated families; gsm8k problems come from --data")
    from verinet.tasks.gsm8k import load_gsm8k

    loaded = load_gsm8k(data, limit=dev_n + n)
    if len(loaded) <= dev_n:
        raise TaskError(f"{data}: {len(loaded)} problem(s), but --dev-n {dev_n} are kept for the dev split and "
                        "at least one more is needed")
    return loaded[dev_n:], loaded[:dev_n]


@tasks_app.command("sample")
def tasks_sample(
    family: Annotated[str, typer.Option("--family", "-f", help="arith, logic or gsm8k (with --data)")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="How many problems.")] = 5,
    seed: Annotated[int, typer.Option(help="Base seed; the same seed gives the same problems.")] = 0,
    knob: Annotated[list[str], typer.Option("--knob", "-k", help="Generator knob KEY=VALUE, repeatable.")] = [],
    out: Annotated[Optional[Path], typer.Option(help="Write JSONL (problem + gold chain) here.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="GSM8K-format JSONL to load (family gsm8k).")] = None,
) -> None:
    """Show or write generated (or, for gsm8k, loaded) problems with their gold chains."""
    from verinet.tasks import TaskError, get_family
    from verinet.tasks.jsonl import sample_record, write_jsonl

    try:
        fam = get_family(family)
        problems, _ = load_problems(family, n, seed=seed, knobs=knob, data=data)
    except TaskError as e:
        raise fail(str(e)) from None
    records = [sample_record(p, fam.gold_chain(p).text) for p in problems]
    if out is not None:
        write_jsonl(out, records)
        console.print(f"wrote {len(records)} problems to {out}")
        return
    for p, rec in zip(problems, records):
        console.rule(f"{p.id}  (seed {p.seed})")
        console.print(f"[bold]question[/]\n{p.question}", highlight=False)
        console.print(f"[bold]gold chain[/]\n{rec['chain']}", highlight=False)


@tasks_app.command("check")
def tasks_check(
    file: Annotated[Path, typer.Argument(help="JSONL: each line a problem (or family+seed) and a chain text.")],
    out: Annotated[Optional[Path], typer.Option(help="Write one ChainCheck JSON per line here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Totals only, no per-step lines.")] = False,
) -> None:
    """Score chains from any source with the exact checker; print per-step results and totals."""
    from verinet.tasks import TaskError, get_family
    from verinet.tasks.jsonl import LineError, read_check_requests

    totals: Counter[str] = Counter()
    out_f = out.open("w", encoding="utf-8") if out else None
    try:
        for item in read_check_requests(file):
            if isinstance(item, LineError):
                totals["bad_lines"] += 1
                err.print(f"[red]{file}:{item.line}:[/] {item.message}", highlight=False)
                continue
            check = get_family(item.problem.family).check(item.problem, item.chain)
            totals["chains"] += 1
            totals["steps"] += len(check.steps)
            totals["valid_steps"] += check.n_valid
            totals["supported_steps"] += check.n_supported
            totals["all_valid"] += check.first_error == -1
            totals["answer_correct"] += check.answer_correct
            if out_f:
                out_f.write(json.dumps({"line": item.line, "chain_id": item.chain_id,
                                        **check.model_dump(mode="json")}) + "\n")
            if not quiet:
                _print_check(item.line, item.problem.id, check)
    except TaskError as e:
        raise fail(str(e)) from None
    finally:
        if out_f:
            out_f.close()
    t = Table(title="totals")
    for k in ("chains", "all_valid", "answer_correct", "steps", "valid_steps", "supported_steps", "bad_lines"):
        t.add_column(k, justify="right")
    t.add_row(*(str(totals[k]) for k in ("chains", "all_valid", "answer_correct", "steps", "valid_steps",
                                         "supported_steps", "bad_lines")))
    console.print(t)
    if totals["bad_lines"]:
        raise fail(f"{totals['bad_lines']} malformed line(s) in {file}; the rest were checked", code=1)


def _print_check(line: int, problem_id: str, check: Any) -> None:
    console.print(f"[bold]line {line}[/] {problem_id}: first error {check.first_error}, "
                  f"answer {'correct' if check.answer_correct else 'wrong'}", highlight=False)
    for s in [*check.steps, check.answer]:
        mark = "[green]ok[/]" if s.valid else "[red]xx[/]"
        sup = "supported" if s.supported else "unsupported"
        reason = f"  ({s.reason})" if s.reason else ""
        console.print(f"  {s.index:>3} {mark} {sup:<11} {s.text[:80]}{reason}", highlight=False, markup=True)


@app.command("compare")
def compare(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config; default: the embedded one.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output directory (overrides the config's out_dir).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve models, print the placement plan on the "
                                          "declared cluster and the estimated cost; run nothing.")] = False,
    cluster: Annotated[Optional[str], typer.Option(help="Declared nodes for --dry-run, JSON: "
                                                   "'[{\"CPU\": 32, \"GPU\": 4}]' (default: the config's).")] = None,
    local: Annotated[bool, typer.Option("--local", help="Run the models in this process instead of Ray actors.")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster (default: RAY_ADDRESS, "
                                                       "as set by `ray job submit`, else an embedded Ray).")] = None,
) -> None:
    """Run the comparison job (resumable): ensemble vs scaled-up baseline; writes results, summary, report."""
    from verinet.backends import BackendError
    from verinet.experiments import ConfigError, load_config, run_compare
    from verinet.tasks import TaskError

    try:
        cfg = load_config(config)
        updates = {}
        if local or ray_address:
            updates["ray"] = cfg.ray.model_copy(update={"local": local or cfg.ray.local,
                                                        "address": ray_address or cfg.ray.address})
        cfg = cfg.model_copy(update=updates)
        if dry_run:
            _dry_run(cfg, cluster)
            return
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            report = run_compare(cfg, out_dir=out, progress=progress)
        prom = _export_job_metrics(cfg, report.parent)
    except (ConfigError, TaskError, BackendError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM; a local Ray is shut down on the way out
        raise fail("interrupted; what was written is kept: run the same command again to resume", code=130) \
            from None
    console.print(f"metrics: {prom}")
    console.print(f"report: {report} (and {report.with_suffix('.html')})")


def _export_job_metrics(cfg: Any, out: Path) -> Path:
    """The job's agreement metrics (verinet_*) as a Prometheus textfile beside the report."""
    from verinet.serve.metrics import write_job_metrics

    with (out / "results.jsonl").open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    names = [m.name for m in cfg.ensemble_config().members]
    return Path(write_job_metrics(records, str(out / "metrics.prom"), members=names))


def _dry_run(cfg: Any, cluster: Optional[str]) -> None:
    from verinet.experiments import ConfigError
    from verinet.experiments.dryrun import dry_run

    nodes = None
    if cluster is not None:
        try:
            nodes = json.loads(cluster)
        except json.JSONDecodeError:
            nodes = None
        nodes = [nodes] if isinstance(nodes, dict) else nodes
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise ConfigError(f"--cluster: expected JSON like '[{{\"CPU\": 32, \"GPU\": 4}}]', got {cluster!r}")
    r = dry_run(cfg, nodes)
    console.print(f"[bold]placement[/] ({len(r['plan'].nodes)} node(s) declared)")
    console.print(r["summary"], highlight=False)
    t = Table(title=f"estimated cost for {r['problems']} problems")
    for col in ("member", "model", "non-embedding params"):
        t.add_column(col)
    for name, loc in r["locations"].items():
        t.add_row(name, loc, f"{r['parameters'][name]:.3g}")
    console.print(t)
    e = r["estimate"]
    console.print(f"ensemble: {e['ensemble_tokens']:.3g} tokens, {e['ensemble_flops']:.3g} FLOPs; "
                  f"baseline: {e['baseline_tokens']:.3g} tokens, {e['baseline_flops']:.3g} FLOPs "
                  f"(ensemble/baseline {e['flops_ratio']:.2f}x)")


@app.command("verify")
def verify(
    config: Annotated[Path, typer.Option("--config", "-c", help="Ensemble YAML, e.g. configs/ensemble-local.yaml")],
    family: Annotated[str, typer.Option("--family", "-f", help="arith, logic or gsm8k (with --data)")] = "arith",
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Problems.")] = 50,
    data: Annotated[Optional[Path], typer.Option(help="GSM8K-format JSONL (family gsm8k): the first --dev-n "
                                                 "problems pick the threshold, the next --n are scored.")] = None,
    seed: Annotated[int, typer.Option(help="Problem and topology seed.")] = 0,
    knob: Annotated[list[str], typer.Option("--knob", "-k", help="Generator knob KEY=VALUE, repeatable.")] = [],
    topology: Annotated[str, typer.Option(help="all_pairs, ring or k_random")] = "all_pairs",
    aggregation: Annotated[str, typer.Option(help="mean, vote, logodds, dawid_skene or one_coin")] = "mean",
    selection: Annotated[str, typer.Option(help="majority, weighted or best")] = "weighted",
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Earliest-error threshold on "
                         "P(valid); default: chosen per arm on a labelled dev split by best F1.")] = None,
    dev_n: Annotated[int, typer.Option("--dev-n", min=2, help="Dev problems for the threshold.")] = 20,
    baseline: Annotated[list[str], typer.Option(help="Zoo name or path of a single model to score in self mode.")] = [],
    local: Annotated[bool, typer.Option("--local", help="Run members in this process instead of Ray actors.")] = False,
    graphs: Annotated[Optional[Path], typer.Option(help="Write each problem's graph (PNG + GraphML) here.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the table as JSON here.")] = None,
) -> None:
    """Members solve, peers cross-verify, the graph decides; prints a per-arm table."""
    from verinet.backends import BackendError, EnsembleConfig, EnsembleConfigError, MemberSpec, load_ensemble_config
    from verinet.experiments.arms import score_arm
    from verinet.orchestration import open_members
    from verinet.tasks import TaskError

    try:
        cfg = load_ensemble_config(config)
        problems, dev = load_problems(family, n, seed=seed, knobs=knob, data=data,
                                      dev_n=dev_n if threshold is None else 0)
        n = len(problems)
        rows = []
        with open_members(cfg, local=local) as (caller, fmts):
            console.print(f"ensemble of {len(cfg.members)} ({topology}, {aggregation}, {selection}) on {n} {family} problems")
            rows.append(score_arm("ensemble", caller, fmts, problems, topology=topology, aggregation=aggregation,
                                  threshold=threshold, selection=selection, dev=dev, seed=seed).row())
        singles = [m for m in cfg.members if m.verifier != "prm"] + [  # a PRM writes no chain to self-verify
            MemberSpec(name=f"baseline-{Path(b).name}", backend="hf", model=b) for b in baseline]
        for spec in singles:
            one = EnsembleConfig(members=[spec], quorum=1, retries=cfg.retries, call_timeout_s=cfg.call_timeout_s)
            with open_members(one, local=True) as (caller, fmts):
                rows.append(score_arm(f"{spec.name} (self)", caller, fmts, problems, topology="self",
                                      aggregation="mean", threshold=threshold, selection=selection, dev=dev,
                                      seed=seed).row())
        if graphs is not None:
            _write_graphs(cfg, problems, graphs, topology, aggregation, selection, rows[0]["threshold"], seed)
    except (EnsembleConfigError, BackendError, TaskError, ValueError) as e:
        raise fail(str(e)) from None
    t = Table(title=f"verification on {n} {family} problems (earliest-error F1 vs the exact checker)")
    for col in ("arm", "accuracy", "EE-F1 own chains", "EE-F1 injected set", "threshold", "step validity", "tokens"):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for r in rows:
        t.add_row(r["arm"], f"{r['accuracy']:.3f}", _f(r["ee_f1_natural"]), _f(r["ee_f1_injected"]),
                  f"{r['threshold']:.2f}", f"{r['step_validity']:.3f}", f"{r['tokens']:,}")
    console.print(t)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        from verinet.experiments.compare import dumps_json  # strict JSON: an undefined F1 is null, not NaN

        out.write_text(dumps_json({"family": family, "n": n, "seed": seed, "topology": topology,
                                   "aggregation": aggregation, "selection": selection, "rows": rows}))
        console.print(f"wrote {out}")


def _f(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"  # nan: one class (erroneous or correct chains) was empty


def _write_graphs(cfg, problems, where: Path, topology, aggregation, selection, threshold, seed) -> None:
    from verinet.graph.export import draw_problem, from_node_link, write_graphml
    from verinet.orchestration import open_members
    from verinet.orchestration import run_verification

    where.mkdir(parents=True, exist_ok=True)
    with open_members(cfg, local=True) as (caller, fmts):
        run = run_verification(caller, fmts, problems, topology=topology, aggregation=aggregation,
                               threshold=threshold, selection=selection, seed=seed)
    for rep in run.batch.reports:
        g = from_node_link(rep.graph)
        stem = rep.problem_id.replace("/", "_")
        write_graphml(g, where / f"{stem}.graphml")
        draw_problem(g, where / f"{stem}.png", title=rep.problem_id)
    console.print(f"graphs: {where}")


if __name__ == "__main__":
    app()
