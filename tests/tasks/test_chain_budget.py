"""One rule sizes a chain's room everywhere (the verification run, the probes, the zoo's evaluation)."""

from verinet.tasks import chain_budget, get_family


def test_the_budget_is_one_and_a_half_times_the_longest_gold_chain_per_problem_family():
    arith = get_family("arith").sample(5, seed=3, params={"steps": 4})
    logic = get_family("logic").sample(5, seed=3, params={"hops": 3})
    longest = max(len(get_family(p.family).gold_chain(p).text) for p in arith + logic)
    assert longest > max(len(get_family("arith").gold_chain(p).text) for p in arith)  # logic's chains are longer
    # mixed families: each problem's own family writes its gold chain (arith first must not decide for all)
    assert chain_budget(arith + logic) == int(longest * 1.5) + 16
    assert chain_budget(arith + logic, length=lambda text: len(text.split())) < chain_budget(arith + logic)
    assert chain_budget([]) == 16
