"""`verinet compare --dry-run`: the GPU config is validated here, on a machine without GPUs or weights."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from verinet.cli import app
from verinet.experiments import ConfigError, load_config
from verinet.experiments.dryrun import dry_run
from verinet.experiments.cost import flops

GPU = Path(__file__).resolve().parents[2] / "configs" / "compare-gpu.yaml"
runner = CliRunner(env={"COLUMNS": "200"})


def test_gpu_config_plans_on_its_declared_node():
    r = dry_run(load_config(GPU))
    plan = r["plan"]
    big = plan["qwen7b"]
    assert big.tensor_parallel_size == 2 and big.strategy == "STRICT_PACK" and len(big.bundles) == 2
    small = [plan[f"qwen0.5b-{i}"] for i in range(1, 5)]
    assert all(m.num_gpus == 0.25 for m in small)
    assert len({m.gpus for m in small}) == 1  # the four share one GPU ...
    assert not set(small[0].gpus) & set(big.gpus)  # ... which is not one of the 7B's two
    e = r["estimate"]
    cfg = load_config(GPU)
    tokens = cfg.cost.tokens_per_problem["prefill"] + cfg.cost.tokens_per_problem["decode"]
    # all pairs: each 0.5B member solves and verifies the three others' chains
    assert e["ensemble_flops"] == pytest.approx(4 * flops(3.58e8, r["problems"] * tokens * 4))
    assert e["baseline_flops"] == pytest.approx(flops(6.53e9, r["problems"] * tokens * 2))


def test_cli_prints_the_plan_and_the_estimate():
    res = runner.invoke(app, ["compare", "--config", str(GPU), "--dry-run"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "group of 2 bundles (STRICT_PACK)" in out and "ensemble/baseline" in out
    assert "Qwen/Qwen2.5-7B-Instruct" in out


@pytest.mark.parametrize("cluster, needle", [
    ('[{"CPU": 32, "GPU": 2}]', "placement"),       # 3 GPUs needed
    ('[{"CPU": 32, "GPU": 1}, {"CPU": 32, "GPU": 1}]', "placement"),  # TP=2 must sit on one node
    ("not json", "--cluster: expected JSON"),
    ('"a string"', "--cluster: expected JSON"),
])
def test_a_cluster_that_cannot_hold_it_is_a_clear_error(cluster, needle):
    res = runner.invoke(app, ["compare", "--config", str(GPU), "--dry-run", "--cluster", cluster])
    assert res.exit_code == 2 and needle in " ".join(res.output.split()), res.output


def test_a_remote_model_without_a_parameter_count_is_named(tmp_path):
    data = yaml.safe_load(GPU.read_text())
    del data["cost"]["parameters"]["qwen7b"]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="qwen7b"):
        dry_run(load_config(p))


def test_local_zoo_checkpoints_are_counted_without_loading(tmp_path):
    r = dry_run(load_config(None), [{"CPU": 2}])
    assert r["parameters"]["zoo-l"] == 2_213_568 and r["parameters"]["zoo-xs-s0"] == 82_240


def test_the_prm_gpu_config_plans_and_counts_the_prm_as_a_verifier_only():
    cfg = load_config(GPU.with_name("compare-prm-gpu.yaml"))
    prm = next(m for m in cfg.ensemble_config().members if m.verifier == "prm")
    assert (prm.model, prm.backend, prm.step_tag, prm.valid_label) == ("Qwen/Qwen2.5-Math-PRM-7B", "vllm",
                                                                       "<extra_0>", 1)
    r = dry_run(cfg)
    assert r["plan"]["qwen-math-prm-7b"].num_gpus == 1
    tp = cfg.cost.tokens_per_problem
    t = tp["prefill"] + tp["decode"]
    n = r["problems"]
    # all pairs: each 0.5B solves and verifies the two other solvers' chains; the PRM verifies all three
    assert r["estimate"]["ensemble_tokens"] == pytest.approx(n * (3 * (t + 2 * t) + 3 * t))
    assert r["estimate"]["ensemble_flops"] == pytest.approx(3 * flops(3.58e8, n * 3 * t) + flops(6.54e9, n * 3 * t))
    assert "qwen-math-prm-7b" not in cfg.frontier_sizes()["ensemble"]  # it writes no chains to add up


def test_a_prm_cannot_be_the_baseline(tmp_path):
    data = yaml.safe_load(GPU.read_text())
    data["baseline"]["member"].update(verifier="prm", step_tag="<extra_0>")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="writes no chains"):
        load_config(p)


def _prm_cfg(tmp_path, **changes):
    data = yaml.safe_load(GPU.with_name("compare-prm-gpu.yaml").read_text())
    data["ensemble"] = {"members": yaml.safe_load(GPU.with_name("ensemble-prm-gpu.yaml").read_text())["members"]}
    for k, v in changes.items():
        data[k] = v
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_prm_members_are_refused_where_they_would_have_to_solve(tmp_path):
    with pytest.raises(ConfigError, match="cannot be a frontier model"):
        load_config(_prm_cfg(tmp_path, sweep={"sizes": {"a": ["qwen-math-prm-7b"]}, "ks": [1], "n": 2})
                    ).frontier_sizes()
    members = yaml.safe_load(GPU.with_name("ensemble-prm-gpu.yaml").read_text())["members"]
    prms = [dict(members[-1], name=f"prm{i}") for i in range(2)]
    with pytest.raises(ConfigError, match="none writes a chain"):
        load_config(_prm_cfg(tmp_path, ensemble={"members": prms}))
    with pytest.raises(ConfigError, match="ensemble: topology .k_random. needs"):  # k above the verifiers
        dry_run(load_config(_prm_cfg(tmp_path, ensemble={"members": members, "topology": "k_random", "k": 9})))


def test_the_frontier_cost_of_a_member_leaves_the_prm_out(tmp_path):
    from verinet.experiments.summary import frontier_flops, per_problem_flops

    cfg = load_config(_prm_cfg(tmp_path))
    assert cfg.solver_names() == ["qwen0.5b-1", "qwen0.5b-2", "qwen0.5b-3"]
    usage = {f"qwen0.5b-{i}": {"solve": [100, 50], "verify": [300, 0]} for i in (1, 2, 3)}
    usage["qwen-math-prm-7b"] = {"verify": [450, 0]}
    records = [{"chunk": {"usage": {"ensemble": usage, "baseline": {"qwen7b": {"solve": [100, 50]}}}}}]
    params = {**cfg.cost.parameters}
    f = per_problem_flops(cfg, records, params)
    assert f["member_solve"] == pytest.approx(flops(3.58e8, 150))
    # all pairs among the 3 solvers: each verifies 2 chains, 300 tokens -> 150 per chain; the frontier's
    # ring topology verifies one chain per member, and a member alone checks its own
    assert f["verify_one"] == pytest.approx(flops(3.58e8, 150))
    assert frontier_flops(cfg, f, 1) == pytest.approx(2 * flops(3.58e8, 150))
    assert frontier_flops(cfg, f, 3) == pytest.approx(3 * 2 * flops(3.58e8, 150))
    assert set(f) == {"baseline", "ensemble", "member_solve", "verify_one"}
