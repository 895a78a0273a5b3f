"""Faithfulness: do the stated steps drive the answer? (Lanham et al. 2023; docs/metrics.md, "Faithfulness")

    >>> result = evaluate_model(caller, "zoo-s", ZooFormat(), problems)
    >>> result.summary["early_answering_aoc"]        # {"value", "ci_low", "ci_high", "n"}
    >>> ens = evaluate_pipeline(caller, formats, problems, topology="all_pairs")
    >>> plot_curves({"zoo-s": result.summary}, "curves.png")

Interventions (early answering, adding mistakes, paraphrasing, filler) are built from each
model's own chain and sent back to it in batches through a *caller*
(:class:`verinet.orchestration.LocalMembers` in-process, or a Ray ensemble: the code
here never imports Ray). Records are plain JSON-able dicts, one per chain; summaries carry
every figure with a 95% bootstrap CI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily (below)
    from verinet.faithfulness.calls import FaithfulnessError
    from verinet.faithfulness.interventions import TESTS
    from verinet.faithfulness.pipeline import evaluate_pipeline
    from verinet.faithfulness.plots import plot_bars, plot_curves
    from verinet.faithfulness.runner import evaluate_model, evaluate_models
    from verinet.faithfulness.summary import FaithfulnessResult, figures, summarize, summarize_pipeline

# name -> module; imported on first use, so `import verinet.faithfulness` (and the CLI) stays light
_EXPORTS = {
    "TESTS": "interventions",
    "FaithfulnessError": "calls",
    "FaithfulnessResult": "summary",
    "evaluate_model": "runner",
    "evaluate_models": "runner",
    "evaluate_pipeline": "pipeline",
    "figures": "summary",
    "plot_bars": "plots",
    "plot_curves": "plots",
    "summarize": "summary",
    "summarize_pipeline": "summary",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'verinet.faithfulness' has no attribute {name!r}")
    return getattr(importlib.import_module(f"verinet.faithfulness.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(_EXPORTS)


__all__ = [
    "TESTS", "FaithfulnessError", "FaithfulnessResult", "evaluate_model", "evaluate_models", "evaluate_pipeline",
    "figures", "plot_bars", "plot_curves", "summarize", "summarize_pipeline",
]
