"""The experiments' markdown as one self-contained HTML page (plots embedded as data URIs).

Covers what the reports write: `#` headings, paragraphs, `-` lists, pipe tables, fenced code, `![alt](path)`
images on their own line (read relative to `root`), `**bold**` and `` `code` `` inline.
"""
from __future__ import annotations

import base64
import html
import os
import re

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.4}table{border-collapse:"
         "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}"
         "pre{background:#f6f6f6;padding:6px;overflow-x:auto}img{max-width:100%}code{background:#f3f3f3}")
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")


def inline(text: str) -> str:
    """Escape, then `code`, **bold** and [links](target)."""
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"<a href='\2'>\1</a>", s)


def image(alt: str, path: str, root: str) -> str:
    full = path if os.path.isabs(path) else os.path.join(root, path)
    if not os.path.exists(full):
        return f"<p>[missing plot: {html.escape(path)}]</p>"
    with open(full, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _table(lines: list[str]) -> str:
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if not re.match(r"^\|[-|: ]+\|$", line.strip())]
    head = "".join(f"<th>{inline(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def markdown_to_html(text: str, root: str, title: str) -> str:
    """A complete HTML page of `text` (module docstring)."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("```")), len(lines))
            out.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
            continue
        if line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out.append(_table(lines[i:j]))
            i = j
            continue
        if line.startswith("- "):
            j = i
            while j < len(lines) and lines[j].startswith(("- ", "  ")):
                j += 1
            items = re.split(r"\n- ", "\n".join(lines[i:j])[2:])
            out.append("<ul>" + "".join(f"<li>{inline(it)}</li>" for it in items) + "</ul>")
            i = j
            continue
        m, h = _IMAGE.match(line.strip()), re.match(r"^(#{1,6}) (.*)$", line)
        if m:
            out.append(image(m.group(1), m.group(2), root))
        elif h:
            out.append(f"<h{len(h.group(1))}>{inline(h.group(2))}</h{len(h.group(1))}>")
        elif line.strip() and line.strip() != "---":
            para = [line]
            while i + 1 < len(lines) and lines[i + 1].strip() and not lines[i + 1].startswith(("#", "|", "- ", "```", "!")):
                i += 1
                para.append(lines[i])
            out.append(f"<p>{inline(' '.join(para))}</p>")
        i += 1
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")
