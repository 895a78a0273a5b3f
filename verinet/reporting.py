"""Reports as blocks: one list of headings, paragraphs, tables and figures, rendered to Markdown and to a
self-contained HTML page (figures inlined). Used by the comparison report and the probes."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

Block = tuple  # ("h2", text) | ("p", text) | ("table", headers, rows) | ("img", path, caption)


def render_markdown(blocks: Sequence[Block], base: Path) -> str:
    out = []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            out.append("#" * int(b[0][1]) + " " + b[1])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "table":
            out.append("| " + " | ".join(b[1]) + " |")
            out.append("|" + "---|" * len(b[1]))
            out += ["| " + " | ".join(str(c) for c in row) + " |" for row in b[2]]
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1].relative_to(base).as_posix()})")
        out.append("")
    return "\n".join(out)


def render_html(title: str, blocks: Sequence[Block]) -> str:
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            body.append(f"<{b[0]}>{html.escape(b[1])}</{b[0]}>")
        elif b[0] == "p":
            body.append(f"<p>{html.escape(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode(b[1].read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
             "img{max-width:100%}figcaption{font-size:0.85em;color:#555}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def write_report(out: Path, title: str, blocks: Sequence[Block]) -> Path:
    """report.md and report.html in ``out``; returns the Markdown path."""
    (out / "report.html").write_text(render_html(title, blocks), encoding="utf-8")
    md = out / "report.md"
    md.write_text(render_markdown(blocks, out), encoding="utf-8")
    return md


__all__ = ["Block", "render_html", "render_markdown", "write_report"]
