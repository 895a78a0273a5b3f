"""The README and docs/: short enough to read, every link resolves, and the commands are CI's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md"), ROOT / "deploy" / "README.md"])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```bash\n(.*?)```", re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return LINK.findall(text)


def test_readme_is_short():
    assert README.stat().st_size < 8 * 1024, f"README.md is {README.stat().st_size} bytes; keep it under 8 KB"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves(doc):
    assert doc.is_file()
    for target in links(doc):
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue  # external: not reachable from CI
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        assert dest.exists(), f"{doc.name}: link {target!r} points to nothing"
        assert dest.is_relative_to(ROOT), f"{doc.name}: link {target!r} leaves the repository"
        if anchor:
            assert dest.suffix == ".md" and anchor in anchors(dest), \
                f"{doc.name}: link {target!r}: no heading with anchor #{anchor} in {dest.name}"


def test_docs_name_no_file_outside_the_repository():
    for doc in DOCS:
        assert "DESIGN.md" not in doc.read_text(), f"{doc.name} points to DESIGN.md, which is not in the repository"


def _blocks() -> list[list[str]]:
    return [[ln for ln in b.splitlines() if ln.strip()] for b in FENCE.findall(README.read_text())]


def test_ci_runs_exactly_the_readme_test_command():
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    [test_cmd] = [b for b in _blocks() if any("pytest" in ln for ln in b)]
    start = ci.index(test_cmd[0])
    assert ci[start:start + len(test_cmd)] == test_cmd, "the first CI step must be the README's test command"
    assert not any("&&" in ln for ln in test_cmd), "one command per line, so a failed install stops"


def test_main_command_sets_up_the_same_venv_as_the_tests():
    blocks = _blocks()
    [main] = [b for b in blocks if b[-1].endswith("verinet compare")]
    [tests] = [b for b in blocks if any("pytest" in ln for ln in b)]
    assert main[:-1] == tests[:-1]
    assert "constraints.txt" in " ".join(main) and (ROOT / "constraints.txt").is_file()


def test_tour_commands_exist():
    """Every `verinet ...` command the README shows is a real command with options it accepts."""
    from typer.main import get_command

    from verinet.cli import app

    root = get_command(app)
    for block in _blocks():
        for line in block:
            words = line.split("#", 1)[0].split()
            if not words or words[0] not in ("verinet", ".venv/bin/verinet"):
                continue
            cmd, ctx_words = root, words[1:]
            while ctx_words and hasattr(cmd, "commands") and ctx_words[0] in cmd.commands:
                cmd = cmd.commands[ctx_words.pop(0)]
            assert not hasattr(cmd, "commands") or not ctx_words, f"README: {line!r} names no command"
            opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
            for w in ctx_words:
                if w.startswith("--"):
                    assert w in opts, f"README: {line!r}: {w} is not an option of that command"
