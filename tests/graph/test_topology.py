"""Who verifies whom: no author is ever its own only verifier in an ensemble mode."""

import pytest

from verinet.graph.topology import assign_verifiers, max_k

MEMBERS = ["a", "b", "c", "d"]


@pytest.mark.parametrize("topology", ["all_pairs", "ring", "k_random"])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_ensemble_modes_never_self_verify(topology, n):
    members = MEMBERS[:n]
    for seed in range(5):
        out = assign_verifiers(members + ["gold"], members, topology, k=1, seed=seed)
        for author, vs in out.items():
            assert vs, author
            assert author not in vs
            assert len(set(vs)) == len(vs)


def test_shapes():
    assert assign_verifiers(MEMBERS, MEMBERS, "all_pairs") == {
        "a": ["b", "c", "d"], "b": ["a", "c", "d"], "c": ["a", "b", "d"], "d": ["a", "b", "c"]}
    assert assign_verifiers(MEMBERS, MEMBERS, "ring") == {"a": ["b"], "b": ["c"], "c": ["d"], "d": ["a"]}
    out = assign_verifiers(MEMBERS, MEMBERS, "k_random", k=2, seed=3)
    assert all(len(v) == 2 for v in out.values())
    assert out == assign_verifiers(MEMBERS, MEMBERS, "k_random", k=2, seed=3)  # seeded
    assert out["a"] == assign_verifiers(["a"], MEMBERS, "k_random", k=2, seed=3)["a"]  # per author
    draws = {tuple(assign_verifiers(["a"], MEMBERS, "k_random", k=2, seed=s)["a"]) for s in range(20)}
    assert len(draws) > 1
    assert assign_verifiers(["gold"], MEMBERS, "all_pairs") == {"gold": MEMBERS}
    # repeated authors (one author, many chains) collapse
    assert assign_verifiers(["a", "a"], ["a", "b"], "ring") == {"a": ["b"]}


def test_self_mode_is_self():
    assert assign_verifiers(["big"], ["big"], "self") == {"big": ["big"]}
    assert assign_verifiers(MEMBERS, MEMBERS, "self") == {m: [m] for m in MEMBERS}
    with pytest.raises(ValueError, match="not verifiers"):
        assign_verifiers(["gold"], MEMBERS, "self")


@pytest.mark.parametrize("topology", ["all_pairs", "ring", "k_random"])
def test_one_member_ensemble_rejected(topology):
    with pytest.raises(ValueError, match="at least 2 verifiers.*topology='self'"):
        assign_verifiers(["a"], ["a"], topology, k=1)


@pytest.mark.parametrize("k", [0, 4, 10, -1])
def test_bad_k(k):
    with pytest.raises(ValueError, match="1 <= k <= the eligible verifiers"):
        assign_verifiers(MEMBERS, MEMBERS, "k_random", k=k)


def test_k_counts_the_eligible_verifiers():
    """An author that is not a member (a client) may be checked by every member."""
    assert max_k(["client"], MEMBERS) == len(MEMBERS)
    assert max_k(MEMBERS, MEMBERS) == len(MEMBERS) - 1
    assert assign_verifiers(["client"], MEMBERS, "k_random", k=len(MEMBERS)) == {"client": MEMBERS}
    with pytest.raises(ValueError, match="at most 4"):
        assign_verifiers(["client"], MEMBERS, "k_random", k=5)


@pytest.mark.parametrize("topology", ["ring", "k_random"])
def test_one_outside_author_is_spread_over_members_by_seed(topology):
    """ring and k=1 pick different members for different seeds (each member about equally often),
    and the same member for the same seed."""
    picks = [assign_verifiers(["client"], MEMBERS, topology, k=1, seed=s)["client"][0] for s in range(400)]
    counts = {m: picks.count(m) for m in MEMBERS}
    assert all(60 <= c <= 140 for c in counts.values()), counts  # 100 expected each
    assert picks[:20] == [assign_verifiers(["client"], MEMBERS, topology, k=1, seed=s)["client"][0]
                          for s in range(20)]


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown topology"):
        assign_verifiers(MEMBERS, MEMBERS, "star")
    with pytest.raises(ValueError, match="no verifiers"):
        assign_verifiers(MEMBERS, [], "all_pairs")
    with pytest.raises(ValueError, match="listed twice"):
        assign_verifiers(MEMBERS, ["a", "a", "b"], "all_pairs")
    with pytest.raises(ValueError, match="integer"):
        assign_verifiers(MEMBERS, MEMBERS, "k_random", k=1.5)
