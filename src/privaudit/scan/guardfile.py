"""privaudit's own ``guard.yaml``, read with the audit's loader (:mod:`privaudit.ci.controls`).

A guard fronts the deployment its ``upstream`` URL points at: the graph matches the URL's host or
path against endpoint and service names.
"""

from __future__ import annotations

from typing import Any

from privaudit.ci.controls import parse_guard_config
from privaudit.scan.model import Resource

GUARD_KEYS = ("identity", "limits", "hardening", "detectors")


def is_guard_config(doc: Any) -> bool:
    return isinstance(doc, dict) and "upstream" in doc and any(k in doc for k in GUARD_KEYS)


def parse_guard(doc: dict[str, Any], label: str) -> Resource:
    controls = parse_guard_config(doc, label)
    upstream = str(doc.get("upstream") or "")
    res = Resource(kind="guard", type="privaudit guard", address=f"guard:{label}", name=label,
                   props={"controls": controls, "upstream": upstream}, file=label, line=1)
    res.keys.add(res.address)
    return res
