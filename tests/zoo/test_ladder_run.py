"""Training a ladder in one call (verinet.zoo.ladder_run, `verinet zoo train-ladder`): batches built ahead
by worker processes, several models at once, and solving graded by size with Wilson intervals."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from verinet.cli import app
from verinet.zoo import ladder_run
from verinet.zoo.config import ZooError
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
    train(micro_config(steps=10), tmp_path / "r", stop_after=5, loader_workers=2)
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
    assert all(v["rc"] == 0 for v in summary["runs"].values())
    for name in ("tiny-a", "tiny-b"):
        assert (root / name / "model.safetensors").is_file() and not (root / name / "card.json").exists()
        acc = summary["grades"]["models"][name]["accuracy"][0]
        assert acc["n"] == 10 and acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert len(summary["grades"]["graded"]) == 1 and "graded by size" in r.output
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
    assert r.exit_code == 2 and "training failed for tiny-bad" in r.output
    summary = json.loads((root / "ladder.json").read_text())
    assert summary["runs"]["tiny-bad"]["rc"] != 0 and list(summary["grades"]["models"]) == ["tiny-ok"]
    assert summary["grades"]["graded"] is None  # one size: nothing to grade against


def test_the_dry_run_plans_without_training(tmp_path):
    root = tmp_path / "d"
    r = CliRunner().invoke(app, ["zoo", "train-ladder", "configs/zoo/zoo-s-sf.yaml", "configs/zoo/zoo-l-sf.yaml",
                                 "--out-root", str(root), "--dry-run"])
    assert r.exit_code == 0, r.output
    plan = json.loads((root / "ladder.json").read_text())["plan"]
    assert [p["name"] for p in plan] == ["zoo-s-sf", "zoo-l-sf"] and "runs" not in plan
    assert plan[1]["non_embedding"] > 5 * plan[0]["non_embedding"] and plan[0]["tokens_estimate"] > 10_000_000
    assert not (root / "zoo-s-sf").exists()


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

    def row(params, hits):
        return {"non_embedding": params, "accuracy": [rate(h, 100) for h in hits]}

    rows = {"xs-a": row(1, [30, 30]), "xs-b": row(1, [35, 60]), "m": row(8, [10, 10]), "l": row(25, [90, 65])}
    assert ladder_run.graded_by_size(rows, 2) == [True, False]  # slice 2: 65 of 100 against xs-b's 60
    assert ladder_run.graded_by_size({"xs-a": rows["xs-a"]}, 2) is None
