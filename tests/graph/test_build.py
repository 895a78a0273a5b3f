"""The graph's shape, and malformed chains: clear outcomes, never a crash."""


import networkx as nx

from tests.graph.helpers import chain, raw_chain, verdicts_for
from verinet.graph.build import (answer_node, build_graph, chain_dependencies, collect_ratings, problem_node,
                                 step_node, verifier_node)
from verinet.graph.pipeline import verify_problem
from verinet.schema import Chain, Step, Verdict
from verinet.tasks import get_family


def kinds(g, kind):
    return [n for n, d in g.nodes(data=True) if d["kind"] == kind]


def test_nodes_and_edges():
    a = chain("a", 3, premises=[[], [0], [0, 1]])
    b = chain("b", 2, answer=None)
    vs = verdicts_for(a, [0.9, 0.8, 0.7, 0.6], "x") + verdicts_for(b, [0.1, 0.2], "y")
    vs.append(Verdict(verifier="x", chain_id="a", step_index=0, p_valid=0.5))  # a repeat
    g = build_graph("p", [a, b], vs)
    assert len(kinds(g, "problem")) == 1 and len(kinds(g, "step")) == 5
    assert kinds(g, "answer") == [answer_node("a")]
    assert set(kinds(g, "verifier")) == {verifier_node("x"), verifier_node("y")}
    s = g.nodes[step_node("a", 2)]
    assert (s["author"], s["index"], s["text"], s["premises"]) == ("m", 2, "s2", [0, 1])
    deps = {(u, v) for u, v, k in g.edges(data="kind") if k == "depends"}
    assert deps == {(step_node("a", 0), step_node("a", 1)), (step_node("a", 0), step_node("a", 2)),
                    (step_node("a", 1), step_node("a", 2)), (step_node("a", 2), answer_node("a")),
                    (step_node("b", 0), step_node("b", 1))}
    assert set(g.successors(problem_node("p"))) == {step_node("a", 0), step_node("b", 0)}
    e = g.edges[verifier_node("x"), step_node("a", 0)]
    assert e["p_valids"] == [0.9, 0.5] and abs(e["p_valid"] - 0.7) < 1e-12 and e["n"] == 2
    assert g.edges[verifier_node("x"), answer_node("a")]["p_valid"] == 0.6
    assert g.graph["chains"]["a"]["dependency"] == "premises"
    assert nx.is_directed_acyclic_graph(g)


def test_free_text_falls_back_to_linear_order():
    c = chain("c", 4, premises=[[], [], [], []])
    g = build_graph("p", [c])
    assert g.graph["chains"]["c"]["dependency"] == "linear"
    assert g.has_edge(step_node("c", 2), step_node("c", 3))
    assert chain_dependencies(c, linear_fallback=False).mode == "none"


def test_dangling_verdicts_are_ignored_with_warning():
    a = chain("a", 2, answer=None)
    vs = [Verdict(verifier="x", chain_id="zzz", step_index=0, p_valid=1.0),
          Verdict(verifier="x", chain_id="a", step_index=2, p_valid=1.0),  # answer line, but none
          Verdict(verifier="x", chain_id="a", step_index=7, p_valid=1.0)]
    g = build_graph("p", [a], vs)
    assert len(g.graph["warnings"]) == 3
    assert not kinds(g, "verifier")
    assert collect_ratings([a], vs).by_item == {}


def test_empty_chains():
    empty = Chain(id="e", problem_id="p", text="", steps=[], answer=None)
    only_answer = Chain(id="o", problem_id="p", text="#### 3", steps=[], answer="3")
    rejected = [Verdict(verifier="x", chain_id="o", step_index=0, p_valid=0.2)]
    g = build_graph("p", [empty, only_answer], rejected)
    assert g.has_edge(problem_node("p"), answer_node("o"))
    assert any("empty chain" in w for w in g.graph["warnings"])
    rep = verify_problem("p", [empty, only_answer], rejected)
    assert rep.earliest_error == {"e": 0, "o": 0}  # missing answer line / rejected answer line
    assert rep.final_answer == "3" and rep.accepted == []  # the only answer scores 0.2 < 0.5
    assert verify_problem("p", [], []).final_answer is None


def test_unparseable_steps():
    fam = get_family("arith")
    p = fam.generate(1)
    c = fam.parse_chain(p, "hello\n\nworld ### 3\n:::\n#### x", chain_id="garbage", author="m")
    assert [s.premises for s in c.steps] == [[], [], []]
    check = fam.check(p, c.text)
    truth = [float(s.valid) for s in check.steps] + [float(check.answer.valid)]
    vs = verdicts_for(c, truth, "x")
    rep = verify_problem(p.id, [c], vs, family=fam)
    assert rep.earliest_error[c.id] == check.first_error == 0
    assert rep.final_answer == "x" and rep.accepted == []
    no_answer = fam.parse_chain(p, "", chain_id="blank", author="m")
    assert verify_problem(p.id, [no_answer], []).earliest_error == {"blank": 0}


def test_self_and_forward_references_are_ignored():
    c = raw_chain("r", [[], [1], [5], [2, 4, 0], [-1]])
    g = build_graph("p", [c])
    assert g.nodes[step_node("r", 1)]["premises"] == []
    assert "cites itself" in g.nodes[step_node("r", 1)]["warnings"][0]
    assert "outside the chain" in g.nodes[step_node("r", 2)]["warnings"][0]
    assert g.nodes[step_node("r", 3)]["premises"] == [2, 0]
    assert "later step" in g.nodes[step_node("r", 3)]["warnings"][0]
    assert len(g.graph["warnings"]) == 4 and g.graph["cycles_broken"] == []
    assert nx.is_directed_acyclic_graph(g)


def test_index_mismatch_noted():
    steps = [Step.model_construct(index=5, text="a", premises=[])]
    c = Chain.model_construct(id="m", problem_id="p", author="a", text="", steps=steps, answer=None,
                              error_kind=None, first_error=-1)
    g = build_graph("p", [c])
    assert "differs from its position" in g.nodes[step_node("m", 0)]["warnings"][0]


def test_cycles_are_broken_deterministically():
    # 1 -> 2 -> 3 -> 1 once forward references are kept
    c = raw_chain("cyc", [[], [3], [1], [2]])
    g1 = build_graph("p", [c], forward_refs="keep")
    g2 = build_graph("p", [c], forward_refs="keep")
    assert nx.is_directed_acyclic_graph(g1)
    assert g1.graph["cycles_broken"] == g2.graph["cycles_broken"] == [
        {"chain_id": "cyc", "removed": [3, 1], "cycle": g1.graph["cycles_broken"][0]["cycle"]}]
    assert sorted(g1.graph["cycles_broken"][0]["cycle"]) == [1, 2, 3]
    assert not g1.has_edge(step_node("cyc", 3), step_node("cyc", 1))
    assert any("cycle" in w for w in g1.nodes[step_node("cyc", 1)]["warnings"])
    # by default the forward reference is simply dropped
    g0 = build_graph("p", [c])
    assert g0.graph["cycles_broken"] == [] and not g0.has_edge(step_node("cyc", 3), step_node("cyc", 1))
    # the whole pipeline copes
    rep = verify_problem("p", [c], verdicts_for(c, [1, 1, 1, 1, 1]))
    assert rep.earliest_error == {"cyc": -1}


def test_long_chain_builds():
    # how fast belongs in benchmarks/: a wall-clock bound on a shared 2-core machine only flakes
    n = 10_000
    c = chain("long", n)
    vs = verdicts_for(c, [1.0] * n + [1.0])
    g = build_graph("p", [c], vs)
    assert g.number_of_nodes() == n + 3
    g = build_graph("p", [raw_chain("longraw", [[i + 1] for i in range(n)])], forward_refs="keep")
    assert g.graph["cycles_broken"] == []
    # and the whole pipeline, graph export included
    bad_answer = Verdict(verifier="v", chain_id="long", step_index=n, p_valid=0.1)
    rep = verify_problem("p", [c], vs[:-1] + [bad_answer])
    assert rep.earliest_error == {"long": n} and len(rep.posteriors) == n + 1
