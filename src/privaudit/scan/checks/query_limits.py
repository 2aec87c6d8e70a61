"""query_limits: every path to the model limits queries per principal (API key, token subject).

A path passes with a usage plan (throttle or quota) on a stage whose methods require an API key, a
WAF rate rule keyed on a header, query argument, cookie or label (a custom key other than the
address), or a privaudit guard with per-principal limits. It fails with no limit, with stage or
method throttling alone (one bucket shared by every caller), on an HTTP API (no per-client
throttling), on a Lambda function URL, and on a WAF rate rule keyed on the client IP or a
forwarded IP only -- the pitfall the rules warn about: one caller with many addresses, or many
callers behind one NAT, defeat it.
"""

from __future__ import annotations

from privaudit.findings import CheckStatus
from privaudit.rules.deployment import ControlOutcome
from privaudit.scan.checks import CheckMeta, Context, outcome, register_check
from privaudit.scan.graph import AccessPath, Deployment
from privaudit.scan.model import Resource

META = CheckMeta(
    key="query_limits", title="Queries are limited per principal (not per IP) on every path to the model",
    reads="API Gateway stages, methods (api_key_required), method settings, usage plans and keys; WAFv2 "
          "rate-based rules and associations; Lambda function URLs; guard.yaml identity and limits",
    aws_operations=("GetRestApis", "GetStages", "GetResources", "GetUsagePlans", "GetUsagePlanKeys", "GetApis",
                    "ListWebACLs", "GetWebACL", "ListResourcesForWebACL", "GetWebACLForResource", "ListFunctions",
                    "GetFunctionUrlConfig"),
)
IP_KEYS = {"IP", "FORWARDED_IP"}
IP_CUSTOM = {"ip", "forwarded_ip"}
PITFALL = ("rate rule keyed on the client IP only -- the rules' pitfall: an attacker spreads queries over many "
           "addresses, and callers behind one NAT share a budget; key the rule on the API-key header or token instead")


def _waf_verdict(acls: list[Resource]) -> tuple[bool | None, str, list[Resource]]:
    """(per principal?, text, acls read); None when no rate rule exists."""
    per_ip, per_principal = [], []
    for acl in acls:
        for rule in acl.props.get("rules", []):
            key = rule["key"]
            custom = [k["type"].lower() for k in rule.get("custom_keys", [])]
            limit = rule.get("limit")
            desc = (f"WAF {acl.name} rule {rule.get('name')} (" + (f"limit {limit:g}, " if limit is not None else "")
                    + f"key {key}" + (f": {', '.join(custom)}" if custom else "") + ")")
            if key in IP_KEYS or (key == "CUSTOM_KEYS" and custom and set(custom) <= IP_CUSTOM):
                per_ip.append(desc)
            elif key == "CUSTOM_KEYS" and custom:
                per_principal.append(desc)
            # CONSTANT aggregates every request: no better than stage throttling
    if per_principal:
        return True, "; ".join(per_principal), acls
    if per_ip:
        return False, "; ".join(per_ip) + f": {PITFALL}", acls
    return None, "", acls


def _judge_path(p: AccessPath) -> tuple[bool, str, list[Resource], str | None]:
    """(per principal?, evidence, resources, pitfall flag) for one path."""
    label = p.label()
    if p.kind == "guard":
        c = p.entry.props["controls"]
        return bool(c.per_principal_limits), f"guard {p.entry.name}: {c.limit_description}", [p.entry], None
    if p.kind == "lambda_url":
        auth = p.entry.props.get("auth") or "NONE"
        return False, (f"Lambda function URL {p.entry.name} (auth {auth}) reaches the model with no per-caller "
                       "limit; it bypasses any API in front"), [p.entry, *p.via], None
    if p.kind == "http_api":
        return False, (f"HTTP API {label}: HTTP APIs throttle per route or stage for all callers together and have "
                       "no usage plans or API keys"), [p.entry, *(p.api and [p.api] or [])], None
    used: list[Resource] = [p.entry] + ([p.api] if p.api else [])
    keyed = [m for m in p.methods if m.props.get("api_key_required") is True]
    unkeyed = [m for m in p.methods if m.props.get("api_key_required") is not True]
    plan_limited = [pl for pl in p.plans if pl.props.get("throttle") or pl.props.get("quota")
                    or any(s.get("throttle") for s in pl.props.get("stages", []))]
    waf_ok, waf_text, acls = _waf_verdict(p.waf_acls)
    if plan_limited and p.methods and not unkeyed:
        texts = [f"usage plan {pl.name} ({_limit_text(pl)})" for pl in plan_limited]
        return True, f"{label}: methods require an API key and {', '.join(texts)} limits each key", used + keyed + plan_limited, None
    if waf_ok:
        return True, f"{label}: {waf_text}", used + acls, None
    if plan_limited and unkeyed:
        names = ", ".join(str(m.props.get("http_method") or m.name) for m in unkeyed)
        return False, (f"{label}: usage plan {plan_limited[0].name} limits keys, but method {names} does not require an "
                       "API key, so callers without one bypass it"), used + unkeyed + plan_limited, None
    if waf_ok is False:
        return False, f"{label}: {waf_text}", used + acls, "per_ip_waf"
    throttles = [s for s in p.method_settings if s.props.get("throttle")] + ([p.entry] if p.entry.props.get("throttle") else [])
    if throttles:
        return False, (f"{label}: only stage/method throttling ({_throttle_text(throttles[0])}), one budget shared by "
                       "all callers, not a limit per caller"), used + throttles, None
    return False, f"{label}: no usage plan, per-key WAF rule or guard limits queries", used + p.methods, None


def _limit_text(plan: Resource) -> str:
    parts = []
    t = plan.props.get("throttle")
    if t:
        parts.append(f"{t.get('rate') or 0:g} req/s, burst {t.get('burst') or 0:g}")
    q = plan.props.get("quota")
    if q and q.get("limit") is not None:
        parts.append(f"quota {q['limit']:g} per {str(q.get('period') or '').lower()}")
    return ", ".join(parts) or "per-stage throttle"


def _throttle_text(res: Resource) -> str:
    t = res.props.get("throttle") or {}
    return f"{t.get('rate') or 0:g} req/s, burst {t.get('burst') or 0:g} on {res.name}"


@register_check(META)
def run(dep: Deployment, ctx: Context) -> list[ControlOutcome]:
    if not dep.paths:
        return [outcome(META, CheckStatus.UNKNOWN,
                        f"no API stage, Lambda URL or guard that reaches {dep.name} is in the scanned files", [dep.endpoint],
                        needs="scan the code that exposes the endpoint (API Gateway, ingress, guard.yaml) with it")]
    judged = [(p, *_judge_path(p)) for p in dep.paths]
    failing = [j for j in judged if not j[1]]
    if failing:
        flags = sorted({f for *_x, f in failing if f})
        text = "; ".join(t for _p, _ok, t, _r, _f in failing)
        if len(judged) > len(failing):
            text += f" (while {len(judged) - len(failing)} other path(s) are limited per principal: the unlimited one bypasses them)"
        res = [r for _p, _ok, _t, rs, _f in failing for r in rs]
        at = next((r for r in res if r.kind == "waf_acl"), None) if flags else None
        return [outcome(META, CheckStatus.FAIL, text, res, at=at, data={"pitfall": flags[0] if flags else None,
                                                                          "paths": [p.label() for p, *_ in failing]})]
    res = [r for _p, _ok, _t, rs, _f in judged for r in rs]
    return [outcome(META, CheckStatus.PASS, "; ".join(t for _p, _ok, t, _r, _f in judged), res)]
