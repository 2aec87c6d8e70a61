"""Terraform: ``.tf`` files (python-hcl2) and ``terraform show -json`` plan files.

Only top-level blocks of the resource types the scan models are parsed (see hclblocks); hcl2 does
not report line numbers, so each ``resource "TYPE" "NAME"`` header is found in the text;
``# privaudit:skip=CHECK reason`` comments between that header and the next one belong to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from privaudit.errors import ConfigError
from privaudit.scan.aws_kinds import TERRAFORM_TYPES, terraform_resource
from privaudit.scan.hclblocks import resource_type, top_level_blocks
from privaudit.scan.model import Resource, skips_in

MODELLED = frozenset(TERRAFORM_TYPES) | {"azapi_resource"}  # the only resource types handed to the parser
_HEADER = re.compile(r'^\s*resource\s+"([^"]+)"\s+"([^"]+)"', re.MULTILINE)
_COMMENT = re.compile(r"(?:#|//)\s*(privaudit:skip=.*)$")


def _headers(text: str) -> list[tuple[str, str, int, int]]:
    """(type, name, first line, last line) of every resource block, by position in the text."""
    found = [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in _HEADER.finditer(text)]
    total = text.count("\n") + 1
    return [(t, n, line, (found[i + 1][2] - 1) if i + 1 < len(found) else total) for i, (t, n, line) in enumerate(found)]


def parse_tf_text(text: str, label: str) -> list[Resource]:
    try:
        import hcl2
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{label}: reading Terraform needs python-hcl2 (missing module '{exc.name}'): "
                          "pip install 'privaudit[scan]'") from None

    from hcl2 import api

    options = hcl2.SerializationOptions(with_comments=False, strip_string_quotes=True)

    def parse(source: str) -> Any:
        # Comments are read from the text (skip markers), so the parser may drop them: that is faster.
        return api.serialize(api.parses(source, discard_comments=True), serialization_options=options)

    blocks = top_level_blocks(text)
    source = text
    if blocks is not None:
        kept = [text[a:b] for a, b in blocks if resource_type(text[a:b]) in MODELLED]
        if not kept:
            return []
        source = "\n".join(kept)
    error: Exception | None = None
    data: Any = {}
    try:
        data = parse(source)
    except Exception as exc:  # lark raises many types; the message names the position
        error = exc
    if error is not None and source is not text:  # say what is wrong as the whole file shows it
        try:
            data, error = parse(text), None
        except Exception as exc:  # noqa: BLE001
            error = exc
    if error is not None:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{label}: not valid Terraform (HCL2): {first_line}") from None
    lines = text.splitlines()
    spans = {(t, n): (a, b) for t, n, a, b in _headers(text)}
    out = []
    for block in data.get("resource", []) or []:
        for rtype, named in block.items():
            for rname, attrs in (named or {}).items():
                start, end = spans.get((rtype, rname), (None, None))
                comments = []
                if start is not None and end is not None:
                    comments = [m.group(1) for ln in lines[start - 1:end] if (m := _COMMENT.search(ln))]
                res = terraform_resource(rtype, rname, attrs if isinstance(attrs, dict) else {}, file=label, line=start,
                                         skips=skips_in(comments))
                if res is not None:
                    out.append(res)
    return out


def parse_tf_file(path: Path, label: str) -> list[Resource]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_tf_text(text, label)


def is_plan(data: Any) -> bool:
    return isinstance(data, dict) and "planned_values" in data and "format_version" in data


def _config_refs(module: dict[str, Any], prefix: str, out: dict[str, dict[str, list[str]]]) -> None:
    for r in module.get("resources", []) or []:
        refs = {k: v.get("references", []) for k, v in (r.get("expressions") or {}).items()
                if isinstance(v, dict) and v.get("references")}
        out[prefix + r["address"]] = refs
    for name, call in (module.get("module_calls") or {}).items():
        _config_refs(call.get("module") or {}, f"{prefix}module.{name}.", out)


def _planned(module: dict[str, Any]) -> list[dict[str, Any]]:
    res = list(module.get("resources", []) or [])
    for child in module.get("child_modules", []) or []:
        res += _planned(child)
    return res


def parse_plan(data: dict[str, Any], label: str) -> list[Resource]:
    """Resources of a plan's planned values. Attributes not known until apply (ids) are filled with
    the configuration's references, so ``rest_api_id = aws_api_gateway_rest_api.api.id`` still links."""
    refs: dict[str, dict[str, list[str]]] = {}
    _config_refs((data.get("configuration") or {}).get("root_module") or {}, "", refs)
    out = []
    for r in _planned((data.get("planned_values") or {}).get("root_module") or {}):
        if r.get("mode", "managed") != "managed":
            continue
        values = dict(r.get("values") or {})
        module_prefix = r["address"][: len(r["address"]) - len(f"{r['type']}.{r['name']}")]
        conf_addr = module_prefix + f"{r['type']}.{r['name']}"
        for attr, targets in refs.get(conf_addr, {}).items():
            if values.get(attr) in (None, "") and targets:
                values[attr] = "${" + targets[-1] + "}" if len(targets) == 1 else "${" + targets[0] + "}"
        res = terraform_resource(r["type"], r["name"], values, file=label, line=None)
        if res is not None:
            res.address = r["address"]
            res.keys.add(r["address"])
            out.append(res)
    return out


def load_json(path: Path, label: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{label}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
