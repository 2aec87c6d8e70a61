"""A deployment graph as a small inline SVG: the endpoint on the left, each further hop one column right."""

from __future__ import annotations

from collections import defaultdict, deque
from html import escape
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 30, 28, 10, 8
COLOURS = {"sagemaker_endpoint": "#1f6feb", "kserve": "#1f6feb", "seldon": "#1f6feb", "vertex_endpoint": "#1f6feb",
           "azure_online_endpoint": "#1f6feb", "waf_acl": "#bf8700", "usage_plan": "#1a7f37", "guard": "#1a7f37",
           "lambda_url": "#cf222e", "http_api": "#cf222e"}


def columns(dep: Any) -> dict[str, int]:
    """Hop distance of every resource from the endpoint, following edges either way."""
    nbrs: dict[str, set[str]] = defaultdict(set)
    for e in dep.edges:
        nbrs[e.source].add(e.target)
        nbrs[e.target].add(e.source)
    start = dep.resources[0]["address"] if dep.resources else None
    depth: dict[str, int] = {}
    if start is None:
        return depth
    depth[start] = 0
    queue = deque([start])
    while queue:
        cur = queue.popleft()
        for n in sorted(nbrs[cur]):
            if n not in depth:
                depth[n] = depth[cur] + 1
                queue.append(n)
    for r in dep.resources:  # unconnected leftovers go in the last column
        depth.setdefault(r["address"], max(depth.values(), default=0) + 1)
    return depth


def svg(dep: Any) -> str:
    depth = columns(dep)
    kinds = {r["address"]: r["kind"] for r in dep.resources}
    names = {r["address"]: r.get("name") or r["address"] for r in dep.resources}
    by_col: dict[int, list[str]] = defaultdict(list)
    for addr, col in sorted(depth.items(), key=lambda kv: (kv[1], kv[0])):
        by_col[col].append(addr)
    pos = {}
    for col, addrs in by_col.items():
        for row, addr in enumerate(addrs):
            pos[addr] = (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(by_col, default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(v) for v in by_col.values()), default=1) * (BOX_H + GAP_Y) - GAP_Y
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="deployment graph of {escape(dep.name)}" font-family="sans-serif" font-size="11">']
    for e in dep.edges:
        if e.source in pos and e.target in pos:
            (x1, y1), (x2, y2) = pos[e.source], pos[e.target]
            a, b = (x1, y1 + BOX_H / 2), (x2 + BOX_W, y2 + BOX_H / 2)
            if x1 <= x2:
                a, b = (x1 + BOX_W, y1 + BOX_H / 2), (x2, y2 + BOX_H / 2)
            parts.append(f'<line x1="{a[0]}" y1="{a[1]}" x2="{b[0]}" y2="{b[1]}" stroke="#8c959f"><title>'
                         f'{escape(e.label)}</title></line>')
    for addr, (x, y) in pos.items():
        colour = COLOURS.get(kinds.get(addr, ""), "#57606a")
        label = f"{kinds.get(addr, '')}: {names.get(addr, addr)}"
        short = label if len(label) <= 27 else label[:26] + "\u2026"
        parts.append(f'<g><title>{escape(addr)}</title><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5" '
                     f'fill="white" stroke="{colour}" stroke-width="2"/><text x="{x + 8}" y="{y + BOX_H / 2 + 4}" '
                     f'fill="#24292f">{escape(short)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
