"""Who verifies whom: assign verifiers to the authors of chains.

Four topologies:

* ``all_pairs`` -- every verifier except the author itself checks the author's chains;
* ``ring``      -- each author is checked by the next member of the ring (the verifiers,
  in the order given); authors that are not members (a client, ``gold``) are spread round
  the ring from a position drawn with ``seed``;
* ``k_random``  -- ``k`` distinct verifiers other than the author, drawn with ``seed``;
* ``self``      -- the author checks only itself (the single-model baseline).

In every ensemble mode (all but ``self``) no author is ever its own verifier; a
configuration that could only be met that way (e.g. one member in ``all_pairs``)
raises ``ValueError`` naming what to change. Authors that are not verifiers
(``gold``, ``inject:<kind>``) are checked like any other author.
"""

from __future__ import annotations

import random
from typing import Literal

Topology = Literal["all_pairs", "ring", "k_random", "self"]
TOPOLOGIES: tuple[str, ...] = ("all_pairs", "ring", "k_random", "self")


def assign_verifiers(
    authors: list[str],
    verifiers: list[str],
    topology: Topology,
    k: int = 2,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Map each author to the verifiers that check its chains (in ``verifiers`` order).

    ``k`` is used by ``k_random`` only and must satisfy ``1 <= k <= `` the author's eligible
    verifiers: ``len(verifiers) - 1`` for an author that is a member, ``len(verifiers)`` for
    one that is not. The draw for an author depends on ``seed`` and the author's name only,
    so adding an author does not reshuffle the others; a caller that wants a fresh draw per
    request or problem passes a fresh ``seed`` (and records it).
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; choose one of {list(TOPOLOGIES)}")
    if not verifiers:
        raise ValueError("no verifiers given; list at least one member model")
    dup = sorted({v for v in verifiers if verifiers.count(v) > 1})
    if dup:
        raise ValueError(f"verifiers listed twice: {dup}; list each member once")
    authors = list(dict.fromkeys(authors))  # keep order, drop repeats (one author, many chains)
    n = len(verifiers)
    position = {v: i for i, v in enumerate(verifiers)}

    if topology == "self":
        missing = [a for a in authors if a not in position]
        if missing:
            raise ValueError(
                f"topology 'self': authors {missing} are not verifiers, so they cannot check "
                "themselves; add them to the verifiers or choose an ensemble topology"
            )
        return {a: [a] for a in authors}

    if n < 2 and any(a in position for a in authors):
        raise ValueError(
            f"topology {topology!r} needs at least 2 verifiers, got {n} ({verifiers}); "
            "an author would be its own only verifier. Add a member or use topology='self' "
            "for the single-model baseline"
        )

    if topology == "all_pairs":
        return {a: [v for v in verifiers if v != a] for a in authors}

    if topology == "ring":
        out: dict[str, list[str]] = {}
        outsiders = random.Random(f"verinet-topology:{seed}:ring").randrange(n)
        for a in authors:
            if a in position:
                out[a] = [verifiers[(position[a] + 1) % n]]
            else:  # not a member: spread such authors round the ring, from a seeded start
                out[a] = [verifiers[outsiders % n]]
                outsiders += 1
        return out

    # k_random
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an integer, got {k!r}")
    eligible = min(n - 1 if a in position else n for a in authors) if authors else n
    if not 1 <= k <= eligible:
        raise ValueError(
            f"topology 'k_random' needs 1 <= k <= the eligible verifiers (len(verifiers), less the author "
            f"when it is a member) = {eligible}, got k={k}; "
            + ("add members" if eligible < 1 else f"lower k to at most {eligible} or use 'all_pairs'")
        )
    out = {}
    for a in authors:
        pool = [v for v in verifiers if v != a]
        chosen = set(random.Random(f"verinet-topology:{seed}:{a}").sample(pool, k))
        out[a] = [v for v in verifiers if v in chosen]
    return out


def max_k(authors: list[str], verifiers: list[str]) -> int:
    """The largest ``k`` that ``k_random`` accepts for these authors (0: none)."""
    n = len(set(verifiers))
    return min((n - 1 if a in verifiers else n) for a in authors) if authors else n


__all__ = ["TOPOLOGIES", "Topology", "assign_verifiers", "max_k"]
