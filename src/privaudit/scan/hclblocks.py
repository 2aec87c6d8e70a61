"""Split Terraform text into its top-level blocks without parsing them, so the HCL2 parser (pure
Python, the slow part of a scan) only sees the resource types the scan models. A repository's
VPCs, IAM roles and buckets are never parsed.

The splitter knows just enough HCL to find block ends: quoted strings with ``${...}``/``%{...}``
templates (nested strings included), heredocs, and ``#``, ``//`` and ``/* */`` comments. When
anything looks unusual it returns None and the caller parses the whole file.
"""

from __future__ import annotations

import re

_HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_]*)[ \t]*\r?\n")
_RESOURCE = re.compile(r'\s*resource\s+"([^"]+)"')


def _skip_string(text: str, i: int) -> int:
    """Index after the string opening at ``text[i] == '"'``; -1 if it does not close on its line."""
    n, j = len(text), i + 1
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == '"':
            return j + 1
        if c == "\n":
            return -1
        if c in "$%" and j + 1 < n and text[j + 1] == "{" and not (j > i + 1 and text[j - 1] == c):
            j = _skip_template(text, j + 2)
            if j < 0:
                return -1
            continue
        j += 1
    return -1


def _skip_template(text: str, j: int) -> int:
    """Index after the ``}`` closing a template whose body starts at ``j``."""
    depth, n = 1, len(text)
    while j < n:
        c = text[j]
        if c == '"':
            j = _skip_string(text, j)
            if j < 0:
                return -1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return -1


def top_level_blocks(text: str) -> list[tuple[int, int]] | None:
    """(start, end) offsets of every top-level block, comments before it included; None when unsure."""
    n, i, depth, start = len(text), 0, 0, 0
    out: list[tuple[int, int]] = []
    while i < n:
        c = text[i]
        if c == "#" or text.startswith("//", i):
            nl = text.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                return None
            i = end + 2
        elif c == '"':
            i = _skip_string(text, i)
            if i < 0:
                return None
        elif c == "<" and text.startswith("<<", i):
            m = _HEREDOC.match(text, i)
            if m is None:
                i += 2
                continue
            marker = re.compile(rf"^[ \t]*{re.escape(m.group(1))}[ \t]*$", re.MULTILINE)
            end_m = marker.search(text, m.end())
            if end_m is None:
                return None
            i = end_m.end()
        elif c == "{":
            depth += 1
            i += 1
        elif c == "}":
            depth -= 1
            i += 1
            if depth < 0:
                return None
            if depth == 0:
                out.append((start, i))
                start = i
        else:
            i += 1
    if depth != 0 or _strip_comments(text[start:]).strip():
        return None  # unbalanced, or something outside any block
    return out


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    return "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith(("#", "//")))


def resource_type(block: str) -> str | None:
    """The TYPE of a ``resource "TYPE" "NAME"`` block (after any leading comments), else None."""
    lines = [ln for ln in _strip_comments(block).splitlines() if ln.strip()]
    m = _RESOURCE.match(lines[0]) if lines else None
    return m.group(1) if m else None
