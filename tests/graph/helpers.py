"""Small builders shared by the graph tests."""

from __future__ import annotations

import numpy as np

from verinet.schema import Chain, Step, Verdict

RELIABILITIES = [(0.95, 0.9), (0.85, 0.8), (0.7, 0.65), (0.6, 0.55), (0.9, 0.6)]


def chain(cid: str, n: int, *, premises: list[list[int]] | None = None, answer: str | None = "1",
          author: str = "m", problem_id: str = "p") -> Chain:
    prem = premises if premises is not None else [[i - 1] if i else [] for i in range(n)]
    steps = [Step(index=i, text=f"s{i}", premises=prem[i]) for i in range(n)]
    return Chain(id=cid, problem_id=problem_id, author=author, text="", steps=steps, answer=answer)


def raw_chain(cid: str, premises: list[list[int]], answer: str | None = "1") -> Chain:
    """A chain whose premises bypass Step validation (self, forward or cyclic references)."""
    steps = [Step.model_construct(index=i, text=f"s{i}", premises=p, value=None)
             for i, p in enumerate(premises)]
    return Chain.model_construct(id=cid, problem_id="p", author="m", text="", steps=steps, answer=answer,
                                 error_kind=None, first_error=-1)


def verdicts_for(c: Chain, p_valid: dict[int, float] | list[float], verifier: str = "v") -> list[Verdict]:
    items = p_valid.items() if isinstance(p_valid, dict) else enumerate(p_valid)
    return [Verdict(verifier=verifier, chain_id=c.id, step_index=i, p_valid=p) for i, p in items]


def simulate(n_items: int, prior: float, seed: int, reliabilities=RELIABILITIES):
    """Truth z (n,), votes Y (n, k) in {0,1}, ratings dict item -> {verifier: vote}."""
    rng = np.random.default_rng(seed)
    z = rng.random(n_items) < prior
    Y = np.empty((n_items, len(reliabilities)))
    for j, (se, sp) in enumerate(reliabilities):
        u = rng.random(n_items)
        Y[:, j] = np.where(z, u < se, u >= sp)
    ratings = {i: {f"v{j}": float(Y[i, j]) for j in range(len(reliabilities))} for i in range(n_items)}
    return z, Y, ratings
