"""probing_monitoring: requests (inputs) are captured or logged where probing can be seen.

PASS for SageMaker data capture including Input, a KServe/Seldon logger in mode all or request,
Vertex AI request-response logging, an Azure ML data collector, or a guard with probing detectors.
API Gateway access logs see callers but not inputs: they count only with a privaudit monitor
declared on the endpoint (tag ``privaudit:monitor``). FAIL when none of these is configured.
"""

from __future__ import annotations

from privaudit.findings import CheckStatus
from privaudit.rules.deployment import ControlOutcome
from privaudit.scan.checks import CheckMeta, Context, outcome, register_check
from privaudit.scan.graph import Deployment

META = CheckMeta(
    key="probing_monitoring", title="Inference traffic is captured and monitored for systematic probing",
    reads="SageMaker DataCaptureConfig; KServe/Seldon logger; Vertex predict_request_response_logging_config; "
          "Azure ML dataCollector; guard.yaml detectors; API Gateway access logs with a privaudit:monitor tag",
    aws_operations=("DescribeEndpoint", "DescribeEndpointConfig", "GetStages"),
)


@register_check(META)
def run(dep: Deployment, ctx: Context) -> list[ControlOutcome]:
    ep, p = dep.endpoint, dep.endpoint.props
    detecting = [g for g in dep.guards if g.props["controls"].probing_detection]
    if detecting:
        dets = ", ".join(detecting[0].props["controls"].detectors)
        return [outcome(META, CheckStatus.PASS, f"guard {detecting[0].name} runs probing detectors ({dets})", detecting)]
    if ep.kind == "sagemaker_endpoint":
        if not dep.configs:
            return [outcome(META, CheckStatus.UNKNOWN, f"the endpoint config of {ep.name} is not in the scanned files",
                            [ep], needs="scan the endpoint configuration too")]
        cfg = dep.configs[0]
        cap = cfg.props.get("capture")
        if cap and cap.get("enabled") is not False and (not cap["modes"] or "Input" in cap["modes"]):
            return [outcome(META, CheckStatus.PASS, f"endpoint config {cfg.name} captures requests ("
                            f"{'/'.join(cap['modes']) or 'Input/Output'}, {cap.get('sampling') or 100:g}% sampled"
                            f"{' to ' + str(cap['destination']) if cap.get('destination') else ''})", [cfg])]
        why = ("captures responses only, not the inputs probing shows in" if cap and cap.get("enabled") is not False
               else "has data capture disabled" if cap else "has no data capture")
        return _fail_or_logs(dep, f"endpoint config {cfg.name} {why}", cfg)
    if ep.kind in ("kserve", "seldon"):
        mode = p.get("logger_mode")
        if mode in ("all", "request"):
            return [outcome(META, CheckStatus.PASS, f"{ep.type} {ep.name} logs requests (logger mode {mode})", [ep])]
        return _fail_or_logs(dep, f"{ep.type} {ep.name} has " + (f"a logger in mode {mode} (responses only)" if mode else "no request logger"), ep)
    if ep.kind == "vertex_endpoint":
        if p.get("logging"):
            return [outcome(META, CheckStatus.PASS, f"Vertex endpoint {ep.name} logs requests and responses", [ep])]
        return _fail_or_logs(dep, f"Vertex endpoint {ep.name} has request-response logging off", ep)
    if ep.kind == "azure_online_endpoint":
        if not dep.configs:
            return [outcome(META, CheckStatus.UNKNOWN, f"no deployment of online endpoint {ep.name} is in the scanned files",
                            [ep], needs="scan the onlineEndpoints/deployments resource too")]
        on = [d for d in dep.configs if d.props.get("data_collector")]
        if on:
            return [outcome(META, CheckStatus.PASS, f"deployment {on[0].name} collects model inputs (dataCollector)", on)]
        return _fail_or_logs(dep, f"deployment {dep.configs[0].name} has no data collector", dep.configs[0])
    return [outcome(META, CheckStatus.UNKNOWN, f"no capture setting is known for {ep.kind}", [ep],
                    needs="put a privaudit guard with detectors in front")]


def _fail_or_logs(dep: Deployment, why: str, at: object) -> list[ControlOutcome]:
    logged = [p.entry for p in dep.paths if p.kind in ("rest_api", "http_api") and p.entry.props.get("access_log")]
    monitor = dep.tag("privaudit:monitor", "privaudit.io/monitor")
    res = [at] if at is not None else []
    if logged and monitor:
        return [outcome(META, CheckStatus.PASS, f"{why}, but stage {logged[0].name} writes access logs that privaudit "
                                                f"monitor {monitor} reads", [*logged, *res])]  # type: ignore[list-item]
    extra = f"; stage {logged[0].name} has access logs, but they hold callers, not inputs, and no monitor is declared" if logged else ""
    return [outcome(META, CheckStatus.FAIL, why + extra, [*res, *logged])]  # type: ignore[list-item]
