"""AWS, Azure and Google resource types mapped to the scan's canonical kinds and props.

Terraform attribute names are the canonical spelling (CloudFormation and the live reader convert to
them), so one function per type turns a Terraform-shaped attribute dict into a :class:`Resource`.
"""

from __future__ import annotations

from typing import Any, Callable

from privaudit.scan.model import Resource, as_bool, as_number, blocks, first, literal

Props = dict[str, Any]


def _throttle(block: Any, rate_key: str = "rate_limit", burst_key: str = "burst_limit") -> dict[str, float | None] | None:
    b = first(block)
    if not isinstance(b, dict):
        return None
    rate, burst = as_number(b.get(rate_key)), as_number(b.get(burst_key))
    if rate is None and burst is None:
        return None
    return {"rate": rate, "burst": burst}


def _capture(cfg: Any) -> dict[str, Any] | None:
    c = first(cfg)
    if not isinstance(c, dict):
        return None
    modes = [str(first(o).get("capture_mode")) for o in blocks(c.get("capture_options")) if isinstance(first(o), dict)]
    return {"enabled": as_bool(c.get("enable_capture", True)), "modes": modes, "kms_key": c.get("kms_key_id") or None,
            "destination": c.get("destination_s3_uri"), "sampling": as_number(c.get("initial_sampling_percentage"))}


def _rate_rules(rules: Any) -> list[dict[str, Any]]:
    out = []
    for r in blocks(rules):
        r = first(r) or {}
        stmt = first(r.get("statement")) or {}
        rate = first(stmt.get("rate_based_statement"))
        if not isinstance(rate, dict):
            continue
        keys = []
        for ck in blocks(rate.get("custom_key")):
            ck = first(ck) or {}
            for kname, kval in ck.items():
                if kname.startswith("__"):
                    continue
                detail = first(kval) if isinstance(first(kval), dict) else {}
                keys.append({"type": kname, "name": (detail or {}).get("name")})
        out.append({"name": r.get("name"), "limit": as_number(rate.get("limit")),
                    "key": str(rate.get("aggregate_key_type") or "IP").upper(), "custom_keys": keys})
    return out


def _sagemaker_endpoint(a: Props) -> Props:
    return {"config": a.get("endpoint_config_name")}


def _sagemaker_config(a: Props) -> Props:
    return {"capture": _capture(a.get("data_capture_config")), "explainer": bool(first(a.get("explainer_config")))}


def _stage(a: Props) -> Props:
    log = first(a.get("access_log_settings"))
    return {"api": a.get("rest_api_id"), "stage_name": a.get("stage_name"), "throttle": None,
            "access_log": (log or {}).get("destination_arn") if isinstance(log, dict) else None}


def _method_settings(a: Props) -> Props:
    s = first(a.get("settings")) or {}
    return {"api": a.get("rest_api_id"), "stage_name": a.get("stage_name"),
            "throttle": _throttle(s, "throttling_rate_limit", "throttling_burst_limit")}


def _method(a: Props) -> Props:
    return {"api": a.get("rest_api_id"), "http_method": a.get("http_method"), "resource": a.get("resource_id"),
            "api_key_required": as_bool(a.get("api_key_required", False)), "authorization": a.get("authorization")}


def _integration(a: Props) -> Props:
    return {"api": a.get("rest_api_id") or a.get("api_id"), "uri": a.get("uri") or a.get("integration_uri"),
            "resource": a.get("resource_id"), "http_method": a.get("http_method")}


def _usage_plan(a: Props) -> Props:
    stages = []
    for s in blocks(a.get("api_stages")):
        s = first(s) or {}
        stages.append({"api": s.get("api_id"), "stage": s.get("stage"), "throttle": _throttle(s.get("throttle"))})
    q = first(a.get("quota_settings"))
    quota = {"limit": as_number(q.get("limit")), "period": q.get("period")} if isinstance(q, dict) else None
    return {"stages": stages, "throttle": _throttle(a.get("throttle_settings")), "quota": quota}


def _http_stage(a: Props) -> Props:
    log = first(a.get("access_log_settings"))
    return {"api": a.get("api_id"), "stage_name": a.get("name"),
            "throttle": _throttle(a.get("default_route_settings"), "throttling_rate_limit", "throttling_burst_limit"),
            "access_log": (log or {}).get("destination_arn") if isinstance(log, dict) else None}


def _lambda(a: Props) -> Props:
    env = first(a.get("environment")) or {}
    variables = env.get("variables") if isinstance(env, dict) else None
    return {"env": {k: v for k, v in (variables or {}).items() if not str(k).startswith("__")}}


def _vertex(a: Props) -> Props:
    log = first(a.get("predict_request_response_logging_config")) or {}
    enc = first(a.get("encryption_spec")) or {}
    return {"logging": as_bool(log.get("enabled")) if log else False,
            "kms_key": enc.get("kms_key_name") if isinstance(enc, dict) else None}


def _azapi(a: Props) -> tuple[str, Props] | None:
    kind = str(a.get("type") or "").split("@")[0].lower()
    body = a.get("body") if isinstance(a.get("body"), dict) else {}
    props = (body or {}).get("properties") or {}
    if kind.endswith("onlineendpoints/deployments"):
        dc = props.get("dataCollector") or {}
        cols = dc.get("collections") if isinstance(dc, dict) else None
        on = bool(cols) and any(str((c or {}).get("dataCollectionMode", "Enabled")).lower() == "enabled"
                                for c in (cols or {}).values())
        return "azure_online_deployment", {"endpoint": a.get("parent_id"), "data_collector": on}
    if kind.endswith("onlineendpoints"):
        return "azure_online_endpoint", {"auth_mode": props.get("authMode")}
    return None


# Terraform type -> (canonical kind, props builder).
TERRAFORM_TYPES: dict[str, tuple[str, Callable[[Props], Props]]] = {
    "aws_sagemaker_endpoint": ("sagemaker_endpoint", _sagemaker_endpoint),
    "aws_sagemaker_endpoint_configuration": ("sagemaker_endpoint_config", _sagemaker_config),
    "aws_api_gateway_rest_api": ("rest_api", lambda a: {}),
    "aws_api_gateway_stage": ("stage", _stage),
    "aws_api_gateway_method_settings": ("method_settings", _method_settings),
    "aws_api_gateway_method": ("method", _method),
    "aws_api_gateway_integration": ("integration", _integration),
    "aws_api_gateway_usage_plan": ("usage_plan", _usage_plan),
    "aws_api_gateway_usage_plan_key": ("usage_plan_key", lambda a: {"plan": a.get("usage_plan_id"), "key": a.get("key_id")}),
    "aws_api_gateway_api_key": ("api_key", lambda a: {"enabled": as_bool(a.get("enabled", True))}),
    "aws_apigatewayv2_api": ("http_api", lambda a: {"protocol": a.get("protocol_type")}),
    "aws_apigatewayv2_stage": ("stage", _http_stage),
    "aws_apigatewayv2_integration": ("integration", _integration),
    "aws_wafv2_web_acl": ("waf_acl", lambda a: {"rules": _rate_rules(a.get("rule"))}),
    "aws_wafv2_web_acl_association": ("waf_association", lambda a: {"resource": a.get("resource_arn"), "acl": a.get("web_acl_arn")}),
    "aws_lambda_function": ("lambda_function", _lambda),
    "aws_lambda_function_url": ("lambda_url", lambda a: {"function": a.get("function_name"), "auth": a.get("authorization_type")}),
    "google_vertex_ai_endpoint": ("vertex_endpoint", _vertex),
}
# Kinds whose cloud-side name is unique in an account, so a literal name may refer to them.
GLOBAL_NAMES = ("sagemaker_endpoint", "sagemaker_endpoint_config", "lambda_function", "waf_acl")
NAME_ATTRS = ("name", "function_name", "stage_name", "display_name")


def terraform_resource(rtype: str, rname: str, attrs: Props, **where: Any) -> Resource | None:
    """A canonical Resource for a Terraform resource block, or None for types the scan ignores."""
    if rtype == "azapi_resource":
        got = _azapi(attrs)
        if got is None:
            return None
        kind, props = got
    elif rtype in TERRAFORM_TYPES:
        kind, build = TERRAFORM_TYPES[rtype]
        props = build(attrs)
    else:
        return None
    address = f"{rtype}.{rname}"
    name = next((literal(attrs.get(k)) for k in NAME_ATTRS if literal(attrs.get(k))), None) or rname
    tags = attrs.get("tags") or attrs.get("labels") or {}
    tags = {str(k): str(v) for k, v in (first(tags) or {}).items() if not str(k).startswith("__")} if isinstance(first(tags), dict) else {}
    res = Resource(kind=kind, type=rtype, address=address, name=name, props=props, tags=tags, **where)
    res.keys.add(address)
    if kind in GLOBAL_NAMES:
        res.keys.add(name)
    return res
