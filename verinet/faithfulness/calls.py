"""Batched model calls over a *caller* (``verinet.orchestration.Caller``).

A :class:`Round` collects prompts for any number of members, then sends each member
all of its prompts in one ``generate`` call, every member in the same ``call_each`` (so
Ray actors work concurrently), and hands every text back to the code that asked for
it. Identical prompts of one member are sent once (decoding is greedy), ordered by
length so that engines that batch in input order pad less. No Ray here:
the caller may be :class:`~verinet.orchestration.LocalMembers` or a Ray ensemble.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from verinet.backends.base import Usage


class FaithfulnessError(RuntimeError):
    """A faithfulness run that cannot go on; the message says what failed and what to do."""


class Round:
    """One batched ``generate`` per member; call :meth:`add` any number of times, then :meth:`run` once."""

    def __init__(self, usage: dict[str, Usage] | None = None) -> None:
        self.usage = usage if usage is not None else {}
        self._prompts: dict[str, dict[str, list[Callable[[str], None]]]] = defaultdict(dict)
        self._max_tokens: dict[str, int] = defaultdict(int)

    def add(self, member: str, prompt: str, max_tokens: int, then: Callable[[str], None]) -> None:
        """Ask ``member`` to continue ``prompt`` (greedy, at most ``max_tokens``); ``then(text)`` gets the text."""
        self._prompts[member].setdefault(prompt, []).append(then)
        self._max_tokens[member] = max(self._max_tokens[member], int(max_tokens))

    def __len__(self) -> int:
        return sum(len(p) for p in self._prompts.values())

    def run(self, caller: Any, *, seed: int | None = None) -> None:
        if not self._prompts:
            return
        # shortest first: prompts of a similar length batch together (less padding, similar stops)
        order = {m: sorted(p, key=len) for m, p in self._prompts.items()}
        calls = {m: ("generate", (prompts,), {"max_tokens": self._max_tokens[m], "temperature": 0.0, "seed": seed})
                 for m, prompts in order.items()}
        res = caller.call_each(calls)
        failed = [m for m in order if m not in res.results]
        if failed:
            errors = getattr(res, "errors", {}) or {}
            why = "; ".join(f"{m}: {errors.get(m, 'no answer')}" for m in failed)
            raise FaithfulnessError(f"members did not answer a generate call: {why}")
        for m, prompts in order.items():
            result = res.results[m]
            texts = result.texts
            if len(texts) != len(prompts):
                raise FaithfulnessError(f"member {m} returned {len(texts)} texts for {len(prompts)} prompts")
            u = getattr(result, "usage", None)
            if isinstance(u, Usage):
                self.usage[m] = self.usage.get(m, Usage()) + u
            for prompt, text in zip(prompts, texts):
                for then in self._prompts[m][prompt]:
                    then(text)
        self._prompts.clear()
        self._max_tokens.clear()


__all__ = ["FaithfulnessError", "Round"]
