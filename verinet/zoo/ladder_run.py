"""Train a ladder of zoo configs in one call and grade solving by size on the hardest slices.

Meant for a lent GPU (docs/guide.md, "Training the ladder on a GPU"), where small models train
far faster than here but time is short: every config trains in its own ``verinet zoo train
--no-eval`` process, several at once on the one device, with worker processes building the
batches ahead. The weights and ``training.json`` land in ``OUT_ROOT/NAME``; the model card is
written afterwards on any machine by ``verinet zoo train --config CONFIG --out OUT_ROOT/NAME``,
which finds the run finished and only evaluates. The same code trains on a CPU.

On a lent GPU only a few files come back: ``--pack`` puts the whole output in one archive.

Grading: greedy accuracy on held-out problems of each hard slice, with 95% Wilson intervals. A
slice is graded by size when the largest model's interval lies above every smallest model's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from verinet.signals import stop_requests
from verinet.zoo.config import EXIT_RESUMABLE, ZooConfig, ZooError, load_zoo_config

#: the hardest slices of the solve-first mixture (configs/zoo/zoo-xs-sf-s0.yaml)
HARD_SLICES: list[tuple[str, dict[str, int]]] = [
    ("arith", {"steps": 6, "distractors": 0}),
    ("arith", {"steps": 4, "distractors": 2}),
    ("logic", {"hops": 4, "distractors": 2}),
]
#: HARD_SLICES as the commands' --slices text
HARD_SLICES_TEXT = ";".join(f"{f}:" + ",".join(f"{k}={v}" for k, v in p.items()) for f, p in HARD_SLICES)
GRADE_SEED = 9_000_000  # the zoo's held-out seed (verinet.zoo.evaluate.EVAL_SEED)


def parse_slices(text: str, option: str = "--slices") -> list[tuple[str, dict[str, int]]]:
    """'arith:steps=6;logic:hops=4,distractors=2' -> [("arith", {"steps": 6}), ...]."""
    from verinet.tasks import get_family

    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        family, _, kvs = part.partition(":")
        try:
            get_family(family.strip())
        except Exception:  # noqa: BLE001 - the registry's own error names the families
            raise ZooError(f"{option}: {family.strip()!r} in {part!r} is not a task family (arith, logic)") from None
        params = {}
        for kv in filter(None, kvs.split(",")):
            key, _, value = kv.partition("=")
            if not value.strip().isdigit():
                raise ZooError(f"{option}: {kv!r} in {part!r} is not KEY=INT")
            params[key.strip()] = int(value)
        out.append((family.strip(), params))
    if not out:
        raise ZooError(f"{option}: no slice given; e.g. 'arith:steps=6;logic:hops=4,distractors=2'")
    return out


CHILD_START_S = 15  # a `zoo train` process's imports and set-up before its budget starts counting
GRACE_S = 60  # past the budget, a run still going is terminated; on Ctrl-C, the wait for the runs to save
TERMINATE_WAIT_S = 10  # a hung run's time to end after SIGTERM, before SIGKILL
REPORT_EVERY_S = 60


def plan(configs: list[Path], *, sample_batches: int = 3) -> list[dict[str, Any]]:
    """Per config: name, parameters, steps, batch size, estimated tokens and the device it would use."""
    from verinet.zoo.data import ExampleBuilder, collate
    from verinet.zoo.model import build_model, count_parameters
    from verinet.zoo.tokenizer import build_tokenizer
    from verinet.zoo.train import resolve_device

    tok = build_tokenizer()
    rows, names = [], set()
    for path in configs:
        cfg: ZooConfig = load_zoo_config(path)
        if cfg.name in names:
            raise ZooError(f"{path}: a second config named {cfg.name!r}; each needs its own name (its output folder)")
        names.add(cfg.name)
        builder = ExampleBuilder(cfg, tok)
        per_batch = sum(int(collate(builder.batch(k), tok.pad_token_id)["attention_mask"].sum())
                        for k in range(sample_batches)) / sample_batches
        rows.append({"config": str(path), "name": cfg.name,
                     "non_embedding": count_parameters(build_model(cfg.size, tok, 0))["non_embedding"],
                     "steps": cfg.training.steps, "batch_size": cfg.training.batch_size,
                     "tokens_estimate": int(per_batch * cfg.training.steps),
                     "device": resolve_device(cfg.training.device)})
    return rows


def train_all(rows: list[dict[str, Any]], out_root: Path, *, parallel: int, loader_workers: int,
              budget_s: float | None = None, log=print,
              done: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Train every planned config, ``parallel`` at a time, each in its own process (logs appended to
    ``OUT_ROOT/NAME.log``). Returns {name: {"rc", "status", "seconds", "log"}}, filled into ``done`` as
    runs end; a failed run does not stop the rest. With ``budget_s`` every run stops (state saved,
    status "stopped") when that time is spent. On Ctrl-C or SIGTERM the running ones are sent SIGTERM
    (each saves its state after its current step), waited for (up to ``GRACE_S``, then killed) and
    recorded, and KeyboardInterrupt is raised. An error here stops the runs the same way."""
    out_root.mkdir(parents=True, exist_ok=True)
    deadline = None if budget_s is None else time.time() + budget_s
    pending, running = list(rows), {}
    done = {} if done is None else done
    last_report = time.time()
    # Signals only set a flag here: nothing is cut short mid-spawn or mid-wait. A Ctrl-C at the terminal reaches
    # the runs too (same process group), and each saves on its own; a second one stops them at once.
    with stop_requests() as stop:
        try:
            while (pending or running) and not stop:
                while pending and len(running) < max(1, parallel) and not stop:
                    r = pending.pop(0)
                    logf = out_root / f"{r['name']}.log"
                    cmd = [sys.executable, "-m", "verinet.cli", "zoo", "train", "--config", r["config"],
                           "--out", str(out_root / r["name"]), "--no-eval", "--loader-workers", str(loader_workers)]
                    if deadline is not None:
                        left = deadline - time.time() - CHILD_START_S  # the child's clock starts after its imports
                        if left < 1:
                            done[r["name"]] = {"rc": None, "status": "not started", "seconds": 0.0, "log": str(logf)}
                            log(f"{r['name']}: not started, the time budget is spent")
                            continue
                        cmd += ["--budget-s", f"{left:.0f}"]
                    fh = logf.open("a")
                    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
                    running[r["name"]] = (proc, fh, time.time(), logf)
                    log(f"started {r['name']} ({r['non_embedding']:,} parameters, {r['steps']:,} steps on {r['device']})")
                if time.time() - last_report >= REPORT_EVERY_S:  # the children's progress, in this process's log too
                    last_report = time.time()
                    for name, (_, _, _, logf) in running.items():
                        lines = [x for x in logf.read_text(errors="replace").splitlines() if x.strip()]
                        if lines:
                            log(f"  {name}: {lines[-1].strip()[:160]}")
                if deadline is not None and time.time() > deadline + GRACE_S:
                    # hung past its budget (a step that does not end, or set-up): its last saved state resumes
                    _stop_children([proc for proc, *_ in running.values()], TERMINATE_WAIT_S)
                _collect(running, done, log)
                time.sleep(0.5)
        finally:  # stopped by a signal, or an error here: no run outlives this call
            if running:
                names = ", ".join(running)
                _stop_children([proc for proc, *_ in running.values()], GRACE_S)  # first: a log may fail
                _collect(running, done, _quiet(log))
                _quiet(log)(f"{'interrupted' if stop else 'stopped after an error'}: {names}")
    if stop:
        raise KeyboardInterrupt
    return done


def _collect(running: dict, done: dict, log) -> None:
    """Move the runs that ended from ``running`` to ``done``, with their status."""
    for name, (proc, fh, t0, logf) in list(running.items()):
        if proc.poll() is None:
            continue
        fh.close()
        rc = proc.returncode
        status = ("finished" if rc == 0 else "stopped" if rc == EXIT_RESUMABLE else "interrupted" if rc == 130
                  else "killed" if rc < 0 else "failed")  # stopped, interrupted or killed: resumable from its state
        done[name] = {"rc": rc, "status": status, "seconds": round(time.time() - t0, 1), "log": str(logf)}
        del running[name]
        tail = "" if status != "failed" else " - " + logf.read_text()[-300:].strip().replace("\n", " | ")
        log(f"{name}: {status if status != 'failed' else 'FAILED rc ' + str(rc)} in {done[name]['seconds']:.0f} s{tail}")


def _quiet(log):
    """``log`` that cannot raise (a broken pipe to ``tee`` must not keep the runs from being recorded)."""
    def safe(text: str) -> None:
        try:
            log(text)
        except BaseException:  # noqa: BLE001 - rich turns a broken pipe into SystemExit
            pass
    return safe


def _stop_children(procs: list[subprocess.Popen], wait_s: float) -> None:
    """SIGTERM to every live one at once (each saves after its step), one shared wait, then SIGKILL."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.terminate()
    t_end = time.time() + wait_s
    for p in live:
        try:
            p.wait(max(0.0, t_end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def grade(models: dict[str, Path], slices: list[tuple[str, dict[str, int]]], n: int, *, seed: int = GRADE_SEED,
          device: str = "cpu", on_model=None, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Held-out greedy accuracy of every model on every slice, and the share of chains valid in every
    step (``valid``: a right answer can rest on invented steps), with Wilson intervals. Each accuracy's
    ``chance`` is the share of the slice's problems whose answer is its commonest one (always answering
    that: about 0.5 for True/False, and on arith mod 10 more than 0.1, since products make 0 common).
    Per slice, whether the largest model's interval lies above each smallest one's (``graded`` for
    accuracy, ``graded_valid`` for validity; sizes by non-embedding parameters).

    ``earlier``: a result of this function (e.g. read back from its file), for the same slices, ``n`` and
    ``seed``. Its rows are kept; a model named again is not graded again while its path and weights are
    the same (``fingerprint``), so a file can gather a ladder graded stage by stage."""
    results: dict[str, Any] = {"n": n, "seed": seed, "slices": [{"family": f, "params": p} for f, p in slices],
                               "models": {}}
    if earlier is not None and not same_grading(earlier, results):
        raise ZooError(f"earlier grades are for n={earlier.get('n')}, seed={earlier.get('seed')}, slices "
                       f"{earlier.get('slices')}, not n={n}, seed={seed}, slices {results['slices']}")
    kept = dict((earlier or {}).get("models", {}))
    results["models"] = {k: v for k, v in kept.items() if k not in models}
    for name, path in models.items():
        row, print_as = kept.get(name), "kept"
        if row is None or row.get("path") != str(path) or row.get("fingerprint") != fingerprint(path):
            row, print_as = _grade_one(path, slices, n, seed, device), "graded"
        results["models"][name] = row
        if on_model:
            on_model(name, row, results, print_as)
    results["graded"] = graded_by_size(results["models"], len(slices))
    results["graded_valid"] = graded_by_size(results["models"], len(slices), key="valid")
    results["smallest"], results["largest"] = size_groups(results["models"])
    return results


def _grade_one(path: Path, slices, n: int, seed: int, device: str) -> dict[str, Any]:
    from verinet.experiments.stats import rate
    from verinet.probes.stats import majority_rate
    from verinet.zoo.evaluate import solve_held_out
    from verinet.zoo.model import count_parameters, load_checkpoint

    model, tok = load_checkpoint(path, device=device)
    row = {"path": str(path), "fingerprint": fingerprint(path),
           "non_embedding": count_parameters(model)["non_embedding"], "accuracy": [], "valid": []}
    for family, params in slices:
        problems, checks = solve_held_out(model, tok, family, params, n, seed=seed)
        row["accuracy"].append(rate(sum(c.answer_correct for c in checks), n,
                                    chance=majority_rate([p.answer for p in problems])))
        row["valid"].append(rate(sum(c.first_error == -1 for c in checks), n))
    return row


def fingerprint(path: Path) -> dict[str, Any]:
    """What tells one set of weights at ``path`` from another: the training record's run (steps, tokens,
    wall time of every phase), or, without one, the weights file's size and modification time."""
    from verinet.zoo.train import read_training_info, run_identity

    info = read_training_info(path)
    if info is not None:
        return dict(zip(("steps", "tokens", "wall_s"), run_identity(info)))
    st = (path / "model.safetensors").stat()
    return {"weights_bytes": st.st_size, "weights_mtime_ns": st.st_mtime_ns}


def same_grading(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two grade results were taken on the same problems (slices, n and seed)."""
    return (a.get("n"), a.get("seed"), a.get("slices")) == (b.get("n"), b.get("seed"), b.get("slices"))


def size_groups(models: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(names of the smallest models, names of the largest), by non-embedding parameters."""
    sizes = sorted({r["non_embedding"] for r in models.values()})
    if not sizes:
        return [], []
    return ([k for k, r in models.items() if r["non_embedding"] == sizes[0]],
            [k for k, r in models.items() if r["non_embedding"] == sizes[-1]])


def graded_by_size(models: dict[str, dict[str, Any]], n_slices: int, *, key: str = "accuracy") -> list[bool] | None:
    """Per slice: does every largest model's interval of ``key`` lie above every smallest model's? None
    with one size."""
    small, large = size_groups(models)
    if small == large:  # one size, or none
        return None
    return [all(models[lg][key][i]["ci_low"] > models[sm][key][i]["ci_high"] for lg in large for sm in small)
            for i in range(n_slices)]


def pack(out_root: Path, target: Path, runs: dict[str, dict[str, Any]]) -> list[str]:
    """One .tar.gz of ``out_root``: every file, but a finished run's leftover training state; an
    unfinished run keeps its state, so a later call can resume it. Returns the archived names."""
    import tarfile

    from verinet.zoo.train import STATE_DIR, recover_interrupted_save

    for d in out_root.iterdir():  # a run killed mid-save: its state back under train_state, so it is packed
        if d.is_dir() and runs.get(d.name, {}).get("status") != "finished":
            recover_interrupted_save(d / STATE_DIR)
    names = []
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")  # a pack cut short never passes for a whole one
    with tarfile.open(partial, "w:gz") as tar:
        for f in sorted(out_root.rglob("*")):
            rel = f.relative_to(out_root)
            if not f.is_file() or f.resolve() == target.resolve() or f.name.endswith((".tgz", ".tar.gz", ".partial")):
                continue
            if len(rel.parts) > 1 and rel.parts[1] in ("train_state.tmp", "train_state.old"):
                continue  # a save cut short, or the one before the last
            if rel.parts[0] in runs and runs[rel.parts[0]].get("status") == "finished" and "train_state" in rel.parts[1:2]:
                continue
            tar.add(f, arcname=str(rel))
            names.append(str(rel))
    os.replace(partial, target)
    return names


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)
