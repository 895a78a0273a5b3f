"""Task families with exact step checking, and a loader for GSM8K-format data.

    >>> fam = get_family("arith")
    >>> problem = fam.generate(seed=0, params={"steps": 3})
    >>> fam.check(problem, fam.gold_chain(problem).text).first_error
    -1
"""

from __future__ import annotations

from verinet.tasks.base import ANSWER_CUE, InjectionUnsupported, TaskError, TaskFamily, split_chain

FAMILY_NAMES = ("arith", "logic", "gsm8k", "arith_nl", "logic_nl")
_instances: dict[str, TaskFamily] = {}


def get_family(name: str) -> TaskFamily:
    """The family registered under ``name``; raises TaskError listing the known ones."""
    if name not in _instances:
        if name == "arith":
            from verinet.tasks.arith import ArithFamily as cls
        elif name == "logic":
            from verinet.tasks.logic import LogicFamily as cls
        elif name == "gsm8k":
            from verinet.tasks.gsm8k import Gsm8kFamily as cls
        elif name == "arith_nl":
            from verinet.tasks.arith_nl import ArithNLFamily as cls
        elif name == "logic_nl":
            from verinet.tasks.logic_nl import LogicNLFamily as cls
        else:
            raise TaskError(f"unknown task family {name!r}; choose one of {list(FAMILY_NAMES)}")
        _instances[name] = cls()
    return _instances[name]


def chain_budget(problems, length=len) -> int:
    """Room for a chain on these problems: 1.5 times the longest gold chain, plus 16, so a model's chain is
    never cut short where the gold one would fit. ``length`` measures a chain's text: characters by default,
    a tokenizer's count for a model's own tokens (the verification run, the probes and the zoo's evaluation
    size a chain's room from the gold chain this one way)."""
    return max((int(length(get_family(p.family).gold_chain(p).text) * 1.5) + 16 for p in problems), default=16)


__all__ = [
    "ANSWER_CUE",
    "chain_budget",
    "FAMILY_NAMES",
    "InjectionUnsupported",
    "TaskError",
    "TaskFamily",
    "get_family",
    "split_chain",
]
