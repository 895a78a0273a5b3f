"""Every committed zoo checkpoint loads with plain transformers and reproduces its card.

Tolerance: the card's small reproduction sample (20 problems per slice) is rerun with the
same seed; accuracy and step validity must match within 0.05 (one problem in 20), which
absorbs float differences between machines flipping a near-tie greedy choice.
"""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from verinet.zoo.config import ZooError
from verinet.zoo.evaluate import evaluate_slice
from verinet.zoo.model import load_checkpoint
from verinet.zoo.registry import MODELS_DIR, ladder, list_checkpoints, resolve, smallest

CHECKPOINTS = list_checkpoints()
TOL = 0.05


def test_the_ladder_is_committed():
    """At least four sizes over >= 25x parameters; the smallest at three or more seeds (of the ladder's
    own recipe: other recipes of the same size do not count)."""
    rungs = ladder()
    params = sorted({c["parameters"]["non_embedding"] for _, _, c in rungs})
    assert len(params) >= 4, params
    assert params[-1] / params[0] >= 25
    least = [n for n, _, c in rungs if c["parameters"]["non_embedding"] == params[0]]
    assert len(least) >= 3 and smallest() == least, least
    for name, _, card in CHECKPOINTS:
        assert {t["family"] for t in card["training"]["tasks"]} == {"arith", "logic"}, name


@pytest.mark.parametrize("name, path, card", CHECKPOINTS, ids=[n for n, _, _ in CHECKPOINTS])
def test_every_card_describes_the_weights_beside_it(name, path, card):
    """Weights replaced without a new card: zoo eval would otherwise reuse the old run's figures."""
    from verinet.zoo.card import describes_run
    from verinet.zoo.train import read_training_info

    assert describes_run(card, read_training_info(path)), f"{name}: card.json is for another run than training.json"


def test_committed_zoo_fits_the_package_budget():
    assert CHECKPOINTS, f"no zoo checkpoints with cards in {MODELS_DIR}"
    size = sum(f.stat().st_size for f in MODELS_DIR.rglob("*") if f.is_file())
    assert size <= 60 * 2**20, f"zoo is {size / 2**20:.1f} MiB"


@pytest.mark.parametrize("name, path, card", CHECKPOINTS, ids=[n for n, _, _ in CHECKPOINTS])
def test_checkpoint_reproduces_its_card(name, path, card):
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", use_safetensors=True).eval()
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]["total"]
    repro = card["repro"]
    for ref in repro["slices"]:
        got = evaluate_slice(model, tok, ref["family"], ref["params"], repro["n_per_slice"], seed=repro["seed"])
        assert got["accuracy"] == pytest.approx(ref["accuracy"], abs=TOL), (ref["params"], got)
        assert got["step_validity"] == pytest.approx(ref["step_validity"], abs=TOL), (ref["params"], got)


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ZooError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(ZooError, match="no zoo checkpoint 'nope'"):
        resolve("nope")
    src = CHECKPOINTS[0][1]
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (bad / f).write_bytes((src / f).read_bytes())
    with pytest.raises(ZooError, match="missing model.safetensors"):
        load_checkpoint(bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ZooError, match="corrupt"):
        load_checkpoint(bad)


def test_cards_have_what_a_reader_needs():
    for name, path, card in CHECKPOINTS:
        assert (path / "README.md").is_file()
        for key in ("total", "non_embedding"):
            assert card["parameters"][key] > 0
        t = card["training"]
        assert t["tokens"] > 0 and t["wall_s"] > 0 and "seed" in t
        for fam in ("arith", "logic"):
            assert fam in card["evaluation"]["by_family"]
        json.dumps(card)
