"""The live AWS reader: read-only calls (List/Get/Describe) per region, regions in parallel.

Each region yields canonical resources (the same kinds and props as Terraform, via
:func:`terraform_resource`), with ARNs as their location. Throttling is retried by botocore's
standard retry mode (exponential backoff with jitter); a call refused for lack of permission is recorded (operation -> IAM action)
so every check it feeds becomes UNKNOWN naming the permission, and the scan goes on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from privaudit.errors import ConfigError
from privaudit.scan.aws_kinds import terraform_resource
from privaudit.scan.cloudformation import snake
from privaudit.scan.model import Resource

DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedException",
                "Forbidden", "ForbiddenException", "AuthorizationError"}
# Operation -> the IAM action it needs (docs/scan.md has the whole policy).
PERMISSIONS = {
    "ListEndpoints": "sagemaker:ListEndpoints", "DescribeEndpoint": "sagemaker:DescribeEndpoint",
    "DescribeEndpointConfig": "sagemaker:DescribeEndpointConfig", "ListTags": "sagemaker:ListTags",
    "GetRestApis": "apigateway:GET", "GetResources": "apigateway:GET", "GetStages": "apigateway:GET",
    "GetUsagePlans": "apigateway:GET", "GetUsagePlanKeys": "apigateway:GET", "GetApis": "apigateway:GET",
    "GetIntegrations": "apigateway:GET", "ListWebACLs": "wafv2:ListWebACLs", "GetWebACL": "wafv2:GetWebACL",
    "ListFunctions": "lambda:ListFunctions", "GetFunctionUrlConfig": "lambda:GetFunctionUrlConfig",
}
MAX_ATTEMPTS = 8


@dataclass
class LiveResult:
    resources: list[Resource] = field(default_factory=list)
    denied: dict[str, dict[str, str]] = field(default_factory=dict)  # region -> operation -> permission
    warnings: list[str] = field(default_factory=list)


class _Region:
    def __init__(self, session: Any, region: str, endpoint_url: str | None, config: Any) -> None:
        self.session, self.region, self.url, self.config = session, region, endpoint_url, config
        self.denied: dict[str, str] = {}
        self.warnings: list[str] = []
        self.out: list[Resource] = []

    def client(self, service: str) -> Any:
        return self.session.client(service, region_name=self.region, endpoint_url=self.url, config=self.config)

    def call(self, op: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in DENIED_CODES:
                self.denied[op] = PERMISSIONS.get(op, op)
                return None
            if code in ("ResourceNotFoundException", "NotFoundException", "ValidationException"):
                return None
            self.warnings.append(f"AWS {self.region} {op}: {code or 'error'}: {exc.response.get('Error', {}).get('Message', '')}")
            return None

    def pages(self, client: Any, op: str, method: str, key: str, **kwargs: Any) -> list[Any]:
        items: list[Any] = []
        token_in, token_out = {"get_rest_apis": ("position", "position"), "get_usage_plans": ("position", "position"),
                               "get_resources": ("position", "position"), "get_usage_plan_keys": ("position", "position"),
                               "get_apis": ("NextToken", "NextToken"), "list_web_acls": ("NextMarker", "NextMarker"),
                               "list_functions": ("Marker", "NextMarker"), "list_endpoints": ("NextToken", "NextToken"),
                               "get_integrations": ("NextToken", "NextToken"), "get_stages": ("NextToken", "NextToken")
                               }.get(method, ("NextToken", "NextToken"))
        token = None
        for _ in range(10_000):
            args = dict(kwargs, **({token_in: token} if token else {}))
            page = self.call(op, getattr(client, method), **args)
            if page is None:
                break
            items += page.get(key, []) or []
            token = page.get(token_out)
            if not token:
                break
        return items

    def add(self, tf_type: str, name: str, attrs: dict[str, Any], arn: str, keys: tuple[str, ...] = ()) -> Resource:
        res = terraform_resource(tf_type, name, attrs, file=None, line=None, arn=arn, region=self.region)
        assert res is not None
        res.address = arn
        res.keys = {arn, *keys} | ({res.name} if res.kind in ("sagemaker_endpoint", "sagemaker_endpoint_config",
                                                                "lambda_function", "waf_acl") else set())
        self.out.append(res)
        return res


def _sagemaker(r: _Region, pool: ThreadPoolExecutor) -> None:
    sm = r.client("sagemaker")
    summaries = r.pages(sm, "ListEndpoints", "list_endpoints", "Endpoints")

    def one(s: dict[str, Any]) -> None:
        name = s["EndpointName"]
        ep = r.call("DescribeEndpoint", sm.describe_endpoint, EndpointName=name) or {}
        arn = ep.get("EndpointArn") or s.get("EndpointArn") or name
        tags = r.call("ListTags", sm.list_tags, ResourceArn=arn) or {}
        cfg_name = ep.get("EndpointConfigName")
        r.add("aws_sagemaker_endpoint", name, {"name": name, "endpoint_config_name": cfg_name,
                                               "tags": {t["Key"]: t["Value"] for t in tags.get("Tags", [])}}, arn)
        if cfg_name:
            cfg = r.call("DescribeEndpointConfig", sm.describe_endpoint_config, EndpointConfigName=cfg_name)
            if cfg is not None:
                dc = cfg.get("DataCaptureConfig")
                attrs: dict[str, Any] = {"name": cfg_name}
                if dc:
                    attrs["data_capture_config"] = [{
                        "enable_capture": dc.get("EnableCapture", True), "kms_key_id": dc.get("KmsKeyId"),
                        "initial_sampling_percentage": dc.get("InitialSamplingPercentage"),
                        "destination_s3_uri": dc.get("DestinationS3Uri"),
                        "capture_options": [{"capture_mode": o.get("CaptureMode")} for o in dc.get("CaptureOptions", [])]}]
                if cfg.get("ExplainerConfig"):
                    attrs["explainer_config"] = [cfg["ExplainerConfig"]]
                r.add("aws_sagemaker_endpoint_configuration", cfg_name, attrs,
                      cfg.get("EndpointConfigArn") or f"{arn}/config/{cfg_name}")

    list(pool.map(one, summaries))


def _rest_apis(r: _Region) -> None:
    gw = r.client("apigateway")
    for api in r.pages(gw, "GetRestApis", "get_rest_apis", "items"):
        api_id = api["id"]
        api_arn = f"arn:aws:apigateway:{r.region}::/restapis/{api_id}"
        r.add("aws_api_gateway_rest_api", api.get("name") or api_id, {"name": api.get("name")}, api_arn, (api_id,))
        for res in r.pages(gw, "GetResources", "get_resources", "items", restApiId=api_id, embed=["methods"]):
            for verb, method in (res.get("resourceMethods") or {}).items():
                m = method if method.get("httpMethod") else (r.call("GetResources", gw.get_method, restApiId=api_id,
                                                                      resourceId=res["id"], httpMethod=verb) or {})
                m_arn = f"{api_arn}/resources/{res['id']}/methods/{verb}"
                r.add("aws_api_gateway_method", f"{verb} {res.get('path', '/')}", {
                    "rest_api_id": api_id, "http_method": verb, "resource_id": res["id"],
                    "api_key_required": bool(m.get("apiKeyRequired")), "authorization": m.get("authorizationType")}, m_arn)
                integ = m.get("methodIntegration") or {}
                if integ.get("uri"):
                    ir = r.add("aws_api_gateway_integration", f"{verb} {res.get('path', '/')} integration",
                               {"rest_api_id": api_id, "uri": integ["uri"]}, m_arn + "/integration")
                    ir.props["method"] = m_arn
        stages = r.call("GetStages", gw.get_stages, restApiId=api_id) or {}
        for st in stages.get("item", []):
            st_arn = f"{api_arn}/stages/{st['stageName']}"
            res = r.add("aws_api_gateway_stage", st["stageName"], {
                "rest_api_id": api_id, "stage_name": st["stageName"],
                "access_log_settings": [{"destination_arn": (st.get("accessLogSettings") or {}).get("destinationArn")}]
                if st.get("accessLogSettings") else None}, st_arn)
            res.name = st["stageName"]
            stage_wide = (st.get("methodSettings") or {}).get("*/*") or {}
            if "throttlingRateLimit" in stage_wide or "throttlingBurstLimit" in stage_wide:
                res.props["throttle"] = {"rate": stage_wide.get("throttlingRateLimit"), "burst": stage_wide.get("throttlingBurstLimit")}
            if st.get("webAclArn"):
                r.add("aws_wafv2_web_acl_association", f"{st['stageName']} waf", {"resource_arn": st_arn,
                      "web_acl_arn": st["webAclArn"]}, st_arn + "/webacl")
    for plan in r.pages(gw, "GetUsagePlans", "get_usage_plans", "items"):
        stages = [{"api_id": s.get("apiId"), "stage": s.get("stage"),
                   "throttle": [next(iter((s.get("throttle") or {}).values()), {})] if s.get("throttle") else None}
                  for s in plan.get("apiStages", [])]
        t, q = plan.get("throttle") or {}, plan.get("quota") or {}
        plan_arn = f"arn:aws:apigateway:{r.region}::/usageplans/{plan['id']}"
        r.add("aws_api_gateway_usage_plan", plan.get("name") or plan["id"], {
            "name": plan.get("name"), "api_stages": stages,
            "throttle_settings": [{"rate_limit": t.get("rateLimit"), "burst_limit": t.get("burstLimit")}] if t else None,
            "quota_settings": [{"limit": q.get("limit"), "period": q.get("period")}] if q else None}, plan_arn, (plan["id"],))
        for key in r.pages(gw, "GetUsagePlanKeys", "get_usage_plan_keys", "items", usagePlanId=plan["id"]):
            r.add("aws_api_gateway_usage_plan_key", key.get("name") or key["id"], {"usage_plan_id": plan["id"],
                  "key_id": key["id"]}, f"{plan_arn}/keys/{key['id']}")


def _http_apis(r: _Region) -> None:
    gw2 = r.client("apigatewayv2")
    for api in r.pages(gw2, "GetApis", "get_apis", "Items"):
        if api.get("ProtocolType") != "HTTP":
            continue
        api_id = api["ApiId"]
        api_arn = f"arn:aws:apigateway:{r.region}::/apis/{api_id}"
        r.add("aws_apigatewayv2_api", api.get("Name") or api_id, {"name": api.get("Name"), "protocol_type": "HTTP"},
              api_arn, (api_id,))
        for integ in r.pages(gw2, "GetIntegrations", "get_integrations", "Items", ApiId=api_id):
            r.add("aws_apigatewayv2_integration", integ["IntegrationId"], {"api_id": api_id,
                  "integration_uri": integ.get("IntegrationUri")}, f"{api_arn}/integrations/{integ['IntegrationId']}")
        for st in r.pages(gw2, "GetStages", "get_stages", "Items", ApiId=api_id):
            d = st.get("DefaultRouteSettings") or {}
            r.add("aws_apigatewayv2_stage", st["StageName"], {"api_id": api_id, "name": st["StageName"],
                  "default_route_settings": [{"throttling_rate_limit": d.get("ThrottlingRateLimit"),
                                              "throttling_burst_limit": d.get("ThrottlingBurstLimit")}]},
                  f"{api_arn}/stages/{st['StageName']}")


def _snake(value: Any) -> Any:
    if isinstance(value, list):
        return [_snake(v) for v in value]
    if isinstance(value, dict):
        return {snake(k): _snake(v) for k, v in value.items()}
    return value


def _wafs(r: _Region) -> None:
    waf = r.client("wafv2")
    for summary in r.pages(waf, "ListWebACLs", "list_web_acls", "WebACLs", Scope="REGIONAL"):
        acl = r.call("GetWebACL", waf.get_web_acl, Name=summary["Name"], Scope="REGIONAL", Id=summary["Id"])
        if acl is None:
            continue
        body = acl.get("WebACL", {})
        rules = _snake(body.get("Rules", []))
        for rule in rules:
            rate = (rule.get("statement") or {}).get("rate_based_statement")
            if isinstance(rate, dict) and "custom_keys" in rate:
                rate["custom_key"] = rate.pop("custom_keys")
        r.add("aws_wafv2_web_acl", body.get("Name") or summary["Name"], {"name": body.get("Name"), "rule": rules},
              body.get("ARN") or summary["ARN"])


def _lambdas(r: _Region) -> None:
    lam = r.client("lambda")
    for fn in r.pages(lam, "ListFunctions", "list_functions", "Functions"):
        env = (fn.get("Environment") or {}).get("Variables") or {}
        res = r.add("aws_lambda_function", fn["FunctionName"], {"function_name": fn["FunctionName"],
                    "environment": [{"variables": env}]}, fn["FunctionArn"])
        url = r.call("GetFunctionUrlConfig", lam.get_function_url_config, FunctionName=fn["FunctionName"])
        if url:
            r.add("aws_lambda_function_url", fn["FunctionName"], {"function_name": res.arn,
                  "authorization_type": url.get("AuthType")}, url.get("FunctionUrl") or f"{fn['FunctionArn']}/url")


READERS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("SageMaker", _sagemaker), ("API Gateway REST", _rest_apis), ("API Gateway HTTP", _http_apis),
    ("WAFv2", _wafs), ("Lambda", _lambdas))


def _read_region(session: Any, region: str, opts: Any, config: Any, advance: Callable[[str], None]) -> _Region:
    r = _Region(session, region, opts.endpoint_url, config)
    with ThreadPoolExecutor(max_workers=max(1, opts.max_workers)) as pool:
        for label, reader in READERS:
            if reader is _sagemaker:
                reader(r, pool)
            else:
                reader(r)
            advance(label)
    return r


def read_account(opts: Any, session: Any = None) -> LiveResult:
    """Every supported resource in the requested regions. ``session`` (a boto3 Session) is for tests
    and embedding; by default one is made from ``opts.profile``."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, NoCredentialsError, ProfileNotFound
    except ModuleNotFoundError as exc:
        raise ConfigError(f"--aws needs boto3 (missing module '{exc.name}'): pip install 'privaudit[scan]'") from None
    try:
        session = session or getattr(opts, "session", None) or boto3.Session(profile_name=opts.profile)
    except ProfileNotFound:
        raise ConfigError(f"--aws-profile {opts.profile}: no such profile in the AWS config files") from None
    regions = list(opts.regions) or [session.region_name or "us-east-1"]
    config = Config(retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS}, max_pool_connections=max(10, opts.max_workers * 2),
                    connect_timeout=10, read_timeout=60)
    result = LiveResult()
    progress = None
    if opts.show_progress:
        from rich.progress import BarColumn, Progress, TextColumn

        progress = Progress(TextColumn("AWS {task.description}"), BarColumn(), TextColumn("{task.fields[step]}"), transient=True)
        progress.start()
    tasks = {reg: progress.add_task(reg, total=len(READERS), step="") if progress else None for reg in regions}

    def advance(region: str) -> Callable[[str], None]:
        def step(label: str) -> None:
            if progress is not None:
                progress.update(tasks[region], advance=1, step=label)  # type: ignore[arg-type]
        return step

    try:
        with ThreadPoolExecutor(max_workers=len(regions)) as pool:
            futures = {reg: pool.submit(_read_region, session, reg, opts, config, advance(reg)) for reg in regions}
            for reg, fut in futures.items():
                r = fut.result()
                result.resources += r.out
                if r.denied:
                    result.denied[reg] = dict(r.denied)
                    result.warnings.append(f"AWS {reg}: permission denied for " + ", ".join(
                        f"{op} ({perm})" for op, perm in sorted(r.denied.items())) + "; the checks they feed are UNKNOWN")
                result.warnings += r.warnings
    except NoCredentialsError:
        raise ConfigError("--aws: no AWS credentials found (set AWS_PROFILE, --aws-profile, or the AWS_* variables)") from None
    except BotoCoreError as exc:
        raise ConfigError(f"--aws: {exc}") from None
    finally:
        if progress is not None:
            progress.stop()
    return result
