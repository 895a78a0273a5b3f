"""The compute frontier: each model size alone, and ensembles of K members of each size, on the same problems.

A point is (size, K). K = 1 is the size's first model solving and verifying its own steps (the
shape of the baseline arm). K >= 2: member j runs model ``j mod n`` of the size's n models
(distinct seeds first); members beyond the n distinct models sample (temperature, seed j), so
they are different solvers of the same weights; peers cross-verify with the sweep's topology.
Every point records per-problem correctness and earliest-error pairs, so the summary can put
intervals (resampling problems) on its accuracy and its earliest-error F1, and its cost from
the tokens it really processed, with the same FLOPs definition as the arms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from verinet.backends.formats import PromptFormat
from verinet.orchestration.views import VirtualMembers
from verinet.experiments.config import CompareConfig
from verinet.experiments.cost import usage_cost
from verinet.orchestration import Caller, run_verification
from verinet.schema import Problem
from verinet.tasks import get_family


def frontier_point(config: CompareConfig, caller: Caller, label: str, models: Sequence[str],
                   formats: Mapping[str, PromptFormat], problems: Sequence[Problem], k: int, *, threshold: float,
                   parameters: Mapping[str, float], member_shares: Mapping[str, tuple[float, float]],
                   unit: str) -> dict[str, Any]:
    sw, e = config.sweep, config.ensemble
    vm = VirtualMembers(caller, models, k, temperature=sw.temperature, base_temperature=config.sampling.temperature,
                        seed=config.seed)
    vformats = {name: formats[v.model] for name, v in vm.virtual.items()}
    model_of = {name: v.model for name, v in vm.virtual.items()}
    fam = get_family(problems[0].family)
    if k == 1:
        run = run_verification(vm, vformats, problems, topology="self", aggregation="mean", threshold=threshold,
                               selection="weighted", max_tokens=config.sampling.max_tokens, seed=config.seed,
                               include_graph=False)
    else:
        run = run_verification(vm, vformats, problems, topology=sw.topology, k=min(e.k, k - 1),
                               aggregation=e.aggregation, threshold=threshold, selection=e.selection,
                               max_tokens=config.sampling.max_tokens, seed=config.seed, include_graph=False)
    correct, ee = [], []
    for i, (p, rep) in enumerate(zip(problems, run.batch.reports)):
        a = rep.final_answer
        correct.append(a is not None and fam.normalize_answer(a) == fam.normalize_answer(p.answer))
        pairs = []
        for author in run.chains:
            c = run.chains[author][i]
            check = fam.check(p, c.text)
            pairs.append([rep.earliest_error.get(c.id), check.first_error, len(check.steps) + 1])  # + answer line
        ee.append(pairs)
    cost = usage_cost(run.usage, parameters, member_s=run.member_s, member_shares=member_shares, model_of=model_of,
                      wall_s=sum(run.wall_s.values()))
    per_member = [parameters[model_of[m]] for m in vm.members]
    return {"unit": unit, "label": label, "k": k, "family": problems[0].family, "n": len(problems),
            "models": list(models), "members": vm.members, "threshold": threshold,
            "parameters": sum(per_member), "parameters_per_member": per_member[0],
            "accuracy": sum(correct) / len(problems), "correct": correct, "ee": ee, "cost": cost.as_dict(),
            "flops_per_problem": cost.flops / len(problems)}
