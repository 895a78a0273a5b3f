"""Training a ladder in one call (verinet.zoo.ladder_run, `verinet zoo train-ladder`): batches built ahead
by worker processes, several models at once, and solving graded by size with Wilson intervals."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from verinet.cli import app
from verinet.probes.stats import majority_rate
from verinet.zoo import ladder_run
from verinet.zoo.config import ZooConfig, ZooError
from verinet.zoo.evaluate import held_out
from verinet.zoo.model import load_checkpoint
from verinet.zoo.train import train

from .conftest import micro_config


def test_batches_built_by_workers_train_the_same_weights(tmp_path):
    a = train(micro_config(steps=6), tmp_path / "a")
    b = train(micro_config(steps=6), tmp_path / "b", loader_workers=2)
    assert a.tokens == b.tokens and a.losses == pytest.approx(b.losses, abs=1e-6)
    wa, wb = load_checkpoint(tmp_path / "a")[0].state_dict(), load_checkpoint(tmp_path / "b")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_run_stopped_early_and_resumed_with_workers_ends_where_an_unbroken_run_does(tmp_path):
    train(micro_config(steps=10), tmp_path / "r", stop_after=7, loader_workers=2)  # state of step 5 kept
    assert not (tmp_path / "r" / "training.json").exists()
    resumed = train(micro_config(steps=10), tmp_path / "r", loader_workers=2)
    unbroken = train(micro_config(steps=10), tmp_path / "u")
    assert resumed.steps == 10 and resumed.tokens == unbroken.tokens
    wa, wb = load_checkpoint(tmp_path / "r")[0].state_dict(), load_checkpoint(tmp_path / "u")[0].state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def _config(tmp_path, name: str, layers: int, **extra) -> str:
    cfg = micro_config(steps=4).model_dump(mode="json")
    cfg.update(name=name, **extra)
    cfg["size"]["layers"] = layers
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_the_cli_trains_several_at_once_and_grades_them_by_size(tmp_path):
    small, large = _config(tmp_path, "tiny-a", 1), _config(tmp_path, "tiny-b", 2)
    root = tmp_path / "ladder"
    r = CliRunner().invoke(app, ["zoo", "train-ladder", small, large, "--out-root", str(root), "--parallel", "2",
                                 "--loader-workers", "1", "--slices", "arith:steps=1,distractors=0", "--n", "10"])
    assert r.exit_code == 0, r.output
    summary = json.loads((root / "ladder.json").read_text())
    assert [p["name"] for p in summary["plan"]] == ["tiny-a", "tiny-b"]
    assert summary["plan"][0]["non_embedding"] < summary["plan"][1]["non_embedding"]
    assert all(v["rc"] == 0 and v["status"] == "finished" for v in summary["runs"].values())
    assert summary["grades"]["smallest"] == ["tiny-a"] and summary["grades"]["largest"] == ["tiny-b"]
    for name in ("tiny-a", "tiny-b"):
        assert (root / name / "model.safetensors").is_file() and not (root / name / "card.json").exists()
        acc, valid = (summary["grades"]["models"][name][k][0] for k in ("accuracy", "valid"))
        assert acc["n"] == valid["n"] == 10 and acc["ci_low"] <= acc["value"] <= acc["ci_high"]
        gold = [p.answer for p in held_out("arith", {"steps": 1, "distractors": 0}, 10, ladder_run.GRADE_SEED)]
        assert acc["chance"] == majority_rate(gold) and valid["chance"] is None
        assert valid["ci_low"] <= valid["value"] <= valid["ci_high"]
    assert len(summary["grades"]["graded"]) == len(summary["grades"]["graded_valid"]) == 1
    assert "graded by size" in r.output and "chains valid" in r.output and "(chance " in r.output
    # a finished run is not retrained: `--no-eval` again returns at once with the same record
    info = json.loads((root / "tiny-a" / "training.json").read_text())
    r = CliRunner().invoke(app, ["zoo", "train", "--config", small, "--out", str(root / "tiny-a"), "--no-eval"])
    assert r.exit_code == 0 and json.loads((root / "tiny-a" / "training.json").read_text()) == info


def test_a_failed_run_is_reported_and_the_rest_still_graded(tmp_path):
    good = _config(tmp_path, "tiny-ok", 1)
    bad = _config(tmp_path, "tiny-bad", 1, training={**micro_config(steps=4).training.model_dump(mode="json"),
                                                       "init_from": str(tmp_path / "no-such-checkpoint")})
    root = tmp_path / "l"
    r = CliRunner().invoke(app, ["zoo", "train-ladder", good, bad, "--out-root", str(root),
                                 "--slices", "arith:steps=1", "--n", "10"])
    assert r.exit_code == 2 and "not finished: tiny-bad (failed)" in r.output
    summary = json.loads((root / "ladder.json").read_text())
    assert summary["runs"]["tiny-bad"]["status"] == "failed" and list(summary["grades"]["models"]) == ["tiny-ok"]
    assert "no-such-checkpoint" in (root / "tiny-bad.log").read_text()
    assert summary["grades"]["graded"] is None  # one size: nothing to grade against


def test_the_dry_run_plans_without_training(tmp_path):
    root = tmp_path / "d"
    r = CliRunner().invoke(app, ["zoo", "train-ladder", "configs/zoo/zoo-s-sf.yaml", "configs/zoo/zoo-l-sf.yaml",
                                 "--out-root", str(root), "--dry-run"])
    assert r.exit_code == 0, r.output
    plan = json.loads((root / "plan.json").read_text())["plan"]
    assert [p["name"] for p in plan] == ["zoo-s-sf", "zoo-l-sf"] and not (root / "ladder.json").exists()
    assert plan[1]["non_embedding"] > 5 * plan[0]["non_embedding"] and plan[0]["tokens_estimate"] > 10_000_000
    assert not (root / "zoo-s-sf").exists()


@pytest.mark.parametrize("family", ["arith", "logic"])
def test_the_one_family_ladders_differ_in_size_seed_and_the_largest_sizes_rate(tmp_path, family):
    # configs/zoo/{arith,logic}-only: the sizes compared on a family's hardest slices at equal tokens (docs/guide.md)
    configs_dir = Path(__file__).resolve().parents[2] / "configs" / "zoo"
    paths = sorted((configs_dir / f"{family}-only").glob("*.yaml"))
    r = CliRunner().invoke(app, ["zoo", "train-ladder", *map(str, paths), "--out-root", str(tmp_path), "--dry-run"])
    assert r.exit_code == 0, r.output
    rows = {p["name"]: p for p in json.loads((tmp_path / "plan.json").read_text())["plan"]}
    plan = {name: row["non_embedding"] for name, row in rows.items()}
    assert sorted(plan) == [f"{family}-{s}" for s in ("l", "m", "s", "xs-s0", "xs-s1", "xs-s2")]
    assert plan[f"{family}-l"] >= 25 * plan[f"{family}-xs-s0"]
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in paths}
    assert {c["training"]["seed"] for n, c in configs.items() if n.startswith(f"{family}-xs")} == {0, 1, 2}
    # l takes a lower peak rate than the smaller sizes (configs/zoo/arith-only/arith-l.yaml says why)
    assert configs[f"{family}-l"]["training"]["lr"] == 0.001
    assert {c["training"]["lr"] for n, c in configs.items() if n != f"{family}-l"} == {0.003}
    rest = [{k: v for k, v in c.items() if k not in ("name", "size")} | {"training": {
        k: v for k, v in c["training"].items() if k not in ("seed", "lr")}} for c in configs.values()]
    assert all(r == rest[0] for r in rest) and rest[0]["tasks"][0]["family"] == family and len(rest[0]["tasks"]) == 1
    for size in ("xs", "s", "m", "l"):  # the solve-first ladder's sizes and slices
        sf = yaml.safe_load((configs_dir / f"zoo-{size}-sf{'-s0' if size == 'xs' else ''}.yaml").read_text())
        assert configs[f"{family}-{size}{'-s0' if size == 'xs' else ''}"]["size"] == sf["size"]
        assert rest[0]["tasks"][0]["params"] == next(t["params"] for t in sf["tasks"] if t["family"] == family)
    twin = yaml.safe_load((configs_dir / "arith-only" / "arith-m.yaml").read_text())  # same batch, lr, tokens
    assert rest[0]["training"] | {"steps": 0} == {k: v for k, v in twin["training"].items()
                                                  if k not in ("seed", "lr")} | {"steps": 0}
    arith_m = ladder_run.plan([configs_dir / "arith-only" / "arith-m.yaml"])[0]["tokens_estimate"]
    assert abs(rows[f"{family}-m"]["tokens_estimate"] / arith_m - 1) < 0.05  # equal tokens: logic's examples are longer
    assert rest[0]["objectives"] == twin["objectives"] == {"solve": 1.0, "verify": 0.0, "force": 0.0}


@pytest.mark.parametrize("family, steps", [("arith", 1200), ("logic", 400)])
def test_a_ladders_continuation_is_one_schedule_for_every_size(family, steps):
    # configs/zoo/{arith,logic}-only/continued: the same steps for every size, so the continued ladder stays
    # at equal tokens and schedule (docs/guide.md); each starts from its own size's base run. 0.4 of the base's
    # steps in both families: the bases are at equal tokens (the test above), so the continuations are too.
    only = Path(__file__).resolve().parents[2] / "configs" / "zoo" / f"{family}-only"
    bases = {p.stem: ZooConfig.model_validate(yaml.safe_load(p.read_text())) for p in only.glob("*.yaml")}
    cont = {p.stem: (ZooConfig.model_validate(yaml.safe_load(p.read_text())), p.read_text())
            for p in (only / "continued").glob("*.yaml")}
    assert sorted(cont) == sorted(bases)
    schedules = set()
    for stem, (cfg, text) in cont.items():
        base = bases[stem]
        assert cfg.name == f"{stem}-more" and cfg.size == base.size and cfg.tasks == base.tasks
        assert cfg.objectives == base.objectives and 5 * cfg.training.steps == 2 * base.training.steps
        assert cfg.training.init_from == f"runs/{family}-only/{stem}"  # where the base config's own command puts it
        assert f"--config configs/zoo/{family}-only/{stem}.yaml --out runs/{family}-only/{stem} " in text
        assert f"--config configs/zoo/{family}-only/continued/{stem}.yaml --out runs/{family}-only/{stem}-more " in text
        schedules.add(json.dumps(cfg.training.model_dump(exclude={"init_from"}), sort_keys=True))
    assert len(schedules) == 1
    schedule = json.loads(schedules.pop())  # the schedule docs/guide.md and the configs' headers state
    assert {k: schedule[k] for k in ("steps", "batch_size", "lr", "seed")} == {"steps": steps, "batch_size": 64,
                                                                              "lr": 0.001, "seed": 7}
    for stem in bases:  # the base's own command puts its run where the continuation reads it
        assert f"--config configs/zoo/{family}-only/{stem}.yaml --out runs/{family}-only/{stem} " \
            in (only / f"{stem}.yaml").read_text()


def test_the_two_family_ladder_continues_every_arith_size_on_the_solve_first_mixture():
    # configs/zoo/two-family: each continued arith-only size trained on both families on one schedule, so at
    # equal tokens (docs/guide.md)
    zoo = Path(__file__).resolve().parents[2] / "configs" / "zoo"
    sf = ZooConfig.model_validate(yaml.safe_load((zoo / "zoo-xs-sf-s0.yaml").read_text()))
    arith = {p.stem: ZooConfig.model_validate(yaml.safe_load(p.read_text()))
             for p in (zoo / "arith-only" / "continued").glob("*.yaml")}
    both = {p.stem: (ZooConfig.model_validate(yaml.safe_load(p.read_text())), p.read_text())
            for p in (zoo / "two-family").glob("*.yaml")}
    assert sorted(both) == sorted(s.replace("arith-", "both-") for s in arith)
    schedules = set()
    for stem, (cfg, text) in both.items():
        base = stem.replace("both-", "arith-")
        assert cfg.name == stem and cfg.size == arith[base].size
        assert cfg.tasks == sf.tasks and cfg.objectives == sf.objectives  # the solve-first recipe's mixture
        assert cfg.training.init_from == f"runs/arith-only/{base}-more"  # the continued base's own command
        assert f"--config configs/zoo/arith-only/continued/{base}.yaml --out runs/arith-only/{base}-more " in text
        assert f"--config configs/zoo/two-family/{stem}.yaml --out runs/two-family/{stem} " in text
        schedules.add(json.dumps(cfg.training.model_dump(exclude={"init_from"}), sort_keys=True))
    assert len(schedules) == 1
    schedule = json.loads(schedules.pop())  # the schedule docs/guide.md and the configs' headers state
    assert {k: schedule[k] for k in ("steps", "batch_size", "lr", "seed")} == {"steps": 600, "batch_size": 64,
                                                                              "lr": 0.001, "seed": 11}
    tokens = {row["tokens_estimate"] for row in ladder_run.plan(sorted((zoo / "two-family").glob("*.yaml")))}
    assert len(tokens) == 1 and 5.5e6 < tokens.pop() < 7.5e6  # 6.4M measured (docs/guide.md)
    more = {p.stem: (ZooConfig.model_validate(yaml.safe_load(p.read_text())), p.read_text())
            for p in (zoo / "two-family" / "continued").glob("*.yaml")}
    assert sorted(more) == sorted(both)
    for stem, (cfg, text) in more.items():  # the same mixture and schedule again, another data seed
        first = both[stem][0]
        assert cfg.name == f"{stem}-more" and (cfg.size, cfg.tasks, cfg.objectives) == (first.size, first.tasks,
                                                                                        first.objectives)
        assert cfg.training.model_dump(exclude={"init_from"}) == first.training.model_dump(exclude={"init_from"}) | {
            "seed": 13}
        assert cfg.training.init_from == f"runs/two-family/{stem}"
        assert f"--config configs/zoo/two-family/{stem}.yaml --out runs/two-family/{stem} " in text
        assert f"--config configs/zoo/two-family/continued/{stem}.yaml --out runs/two-family/{stem}-more " in text


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ZooError, match="'algebra'"):
        ladder_run.parse_slices("algebra:steps=2")
    with pytest.raises(ZooError, match="KEY=INT"):
        ladder_run.parse_slices("arith:steps=six")
    same = _config(tmp_path, "dup", 1)
    r = CliRunner().invoke(app, ["zoo", "train-ladder", same, same, "--out-root", str(tmp_path / "x"), "--dry-run"])
    assert r.exit_code == 2 and "a second config named 'dup'" in r.output


def test_grading_needs_the_largest_interval_above_every_smallest():
    from verinet.experiments.stats import rate

    def row(params, hits, valid=(0, 0)):
        return {"non_embedding": params, "accuracy": [rate(h, 100) for h in hits], "valid": [rate(v, 100) for v in valid]}

    rows = {"xs-a": row(1, [30, 30]), "xs-b": row(1, [35, 60]), "m": row(8, [10, 10]), "l": row(25, [90, 65], [5, 40])}
    assert ladder_run.graded_by_size(rows, 2) == [True, False]  # slice 2: 65 of 100 against xs-b's 60
    assert ladder_run.graded_by_size(rows, 2, key="valid") == [False, True]  # 5 of 100 valid is not clear of 0
    assert ladder_run.graded_by_size({"xs-a": rows["xs-a"]}, 2) is None


def test_arith_accuracy_starts_well_above_a_tenth():
    # the chance level graded accuracy carries: on arith mod 10 products make 0 far commoner than a tenth
    problems = held_out("arith", {"steps": 6, "distractors": 0}, 300, ladder_run.GRADE_SEED)
    assert 0.2 < majority_rate([p.answer for p in problems]) < 0.35
    assert Counter(p.answer for p in problems).most_common(1)[0][0] == "0"


def test_a_deadline_saves_the_state_and_the_run_resumes_on_the_same_trajectory(tmp_path):
    import time

    stopped = train(micro_config(steps=8), tmp_path / "d", deadline=time.time())  # stops after its first step
    assert stopped.steps == 1 and (tmp_path / "d" / "train_state" / "state.json").is_file()
    resumed = train(micro_config(steps=8), tmp_path / "d")
    unbroken = train(micro_config(steps=8), tmp_path / "u")
    assert resumed.losses == pytest.approx(unbroken.losses, abs=1e-6)  # the partial window was kept
    wa, wb = load_checkpoint(tmp_path / "d")[0].state_dict(), load_checkpoint(tmp_path / "u")[0].state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def _send_at(step_wanted: int, *signals):
    import os

    def on_step(step, loss, tps):
        if step == step_wanted:
            for sig in signals:
                os.kill(os.getpid(), sig)
    return on_step


def test_a_signal_saves_the_state_and_the_run_resumes_on_the_same_trajectory(tmp_path, sigint_caught):
    import signal

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stopped = train(micro_config(steps=8), tmp_path / "d", on_step=_send_at(3, signal.SIGTERM), stop_on_signals=True)
    assert (stopped.steps, stopped.stopped_by) == (3, "SIGTERM")
    assert json.loads((tmp_path / "d" / "train_state" / "state.json").read_text())["step"] == 3  # off the schedule
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # put back
    again = train(micro_config(steps=8), tmp_path / "d", on_step=_send_at(6, signal.SIGINT), stop_on_signals=True)
    assert (again.steps, again.stopped_by) == (6, "SIGINT")
    resumed = train(micro_config(steps=8), tmp_path / "d")
    unbroken = train(micro_config(steps=8), tmp_path / "u")
    assert resumed.stopped_by is None and resumed.steps == 8
    assert resumed.losses == pytest.approx(unbroken.losses, abs=1e-6)


def test_a_second_ctrl_c_interrupts_at_once_and_an_ignored_one_stays_ignored(tmp_path, sigint_caught):
    import signal

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(micro_config(steps=8), tmp_path / "a", on_step=_send_at(3, signal.SIGINT, signal.SIGINT),
              stop_on_signals=True)
    assert signal.getsignal(signal.SIGINT) is before
    assert not (tmp_path / "a" / "train_state").exists()  # at once: no save at step 3, none scheduled before 5
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job inherits it
    try:
        full = train(micro_config(steps=8), tmp_path / "b", on_step=_send_at(3, signal.SIGINT), stop_on_signals=True)
        assert (full.steps, full.stopped_by) == (8, None)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_without_stop_on_signals_a_library_caller_keeps_its_handlers(tmp_path):
    import signal

    seen = []
    train(micro_config(steps=2), tmp_path / "p", on_step=lambda *a: seen.append(signal.getsignal(signal.SIGTERM)))
    assert seen == [signal.getsignal(signal.SIGTERM)] * 2


def test_saves_reach_the_disk_before_they_are_renamed_into_place(tmp_path, monkeypatch):
    import verinet.zoo.train as zoo_train

    flushed = []
    real = zoo_train._fsync
    monkeypatch.setattr(zoo_train, "_fsync", lambda p: (flushed.append(str(p.relative_to(tmp_path))), real(p)))
    train(micro_config(steps=6), tmp_path / "f")
    for f in ("model.safetensors", "optim.pt", "state.json", ""):  # a state's files and its directory ...
        assert f"f/train_state.tmp/{f}".rstrip("/") in flushed, (f, flushed)
    i = flushed.index("f/train_state.tmp")
    assert flushed[i + 1] == "f"  # ... then the directory that records its rename
    assert flushed.index("f/model.safetensors") < flushed.index("f/training.json.tmp")  # the weights, then the record
    assert flushed[-1] == "f"


def test_a_save_killed_between_its_renames_resumes_from_the_newest_complete_state(tmp_path):
    import os
    import shutil

    def steps_seen(where):
        seen = []
        train(micro_config(steps=15), where, on_step=lambda step, *_: seen.append(step))
        return seen

    r = tmp_path / "r"
    train(micro_config(steps=15), r, stop_after=5)  # state of step 5
    shutil.copytree(r / "train_state", tmp_path / "at5")
    train(micro_config(steps=15), r, stop_after=5)  # state of step 10
    # killed after the first rename: the new state complete in .tmp, the previous one in .old
    os.replace(r / "train_state", r / "train_state.tmp")
    shutil.copytree(tmp_path / "at5", r / "train_state.old")
    assert steps_seen(r) == list(range(11, 16))  # the newer one, not the stale .old
    # killed while .tmp was written (no state.json yet) after a first rename left only .old
    r2 = tmp_path / "r2"
    shutil.copytree(tmp_path / "at5", r2 / "train_state.old")
    (r2 / "train_state.tmp").mkdir()
    assert steps_seen(r2) == list(range(6, 16))
    unbroken = train(micro_config(steps=15), tmp_path / "u")
    assert train(micro_config(steps=15), r2).losses == pytest.approx(unbroken.losses, abs=1e-6)
    # the pack of an unfinished run killed mid-save holds its state, where a resume finds it
    import tarfile

    root = tmp_path / "ladder"
    shutil.copytree(tmp_path / "at5", root / "tiny" / "train_state.tmp")
    ladder_run.pack(root, tmp_path / "p.tgz", {"tiny": {"status": "killed"}})
    with tarfile.open(tmp_path / "p.tgz") as tar:
        assert "tiny/train_state/state.json" in tar.getnames()


def _wait_for(path, proc=None, timeout_s: float = 180) -> None:
    import time

    t_end = time.time() + timeout_s
    while not path.is_file() and (proc is None or proc.poll() is None) and time.time() < t_end:
        time.sleep(0.1)
    assert path.is_file(), f"{path} did not appear (process {'ended' if proc and proc.poll() is not None else 'slow'})"


def _stopped_step(output: str) -> int:
    import re

    found = re.search(r"stopped at step (\d+) of", " ".join(output.split()))  # rich wraps long lines
    assert found, output
    return int(found.group(1))


def test_ctrl_c_outside_the_training_loop_exits_130_not_failed(tmp_path, monkeypatch):
    """In set-up or evaluation Ctrl-C is still the user's stop: 130 (train-ladder records 'interrupted',
    resumable), not click's 'Aborted!' and 1 ('failed')."""
    import verinet.zoo.train as zoo_train

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo_train, "train", interrupted)
    small = _config(tmp_path, "tiny-int", 1)
    r = CliRunner().invoke(app, ["zoo", "train", "--config", small, "--out", str(tmp_path / "i"), "--no-eval"])
    assert r.exit_code == 130, r.output
    assert "interrupted before any state was saved" in " ".join(r.output.split())
    monkeypatch.undo()
    train(micro_config(steps=10), tmp_path / "i", stop_after=5)  # a saved state
    monkeypatch.setattr(zoo_train, "train", interrupted)
    r = CliRunner().invoke(app, ["zoo", "train", "--config", small, "--out", str(tmp_path / "i"), "--no-eval"])
    assert r.exit_code == 130 and "the run keeps its last saved state in" in " ".join(r.output.split()), r.output
    monkeypatch.undo()  # trained to the end, then Ctrl-C while it evaluates
    import verinet.zoo.cli as zoo_cli

    assert CliRunner().invoke(app, ["zoo", "train", "--config", small, "--out", str(tmp_path / "e"),
                                    "--no-eval"]).exit_code == 0
    monkeypatch.setattr(zoo_cli, "_full_evaluation", interrupted)
    r = CliRunner().invoke(app, ["zoo", "train", "--config", small, "--out", str(tmp_path / "e")])
    assert r.exit_code == 130 and "the weights in" in r.output and "evaluates them without training again" in \
        " ".join(r.output.split()), r.output


def test_the_cli_saves_its_state_on_sigterm_and_exits_resumable(tmp_path):
    import signal
    import subprocess
    import sys

    from verinet.zoo.config import EXIT_RESUMABLE

    long = _config(tmp_path, "tiny-term", 1, training={**micro_config(steps=4).training.model_dump(mode="json"),
                                                         "steps": 100_000, "checkpoint_every": 7})
    out = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "verinet.cli", "zoo", "train", "--config", long, "--out",
                             str(out), "--no-eval"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(out / "train_state" / "state.json", proc)  # a first save: the loop runs, its handler is in place
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_RESUMABLE, output
    assert "(SIGTERM), state saved" in " ".join(output.split()), output
    step = _stopped_step(output)
    assert step >= 7
    assert json.loads((out / "train_state" / "state.json").read_text())["step"] == step


def test_sigterm_to_train_ladder_stops_its_runs_records_and_packs_them(tmp_path):
    import signal
    import subprocess
    import sys
    import tarfile

    long = _config(tmp_path, "tiny-all", 1, training={**micro_config(steps=4).training.model_dump(mode="json"),
                                                        "steps": 100_000, "checkpoint_every": 7})
    root, archive = tmp_path / "all", tmp_path / "all.tgz"
    proc = subprocess.Popen([sys.executable, "-m", "verinet.cli", "zoo", "train-ladder", long, "--out-root",
                             str(root), "--pack", str(archive), "--slices", "arith:steps=1", "--n", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(root / "tiny-all" / "train_state" / "state.json", proc)  # the run's loop, its handler in place
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted; runs: tiny-all stopped" in " ".join(output.split()), output
    assert json.loads((root / "ladder.json").read_text())["runs"]["tiny-all"]["rc"] == 75
    step = _stopped_step((root / "tiny-all.log").read_text())
    with tarfile.open(archive) as tar:
        state = json.loads(tar.extractfile("tiny-all/train_state/state.json").read())
    assert state["step"] == step  # the save on SIGTERM, packed


def test_an_error_in_train_all_stops_and_records_its_runs(tmp_path):
    import signal

    long = _config(tmp_path, "tiny-err", 1, training={**micro_config(steps=4).training.model_dump(mode="json"),
                                                        "steps": 100_000})
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def failing_log(text):
        if text.startswith("started"):
            raise OSError("log failed")

    done: dict = {}
    with pytest.raises(OSError, match="log failed"):
        ladder_run.train_all(ladder_run.plan([long]), tmp_path / "e", parallel=1, loader_workers=0,
                             log=failing_log, done=done)
    assert done["tiny-err"]["rc"] is not None  # it ended, and was recorded
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_spent_budget_stops_the_runs_and_the_pack_keeps_their_state(tmp_path):
    import tarfile

    long = _config(tmp_path, "tiny-long", 1, training={**micro_config(steps=4).training.model_dump(mode="json"),
                                                         "steps": 100_000})
    root, archive = tmp_path / "b", tmp_path / "b.tgz"
    r = CliRunner().invoke(app, ["zoo", "train-ladder", long, "--out-root", str(root), "--budget-s", "20",
                                 "--pack", str(archive), "--slices", "arith:steps=1", "--n", "10"])
    assert r.exit_code == 2 and "not finished: tiny-long (stopped)" in r.output, r.output
    summary = json.loads((root / "ladder.json").read_text())
    assert summary["runs"]["tiny-long"]["rc"] == 75 and summary["grades"]["models"] == {}
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "tiny-long/train_state/state.json" in names and "ladder.json" in names and "tiny-long.log" in names
    assert "stopped at step" in (root / "tiny-long.log").read_text()


def test_the_pack_leaves_out_a_finished_runs_state(tmp_path):
    import tarfile

    root = tmp_path / "p"
    for name in ("done", "open"):
        (root / name / "train_state").mkdir(parents=True)
        (root / name / "train_state" / "state.json").write_text("{}")
        (root / name / "model.safetensors").write_text("w")
    (root / "ladder.json").write_text("{}")
    names = ladder_run.pack(root, tmp_path / "p.tgz", {"done": {"status": "finished"}, "open": {"status": "stopped"}})
    with tarfile.open(tmp_path / "p.tgz") as tar:
        assert sorted(tar.getnames()) == sorted(names)
    assert "done/train_state/state.json" not in names and "open/train_state/state.json" in names
    assert "done/model.safetensors" in names and "ladder.json" in names


def test_a_budget_spent_before_a_run_starts_is_reported(tmp_path):
    root = tmp_path / "n"
    r = CliRunner().invoke(app, ["zoo", "train-ladder", _config(tmp_path, "tiny-late", 1), "--out-root", str(root),
                                 "--budget-s", "2", "--slices", "arith:steps=1", "--n", "10"])
    assert r.exit_code == 2 and "tiny-late (not started)" in r.output and "not graded by size" in r.output
    assert not (root / "tiny-late").exists()


def test_the_gpu_script_runs_the_call_and_returns_the_archive_in_parts(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_ladder.sh"
    fake = tmp_path / "bin"
    fake.mkdir()
    # a python3 that installs nothing and plays a training call stopped by its budget: it writes the pack
    (fake / "python3").write_text("""#!/usr/bin/env bash
[ "$2" = pip ] && exit 0
echo "args: $*"
[ -n "${FAIL_EARLY:-}" ] && { echo "no such checkpoint"; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in --pack) head -c 40000000 /dev/urandom > "$2";; --out-root) mkdir -p "$2"; echo '{}' > "$2/ladder.json";; esac
  shift
done
echo "training stopped"; exit 75
""")
    (fake / "python3").chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "OUT": str(out),
           "LADDER_ROOT": str(tmp_path / "ladder-sf"), "TMPDIR": str(tmp_path)}
    for k in ("CONFIGS", "GRADE_WITH", "SLICES", "PACK"):  # the script's defaults
        env.pop(k, None)
    r = subprocess.run(["bash", str(script), "device"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 75, r.stdout + r.stderr
    parts = sorted(p.name for p in out.iterdir() if p.name.startswith("ladder-sf.tgz.part"))
    assert parts == ["ladder-sf.tgz.part0", "ladder-sf.tgz.part1", "ladder-sf.tgz.part2"]
    assert all((out / p).stat().st_size <= 15 * 2**20 for p in parts) and len(list(out.iterdir())) <= 8
    log = (out / "run.log").read_text()
    assert "training stopped" in log and (out / "ladder.json").is_file()
    assert "zoo train-ladder configs/zoo/zoo-s-sf.yaml configs/zoo/zoo-m-sf.yaml configs/zoo/zoo-l-sf.yaml " in log
    assert "--grade-with zoo-xs-sf-s0,zoo-xs-sf-s1,zoo-xs-sf-s2 " in log and "--slices" not in log
    assert f"--pack {tmp_path}/ladder-sf.tgz" in log  # the default archive: in TMPDIR, named after the root
    # another ladder through the same call
    env.update(CONFIGS="configs/zoo/arith-only/arith-xs-s0.yaml configs/zoo/arith-only/arith-l.yaml", GRADE_WITH="",
               SLICES="arith:steps=6,distractors=0;arith:steps=4,distractors=2", LADDER_ROOT=str(tmp_path / "arith-only"))
    for p in out.iterdir():
        p.unlink()
    r = subprocess.run(["bash", str(script), "device"], env=env, capture_output=True, text=True, cwd=tmp_path)
    log = (out / "run.log").read_text()
    assert r.returncode == 75 and "train-ladder configs/zoo/arith-only/arith-xs-s0.yaml configs/zoo/arith-only/" \
        "arith-l.yaml --out-root" in log and "--grade-with  --budget-s" in log \
        and "--slices arith:steps=6,distractors=0;arith:steps=4,distractors=2 --pack" in log
    assert sorted(p.name for p in out.iterdir() if ".tgz.part" in p.name) == [f"arith-only.tgz.part{i}" for i in range(3)]
    # the same call again, failing before it packs: the first call's archive must not come back as its result
    for p in out.iterdir():
        p.unlink()
    r = subprocess.run(["bash", str(script), "device"], env={**env, "FAIL_EARLY": "1"}, capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 2 and not [p for p in out.iterdir() if ".tgz" in p.name]


def test_the_gpu_script_is_valid_and_refuses_to_run_off_the_device(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_ladder.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    r = subprocess.run(["bash", str(script), "device"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "OUT is set on the device machine only" in r.stderr
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
