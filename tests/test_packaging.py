"""Packaging: what the wheel carries, the dependency ranges against constraints.txt, and CI's script.

The wheel itself is built, installed into a fresh venv and run from outside the source tree by
.ci/run's wheel step; these tests check the inputs that step relies on.
"""

from __future__ import annotations

import glob
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import verinet
from verinet.experiments import ConfigError, load_config
from verinet.schema import PACKAGED_CONFIGS, resolve_config_path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PKG = Path(verinet.__file__).resolve().parent


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[_norm(name)] = Version(version)
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


# --- package data ----------------------------------------------------------------------------

def package_data_files() -> list[Path]:
    """Files under verinet/ that the package-data globs of pyproject.toml select, matched as setuptools
    matches them (``glob`` with ``recursive=True``: ``*`` stays within one directory, ``**`` crosses them;
    fnmatch's ``*`` would cross ``/`` and pass a glob that leaves nested files out)."""
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["verinet"]
    found = {Path(p) for g in globs for p in glob.glob(str(PKG / g), recursive=True)}
    return sorted(p for p in found if p.is_file() and "__pycache__" not in p.parts)


def test_wheel_carries_every_checkpoint_file():
    selected = set(package_data_files())
    models = [p for p in (PKG / "zoo" / "models").rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in models)
    missing = [p.relative_to(PKG).as_posix() for p in models if p not in selected]
    assert not missing, f"zoo files left out of the wheel by pyproject's package-data: {missing}"


def test_wheel_carries_every_config():
    selected = {p.relative_to(PKG / "configs").as_posix() for p in package_data_files()
                if p.is_relative_to(PKG / "configs")}
    shipped = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*") if p.is_file()}
    assert shipped and shipped <= selected, f"configs left out of the wheel: {sorted(shipped - selected)}"


def test_packaged_configs_are_the_top_level_configs():
    """One copy: verinet/configs is a link to configs/, so the two can never drift apart."""
    assert (PKG / "configs").is_symlink() and PACKAGED_CONFIGS.resolve() == (ROOT / "configs").resolve()


def test_shipped_config_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("configs/compare-local.yaml") == PACKAGED_CONFIGS / "compare-local.yaml"
    assert load_config("configs/compare-local.yaml").name == "default"
    # A local file of that name wins over the shipped one.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "compare-local.yaml").write_text("name: mine\n")
    assert load_config("configs/compare-local.yaml").name == "mine"
    with pytest.raises(ConfigError, match="configs/nope.yaml: config file not found"):
        load_config("configs/nope.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("compare-local.yaml")  # only configs/... paths fall back


# --- dependencies ----------------------------------------------------------------------------

def test_every_dependency_has_lower_and_upper_bounds():
    for req in declared():
        ops = {s.operator for s in req.specifier}
        assert ops & {">=", "=="} and ops & {"<", "<=", "=="}, f"{req}: needs a lower and an upper bound"


def test_constraints_pin_every_declared_dependency_inside_its_range():
    pins = constraints()
    for req in declared():
        name = _norm(req.name)
        assert name in pins, f"{req.name} is declared but constraints.txt does not pin it"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside the declared {req.specifier}"


def test_known_api_floors():
    reqs = {_norm(r.name): r for r in declared()}
    # from_pretrained(dtype=...) arrived in transformers 4.56.
    assert not reqs["transformers"].specifier.contains("4.55.9")
    assert reqs["transformers"].specifier.contains("4.56.0")
    assert constraints()["torch"] == Version("2.13.0")
    vllm = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["vllm"]]
    assert all(not r.specifier.contains("0.8.0") and r.specifier.contains("0.32.0") for r in vllm)


# --- CI script -------------------------------------------------------------------------------

CI = (ROOT / ".ci" / "run").read_text()


def ci_commands() -> list[str]:
    out, buf = [], ""
    for line in CI.splitlines():
        line = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            buf += line[:-1]
            continue
        if (buf + line).strip():
            out.append((buf + line).strip())
        buf = ""
    return out


def test_ci_stops_at_the_first_failure():
    assert "set -euo pipefail" in CI
    for cmd in ci_commands():
        if cmd.startswith(("if ", "elif ", "while ", "until ")) or "||" in cmd and "exit" in cmd:
            continue
        # bash ignores errexit for every command of an && list but the last one.
        assert "&&" not in cmd, f".ci/run: {cmd!r} is an && chain; a failure inside it would not stop CI"


def test_ci_runs_lint_wheel_and_marked_steps_without_tolerating_no_tests():
    cmds = ci_commands()
    assert ".venv/bin/ruff check ." in cmds
    assert any(re.match(r"\.venv(-build)?/bin/python -m build --wheel", c) for c in cmds)
    assert any(re.search(r'verinet"? zoo list', c) for c in cmds)
    assert any(re.search(r'verinet"? compare --config', c) for c in cmds)
    assert "-ne 5" not in CI and "rc -eq 5" not in CI, "pytest's exit 5 (no tests) must fail a step"
    marked = " ".join(c for c in cmds if c.startswith("run_marked "))
    for mark in ("promtool", "schemathesis", "slow", "multinode"):  # every marker has a step
        assert re.search(rf"run_marked \"?[^\"]*\b{mark}\b", marked), mark
    assert "-m vllm" in CI and "smollm2" in CI
    # merged steps fail only when none of their markers selects a test: each marker must still mark some
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    for mark in ("promtool", "schemathesis", "slow", "multinode", "smollm2", "vllm"):
        assert re.search(rf"mark\.{mark}\b", sources), f"no test is marked {mark}"


def test_ci_install_uses_the_constraints():
    installs = [c for c in ci_commands() if re.search(r"\.venv(-wheel|-build)?/bin/pip install", c) and "torch==" not in c]
    assert installs and all("-c constraints.txt" in c for c in installs), installs


def test_pytest_has_a_per_test_timeout():
    ini = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert 0 < int(ini["timeout"]) <= 900
    import pytest_timeout  # noqa: F401  (the dev extra installs it; without it the ini key does nothing)
