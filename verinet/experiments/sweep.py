"""Ensembles of K members (K swept, and K matched to the baseline's FLOPs) on the same problems.

Member j of a K-ensemble runs model ``j mod n`` of the ensemble's n models; members beyond
the n distinct models sample (temperature, seed j), so they are different solvers and
verifiers of the same weights. K = 1 is one model alone, with no one to check it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from verinet.backends.formats import PromptFormat
from verinet.experiments.callers import VirtualMembers
from verinet.experiments.config import CompareConfig
from verinet.experiments.cost import usage_cost
from verinet.graph.orchestrate import Caller, run_verification, solve
from verinet.schema import Problem
from verinet.tasks import get_family


def sweep_point(config: CompareConfig, ens: Caller, models: Sequence[str], formats: Mapping[str, PromptFormat],
                problems: Sequence[Problem], k: int, *, threshold: float, parameters: Mapping[str, float],
                unit: str) -> dict[str, Any]:
    sw, e = config.sweep, config.ensemble
    vm = VirtualMembers(ens, models, k, temperature=sw.temperature, base_temperature=config.sampling.temperature,
                        seed=config.seed)
    vformats = {name: formats[v.model] for name, v in vm.virtual.items()}
    model_of = {name: v.model for name, v in vm.virtual.items()}
    fam = get_family(problems[0].family)
    if k == 1:
        chains, res = solve(vm, vformats, problems, max_tokens=config.sampling.max_tokens, seed=config.seed)
        answers = [c.answer for c in next(iter(chains.values()))]
        usage = {m: {"solve": u} for m, u in res.usage.items()}
    else:
        run = run_verification(vm, vformats, problems, topology=sw.topology, k=min(e.k, k - 1),
                               aggregation=e.aggregation, threshold=threshold, selection=e.selection,
                               max_tokens=config.sampling.max_tokens, seed=config.seed, include_graph=False)
        answers = [r.final_answer for r in run.batch.reports]
        usage = run.usage
    correct = [a is not None and fam.normalize_answer(a) == fam.normalize_answer(p.answer)
               for p, a in zip(problems, answers)]
    cost = usage_cost(usage, parameters, model_of=model_of)
    return {"unit": unit, "k": k, "family": problems[0].family, "n": len(problems),
            "accuracy": sum(correct) / len(problems), "correct": correct, "cost": cost.as_dict(),
            "flops_per_problem": cost.flops / len(problems), "members": vm.members}
