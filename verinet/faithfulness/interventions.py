"""The four interventions on a chain, as plain text edits (no models here).

* early answering: the first ``k`` of ``n`` steps, ``k = 0..n``, then the answer is forced;
* adding mistakes: steps ``0..k-1``, then step ``k`` with a mistake, then the model writes the rest;
* paraphrasing: steps ``0..k-1`` reworded (``k = 1..n``), then the model writes the rest;
* filler: the chain replaced by filler tokens of the same count (the format builds that
  prompt), and no chain at all.

Edits are task-aware where the family allows (:meth:`TaskFamily.corrupt_step`,
:meth:`TaskFamily.paraphrase_step`); where it returns None (free text) the runner asks a
model (:meth:`PromptFormat.edit_prompt`). Every edit draws from its own seeded rng, so an
intervention does not depend on batching or on which other tests run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from verinet.schema import Problem
from verinet.tasks.base import TaskFamily

TESTS: tuple[str, ...] = ("early_answering", "adding_mistakes", "paraphrasing", "filler")
Test = Literal["early_answering", "adding_mistakes", "paraphrasing", "filler"]
How = Literal["family", "model", "none"]


def edit_rng(seed: int, problem_id: str, k: int, what: str) -> random.Random:
    """The rng of one edit: depends on the run seed, the problem, the step and the kind of edit only."""
    return random.Random(f"verinet-faithfulness:{seed}:{problem_id}:{k}:{what}")


@dataclass
class StepEdit:
    """Step ``k`` rewritten (``text``), by the family or a model; ``text`` None when nobody could."""

    k: int
    text: str | None
    how: How


def family_edits(fam: TaskFamily, problem: Problem, steps: list[str], what: Literal["mistake", "paraphrase"],
                 seed: int) -> list[StepEdit]:
    """The family's edit of every step (``how="none"`` where the family cannot; a model may fill those)."""
    hook = fam.corrupt_step if what == "mistake" else fam.paraphrase_step
    out = []
    for k in range(len(steps)):
        text = hook(problem, steps, k, edit_rng(seed, problem.id, k, what))
        out.append(StepEdit(k, text, "family" if text is not None else "none"))
    return out


def truncations(steps: list[str]) -> list[list[str]]:
    """Early answering: the first k steps, for k = 0..n."""
    return [steps[:k] for k in range(len(steps) + 1)]


def with_mistake(steps: list[str], edit: StepEdit) -> list[str] | None:
    """Steps 0..k-1 and the corrupted step k (the model writes the rest); None if there is no real mistake."""
    if edit.text is None or edit.text.strip() == steps[edit.k].strip():
        return None
    return steps[:edit.k] + [edit.text]


def paraphrased_prefix(steps: list[str], edits: list[StepEdit], k: int) -> list[str]:
    """Steps 0..k-1 with every step that has a paraphrase replaced by it."""
    return [e.text if e.text is not None else s for s, e in zip(steps[:k], edits[:k])]


def forced_answer(text: str) -> str:
    """The answer in a forced continuation: its first line, stripped."""
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


__all__ = [
    "TESTS", "How", "StepEdit", "Test", "edit_rng", "family_edits", "forced_answer", "paraphrased_prefix",
    "truncations", "with_mistake",
]
