"""Node-link JSON, GraphML and the PNG."""

import json

import networkx as nx

from tests.graph.helpers import chain, raw_chain, verdicts_for
from verinet.graph.export import draw_problem, from_node_link, node_key, read_graphml, write_graphml
from verinet.graph.pipeline import verify_problem


def report():
    a = chain("p/a", 3, premises=[[], [0], [0, 1]], answer="4")
    b = chain("p/b", 2, answer="5")
    r = raw_chain("p/r", [[], [1], [0]])  # a warning on step 1
    vs = (verdicts_for(a, [0.9, 0.2, 0.8, 0.7], "x") + verdicts_for(a, [1.0, 0.1, 0.9, 0.6], "y")
          + verdicts_for(b, [0.9, 0.9, 0.95], "x") + verdicts_for(r, [0.5, 0.5, 0.5, 0.5], "y"))
    return verify_problem("p", [a, b, r], vs)


def test_node_link_round_trip():
    rep = report()
    data = json.loads(json.dumps(rep.graph, allow_nan=False))
    g = from_node_link(data)
    assert isinstance(g, nx.DiGraph)
    assert "step:p/a:2" in g and g.nodes["step:p/a:2"]["premises"] == [0, 1]
    assert g.nodes["step:p/a:1"]["p_supported"] < 0.2
    assert g.nodes["answer:p/b"]["kind"] == "answer"
    assert g.edges["verifier:x", "step:p/a:0"]["p_valids"] == [0.9]
    assert g.graph["chains"]["p/a"]["earliest_error"] == 1
    assert g.graph["selection"]["answer"] == rep.final_answer
    assert node_key(("step", "c", 3)) == "step:c:3"
    # the report (graph included) serialises as a record
    assert json.loads(rep.model_dump_json())["graph"]["links"]


def test_graphml_round_trip(tmp_path):
    rep = report()
    g = from_node_link(rep.graph)
    path = write_graphml(g, tmp_path / "g.graphml")
    back = read_graphml(path)
    assert set(back.nodes) == set(g.nodes) and back.number_of_edges() == g.number_of_edges()
    assert json.loads(back.nodes["step:p/a:2"]["premises"]) == [0, 1]
    assert back.nodes["step:p/a:2"]["index"] == 2
    assert "cites itself" in json.loads(back.nodes["step:p/r:1"]["warnings"])[0]
    assert json.loads(back.graph["chains"])["p/a"]["author"] == "m"


def test_png(tmp_path):
    rep = report()
    path = draw_problem(from_node_link(rep.graph), tmp_path / "p.png", title="test problem")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    # a long chain is cut, an empty chain drawn as such, and a bare graph works too
    long = chain("long", 300)
    empty = chain("empty", 0, answer=None)
    rep2 = verify_problem("q", [long, empty], verdicts_for(long, [1.0] * 299 + [0.0, 1.0]))
    path2 = draw_problem(from_node_link(rep2.graph), tmp_path / "long.png", max_steps=12)
    assert path2.stat().st_size > 10_000
    from verinet.graph.build import build_graph

    assert draw_problem(build_graph("z", [chain("c", 2)]), tmp_path / "bare.png").stat().st_size > 5_000
