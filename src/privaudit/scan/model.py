"""The scan's vocabulary: a resource read from any source, in one canonical shape.

Parsers (Terraform, CloudFormation, Kubernetes, guard.yaml) and the live AWS reader all produce
:class:`Resource` objects whose ``kind`` is one of :data:`KINDS` and whose ``props`` use the keys the
graph and the checks read (documented per kind in docs/scan.md). References to other resources stay
strings (``${aws_x.name.id}``, a CloudFormation logical id, a name or an ARN) until the graph
resolves them against every resource scanned, so a reference into another file resolves like any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "sagemaker_endpoint", "sagemaker_endpoint_config", "rest_api", "http_api", "stage", "method_settings",
    "method", "integration", "usage_plan", "usage_plan_key", "api_key", "waf_acl", "waf_association",
    "lambda_function", "lambda_url", "kserve", "seldon", "azure_online_endpoint", "azure_online_deployment",
    "vertex_endpoint", "guard",
)
ENDPOINT_KINDS = ("sagemaker_endpoint", "kserve", "seldon", "azure_online_endpoint", "vertex_endpoint")


@dataclass(frozen=True)
class Skip:
    """An inline ``# privaudit:skip=CHECK reason`` comment on a resource."""

    check: str
    reason: str


@dataclass
class Resource:
    kind: str
    type: str  # the source's own type name, e.g. aws_api_gateway_stage or AWS::ApiGateway::Stage
    address: str  # how the source names it: aws_x.y, a CloudFormation logical id, Kind/namespace/name, an ARN
    name: str  # the cloud-side name when known, else the address
    props: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    file: str | None = None
    line: int | None = None
    arn: str | None = None
    region: str | None = None
    skips: tuple[Skip, ...] = ()
    keys: set[str] = field(default_factory=set)  # extra names it can be referred to by (ids, ARNs)

    @property
    def where(self) -> str:
        if self.file is not None:
            return f"{self.file}:{self.line}" if self.line else self.file
        return self.arn or self.address

    def ref(self) -> dict[str, Any]:
        """The short form reports list: kind, address, and where it is."""
        out: dict[str, Any] = {"kind": self.kind, "type": self.type, "address": self.address, "name": self.name}
        if self.file is not None:
            out["file"], out["line"] = self.file, self.line
        if self.arn is not None:
            out["arn"] = self.arn
        return out


_INTERP = re.compile(r"\$\{([^}]*)\}")
_TF_ADDR = re.compile(r"\b((?:data\.)?[a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_-]*)")
_CFN_ID = re.compile(r"^\s*([A-Za-z0-9]+)")


def reference_tokens(value: Any) -> list[str]:
    """Every token in ``value`` that may name another resource: Terraform addresses and CloudFormation
    logical ids inside ``${...}``, plus the plain string itself (a name or an ARN)."""
    out: list[str] = []
    if isinstance(value, str):
        inner = _INTERP.findall(value)
        for expr in inner:
            out += _TF_ADDR.findall(expr)
            m = _CFN_ID.match(expr)
            if m:
                out.append(m.group(1))
        if not inner:
            out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            out += reference_tokens(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            out += reference_tokens(v)
    return out


def literal(value: Any) -> str | None:
    """A string with no unresolved interpolation, else None."""
    return value if isinstance(value, str) and "${" not in value else None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def first(value: Any) -> Any:
    """Terraform blocks come as a list of one mapping; CloudFormation and AWS give the mapping."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def blocks(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


SKIP_RE = re.compile(r"privaudit:skip=([A-Za-z0-9_/:.-]+)\s*(.*)")


def skips_in(comments: list[str]) -> tuple[Skip, ...]:
    out = []
    for text in comments:
        m = SKIP_RE.search(text)
        if m:
            out.append(Skip(m.group(1), m.group(2).strip() or "skipped inline, no reason given"))
    return tuple(out)
