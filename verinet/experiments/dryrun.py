"""``verinet compare --dry-run``: validate a config against a declared cluster without loading a model.

It resolves every member's model (zoo name, local directory or Hugging Face id), places the
ensemble and the baseline on the declared nodes with the same planner the Ray driver uses
(tensor-parallel groups included), and estimates the job's tokens and FLOPs from the declared
per-problem token budget and each model's non-embedding parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from verinet.backends.config import EnsembleConfigError
from verinet.cluster.placement import plan
from verinet.experiments.config import CompareConfig, ConfigError
from verinet.experiments.cost import checkpoint_parameters, flops
from verinet.graph.topology import assign_verifiers


def _problems(config: CompareConfig) -> int:
    n = 0
    for i, spec in enumerate(config.tasks):
        if spec.family == "gsm8k" and Path(spec.path).is_file():
            with open(spec.path, encoding="utf-8") as f:
                config.check_file_length(i, sum(1 for line in f if line.strip()))
        n += spec.n
    return n


def dry_run(config: CompareConfig, cluster: Sequence[Mapping[str, float]] | None = None) -> dict[str, Any]:
    """The placement plan and a cost estimate; raises ConfigError saying what to fix."""
    nodes = list(cluster or config.cluster)
    if not nodes:
        raise ConfigError("--dry-run needs a declared cluster: `cluster: [{CPU: 32, GPU: 4}]` in the config "
                          "or --cluster '[{\"CPU\": 32, \"GPU\": 4}]'")
    members = config.all_members()
    locations = {}
    for m in members.members:
        try:
            locations[m.name] = m.model_location()
        except (EnsembleConfigError, ValueError, FileNotFoundError) as e:
            raise ConfigError(f"member {m.name}: {e}") from None
    try:
        placement = plan(members, nodes)
    except EnsembleConfigError as e:
        raise ConfigError(f"placement: {e}") from None
    params = {m.name: checkpoint_parameters(m, config.cost.parameters) for m in members.members}
    n = _problems(config)
    tp = config.cost.tokens_per_problem
    per_member = float(tp.get("prefill", 0)) + float(tp.get("decode", 0))
    ens_members = config.ensemble_config().members
    ens = [m.name for m in ens_members]
    solvers = [m.name for m in ens_members if m.verifier != "prm"]  # a process reward model only verifies
    try:
        assignment = assign_verifiers(solvers, ens, config.ensemble.topology, k=config.ensemble.k, seed=config.seed)
    except ValueError as e:
        raise ConfigError(f"ensemble: {e}") from None
    checks = {m: sum(m in vs for vs in assignment.values()) for m in ens}  # chains each member verifies
    verify_tokens = float(tp.get("prefill", 0)) + float(tp.get("decode", 0))  # a verifier reads question + chain
    ens_tokens = {m: n * ((per_member if m in solvers else 0) + checks[m] * verify_tokens) for m in ens}
    ens_flops = sum(flops(params[m], ens_tokens[m]) for m in ens)
    base = config.baseline.member.name
    base_flops = flops(params[base], n * (per_member + (verify_tokens if config.baseline.self_verify else 0)))
    return {
        "plan": placement, "summary": placement.summary(), "locations": locations, "parameters": params,
        "problems": n,
        "estimate": {"ensemble_flops": ens_flops, "baseline_flops": base_flops,
                     "ensemble_tokens": sum(ens_tokens.values()),
                     "baseline_tokens": n * (per_member + (verify_tokens if config.baseline.self_verify else 0)),
                     "flops_ratio": ens_flops / base_flops if base_flops else None},
    }
