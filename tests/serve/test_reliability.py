"""Where the endpoint's reliabilities come from: a learned table, a rolling fit, or log-odds."""

import json

import pytest

from verinet.graph.aggregate import Reliability, ReliabilityTable
from verinet.graph.pipeline import verify_batch
from verinet.schema import Chain, Step, Verdict
from verinet.serve.config import ServeConfigError
from verinet.serve.reliability import REFIT_EVERY, Reliabilities, load_table

from .conftest import serve_config


def table(se=0.9, sp=0.8) -> ReliabilityTable:
    return ReliabilityTable("dawid_skene", 0.7, {"a": Reliability(se, sp, 0.85, 40), "b": Reliability(0.6, 0.55, 0.6, 40)},
                            n_items=40, n_iter=3, converged=True, log_likelihood=-12.5)


def test_table_round_trips_and_bad_tables_are_named(tmp_path):
    t = table()
    assert ReliabilityTable.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    (tmp_path / "one.json").write_text(json.dumps(t.to_dict()))
    assert load_table(tmp_path / "one.json") == t
    (tmp_path / "run.json").write_text(json.dumps({"0": t.to_dict(), "1": table(0.7).to_dict()}))
    assert load_table(f"{tmp_path / 'run.json'}#1").verifiers["a"].sensitivity == 0.7
    with pytest.raises(ValueError, match="holds 2 tables"):
        load_table(tmp_path / "run.json")
    with pytest.raises(ValueError, match="no table '7'"):
        load_table(f"{tmp_path / 'run.json'}#7")
    with pytest.raises(ValueError, match="no file"):
        load_table(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"method": "dawid_skene", "prior": 0.5,
                                                   "verifiers": [{"verifier": "a", "sensitivity": 2}]}))
    with pytest.raises(ValueError, match="not a reliability table"):
        load_table(tmp_path / "bad.json")
    with pytest.raises(ServeConfigError, match="no file"):
        serve_config(reliabilities=str(tmp_path / "missing.json")).reliability_table()


def test_fixed_table_is_used_not_refitted():
    chain = Chain(id="c", author="x", problem_id="p", text="s0\ns1", steps=[Step(index=0, text="s0"),
                                                                          Step(index=1, text="s1", premises=[0])])
    verdicts = [Verdict(verifier=v, chain_id="c", step_index=i, p_valid=p)
                for v, ps in (("a", [0.9, 0.1]), ("b", [0.9, 0.9])) for i, p in enumerate(ps)]
    t = table()
    rep = verify_batch([("p", [chain], verdicts)], aggregation="dawid_skene", reliabilities=t,
                       include_graph=False)
    got = {q.step_index: q.p_valid for q in rep.reports[0].posteriors}
    assert got[0] == pytest.approx(t.posterior({"a": 0.9, "b": 0.9}))
    assert got[1] == pytest.approx(t.posterior({"a": 0.1, "b": 0.9}))
    assert rep.reliabilities is t


def test_sources_in_order():
    r = Reliabilities(window=50, min_items=20)
    assert r.choose("mean").source == "none"
    first = r.choose("dawid_skene")
    assert (first.source, first.aggregation, first.table) == ("logodds", "logodds", None)
    r.observe({(i, 0): {"a": 0.9, "b": 0.8 if i % 3 else 0.2} for i in range(30)})
    rolled = r.choose("dawid_skene")
    assert rolled.source == "rolling" and rolled.n_items == 30 and set(rolled.table.verifiers) == {"a", "b"}
    assert r.choose("dawid_skene").table is rolled.table  # no refit until REFIT_EVERY new items
    r.observe({(i, 0): {"a": 0.1, "b": 0.2} for i in range(REFIT_EVERY)})
    assert r.choose("dawid_skene").table is not rolled.table and len(r.window) == 50  # bounded
    fixed = Reliabilities(table(), window=50, min_items=20)
    assert fixed.choose("one_coin").source == "table"
    with pytest.raises(ValueError, match="exceeds"):
        Reliabilities(window=10, min_items=20)


def test_cutoffs_are_fitted_per_verifier_and_drive_the_votes():
    """A likelihood verifier scores right steps ~0.1-0.5 and wrong ones ~0.001: its vote cutoff is
    fitted on labelled items, not fixed at 0.5, and the table's posteriors use it."""
    from verinet.graph.aggregate import dawid_skene, fit_cutoffs

    gold = {i: i % 3 != 0 for i in range(60)}
    ratings = {i: {"lik": (0.3 if gold[i] else 0.002), "half": (0.8 if gold[i] else 0.2)} for i in gold}
    cut = fit_cutoffs(ratings, gold)
    assert 0.002 < cut["lik"] < 0.3 and 0.2 < cut["half"] < 0.8
    fitted = dawid_skene(ratings, gold=gold, cutoffs=cut).table
    assert fitted.verifiers["lik"].sensitivity > 0.9 and fitted.verifiers["lik"].cutoff == cut["lik"]
    at_half = dawid_skene(ratings, gold=gold).table  # every "lik" vote says invalid at 0.5
    assert at_half.verifiers["lik"].sensitivity < 0.1
    assert fitted.posterior({"lik": 0.3}) > 0.9 > 0.1 > fitted.posterior({"lik": 0.002})
    assert ReliabilityTable.from_dict(fitted.to_dict()).verifiers["lik"].cutoff == cut["lik"]
    assert fit_cutoffs({0: {"a": 0.9}}, {0: True}) == {"a": 0.5}  # one class only


def test_a_table_must_name_every_member():
    from verinet.serve.engine import VerifyEngine

    cfg = serve_config(reliabilities=table().to_dict())  # rows for "a" and "b" only
    specs = cfg.ensemble_config(check_models=False).members
    with pytest.raises(ServeConfigError, match="no row for members"):
        VerifyEngine(cfg, {s.name: object() for s in specs}, specs, quorum=2)


def test_mixed_methods_do_not_refit_each_other():
    r = Reliabilities(window=100, min_items=10)
    r.observe({i: {"a": 0.9, "b": 0.8 if i % 4 else 0.1} for i in range(40)})
    ds, oc = r.choose("dawid_skene").table, r.choose("one_coin").table
    assert r.choose("dawid_skene").table is ds and r.choose("one_coin").table is oc
