"""CloudFormation templates, YAML (with the short intrinsic tags ``!Ref``, ``!GetAtt``, ``!Sub`` ...)
or JSON. Properties are converted to the Terraform spelling (see aws_kinds) so one set of builders
serves both. References become ``${LogicalId}`` strings: ``Ref X`` -> ``${X}``, ``GetAtt X.Arn`` ->
``${X.Arn}``, ``Sub`` keeps its own ``${X}`` placeholders.

Inline suppressions: a ``# privaudit:skip=CHECK reason`` comment inside the resource (YAML), or
``Metadata: {privaudit: {skip: [{id: CHECK, reason: ...}]}}`` (YAML or JSON).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from privaudit.errors import ConfigError
from privaudit.scan.aws_kinds import terraform_resource
from privaudit.scan.model import Resource, Skip, skips_in

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_OPAQUE = {"Variables", "Tags", "Labels"}  # keys below these are user data, not property names


def snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _intrinsic(tag: str, value: Any) -> Any:
    if tag == "Ref":
        return {"Ref": value}
    if tag == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{tag}": value}


MAX_NODES = 1_000_000  # values in a document once its aliases are expanded; more is refused (a "YAML bomb")


def _expanded(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` stands for with every alias expanded (each shared node counted once per use)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.composer.ComposerError(None, None, "an alias refers to a value that contains it", node.start_mark)
    open_.add(key)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded(n, sizes, open_) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded(k, sizes, open_) + _expanded(v, sizes, open_) for k, v in node.value)
    else:
        size = 1
    open_.discard(key)
    sizes[key] = size
    if size > MAX_NODES:
        raise yaml.composer.ComposerError(None, None, f"expands to more than {MAX_NODES:,} values through its "
                                          "aliases (*name); refused", node.start_mark)
    return size


class _Loader(yaml.SafeLoader):
    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None:
            _expanded(node, {}, set())
        return node


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return _intrinsic(suffix, value)


_Loader.add_multi_constructor("!", _construct)


def resolve_intrinsics(value: Any) -> Any:
    """Intrinsic functions as reference strings the graph understands; other values unchanged."""
    if isinstance(value, list):
        return [resolve_intrinsics(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return "${" + str(arg) + "}"
        if key == "Fn::GetAtt":
            parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return "${" + ".".join(str(p) for p in parts) + "}"
        if key == "Fn::Sub":
            return arg[0] if isinstance(arg, list) and arg else arg
        if key == "Fn::Join" and isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], list):
            parts = [resolve_intrinsics(p) for p in arg[1]]
            if all(isinstance(p, str) for p in parts):
                return str(arg[0]).join(parts)
    return {k: resolve_intrinsics(v) for k, v in value.items()}


def _snake_keys(value: Any, opaque: bool = False) -> Any:
    if isinstance(value, list):
        return [_snake_keys(v, opaque) for v in value]
    if isinstance(value, dict):
        if opaque:
            return value
        return {snake(k): _snake_keys(v, k in _OPAQUE) for k, v in value.items()}
    return value


_RENAMES: dict[str, dict[str, str]] = {
    "AWS::SageMaker::Endpoint": {"endpoint_name": "name"},
    "AWS::SageMaker::EndpointConfig": {"endpoint_config_name": "name"},
    "AWS::ApiGateway::Stage": {"access_log_setting": "access_log_settings"},
    "AWS::ApiGateway::Method": {"authorization_type": "authorization"},
    "AWS::ApiGateway::UsagePlan": {"throttle": "throttle_settings", "quota": "quota_settings", "usage_plan_name": "name"},
    "AWS::ApiGatewayV2::Stage": {"stage_name": "name"},
    "AWS::WAFv2::WebACL": {"rules": "rule"},
    "AWS::Lambda::Url": {"target_function_arn": "function_name", "auth_type": "authorization_type"},
}
TYPES = {
    "AWS::SageMaker::Endpoint": "aws_sagemaker_endpoint",
    "AWS::SageMaker::EndpointConfig": "aws_sagemaker_endpoint_configuration",
    "AWS::ApiGateway::RestApi": "aws_api_gateway_rest_api",
    "AWS::ApiGateway::Stage": "aws_api_gateway_stage",
    "AWS::ApiGateway::Method": "aws_api_gateway_method",
    "AWS::ApiGateway::UsagePlan": "aws_api_gateway_usage_plan",
    "AWS::ApiGateway::UsagePlanKey": "aws_api_gateway_usage_plan_key",
    "AWS::ApiGateway::ApiKey": "aws_api_gateway_api_key",
    "AWS::ApiGatewayV2::Api": "aws_apigatewayv2_api",
    "AWS::ApiGatewayV2::Stage": "aws_apigatewayv2_stage",
    "AWS::ApiGatewayV2::Integration": "aws_apigatewayv2_integration",
    "AWS::WAFv2::WebACL": "aws_wafv2_web_acl",
    "AWS::WAFv2::WebACLAssociation": "aws_wafv2_web_acl_association",
    "AWS::Lambda::Function": "aws_lambda_function",
    "AWS::Lambda::Url": "aws_lambda_function_url",
}


def _fix_waf(attrs: dict[str, Any]) -> None:
    for rule in attrs.get("rule") or []:
        rate = ((rule or {}).get("statement") or {}).get("rate_based_statement")
        if isinstance(rate, dict) and "custom_keys" in rate:
            rate["custom_key"] = rate.pop("custom_keys")


def _to_terraform_shape(cfn_type: str, props: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = dict(_snake_keys(resolve_intrinsics(props)))
    for old, new in _RENAMES.get(cfn_type, {}).items():
        if old in attrs:
            attrs[new] = attrs.pop(old)
    tags = attrs.get("tags")
    if isinstance(tags, list):
        attrs["tags"] = {str(t.get("Key")): str(t.get("Value")) for t in tags if isinstance(t, dict)}
    if cfn_type == "AWS::ApiGateway::Stage":
        # Stage-wide throttling is a MethodSettings entry for every resource and method (/*/*).
        for ms in attrs.pop("method_settings", None) or []:
            if isinstance(ms, dict) and ("throttling_rate_limit" in ms or "throttling_burst_limit" in ms):
                attrs["_throttle"] = ms
    if cfn_type == "AWS::WAFv2::WebACL":
        _fix_waf(attrs)
    return attrs


def _line_spans(text: str, ids: list[str]) -> dict[str, tuple[int, int]]:
    """First line of each logical id under Resources (YAML or JSON), and the line before the next one."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if re.match(r'^\s*"?Resources"?\s*:', ln)), 0)
    found: list[tuple[int, str]] = []
    for lid in ids:
        pat = re.compile(r'^\s*"?' + re.escape(lid) + r'"?\s*:')
        idx = next((i for i in range(start, len(lines)) if pat.match(lines[i])), None)
        if idx is not None:
            found.append((idx + 1, lid))
    found.sort()
    return {lid: (ln, (found[i + 1][0] - 1) if i + 1 < len(found) else len(lines)) for i, (ln, lid) in enumerate(found)}


def is_template(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("Resources"), dict) and (
        "AWSTemplateFormatVersion" in data or any(isinstance(r, dict) and str(r.get("Type", "")).startswith("AWS::")
                                                  for r in data["Resources"].values()))


def load_yaml_text(text: str, label: str) -> list[Any]:
    """Every document in a YAML file, intrinsic tags allowed; a one-line ConfigError otherwise."""
    try:
        return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{label}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def parse_template(data: dict[str, Any], text: str, label: str) -> list[Resource]:
    res_map = data["Resources"]
    spans = _line_spans(text, list(res_map))
    lines = text.splitlines()
    out = []
    for lid, body in res_map.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{label}: Resources.{lid} must be a mapping with Type and Properties")
        cfn_type = str(body.get("Type", ""))
        props = body.get("Properties") or {}
        if not isinstance(props, dict):
            raise ConfigError(f"{label}: Resources.{lid}.Properties must be a mapping")
        start, end = spans.get(lid, (None, None))
        skips = list(skips_in([ln for ln in lines[start - 1:end]] if start and end else []))
        meta = ((body.get("Metadata") or {}).get("privaudit") or {}) if isinstance(body.get("Metadata"), dict) else {}
        for s in meta.get("skip", []) if isinstance(meta, dict) else []:
            if isinstance(s, dict) and s.get("id"):
                skips.append(Skip(str(s["id"]), str(s.get("reason") or "skipped in Metadata, no reason given")))
        where = {"file": label, "line": start, "skips": tuple(skips)}
        tf_type = TYPES.get(cfn_type)
        if tf_type is None:
            continue
        attrs = _to_terraform_shape(cfn_type, props)
        res = terraform_resource(tf_type, lid, attrs, **where)
        if res is None:
            continue
        res.type, res.address = cfn_type, lid
        res.keys = {lid} | ({res.name} if res.name != lid and res.kind in ("sagemaker_endpoint", "sagemaker_endpoint_config", "lambda_function") else set())
        if cfn_type == "AWS::ApiGateway::Stage" and attrs.get("_throttle"):
            ms = attrs["_throttle"]
            res.props["throttle"] = {"rate": ms.get("throttling_rate_limit"), "burst": ms.get("throttling_burst_limit")}
        out.append(res)
        if cfn_type == "AWS::ApiGateway::Method" and isinstance(attrs.get("integration"), dict):
            integ = terraform_resource("aws_api_gateway_integration", lid, {"rest_api_id": attrs.get("rest_api_id"),
                                       "uri": attrs["integration"].get("uri")}, **where)
            assert integ is not None
            integ.type, integ.address, integ.keys = "AWS::ApiGateway::Method.Integration", f"{lid}.Integration", {f"{lid}.Integration"}
            integ.props["method"] = "${" + lid + "}"
            out.append(integ)
    return out


def parse_cfn_file(path: Path, label: str, text: str, docs: list[Any]) -> list[Resource]:
    out = []
    for d in docs:
        if is_template(d):
            out += parse_template(d, text, label)
    return out
