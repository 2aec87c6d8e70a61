"""The deployment graph: for each model endpoint, every resource on a path that reaches it.

Edges follow references (Terraform addresses, CloudFormation Ref/GetAtt/Sub, names, ARNs) and the
integration URIs API Gateway uses (``...:runtime.sagemaker:path//endpoints/NAME/invocations``,
``...:lambda:path/.../functions/ARN/invocations``). An :class:`AccessPath` is one way a caller
reaches the model: an API stage and method, an HTTP API, a Lambda function URL, or a guard.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlparse

from privaudit.scan.model import ENDPOINT_KINDS, Resource, literal, reference_tokens

_SM_URI = re.compile(r"endpoints/(.+?)/invocations")
_LAMBDA_URI = re.compile(r"functions/(.+?)/invocations")
_LAMBDA_NAME = re.compile(r":function:([A-Za-z0-9_-]+)")
_STAGE_IN_ARN = re.compile(r"/stages/([A-Za-z0-9_-]+)")


@dataclass
class AccessPath:
    kind: str  # "rest_api" | "http_api" | "lambda_url" | "guard"
    entry: Resource  # the stage, function URL or guard a caller talks to
    api: Resource | None = None
    methods: list[Resource] = field(default_factory=list)
    method_settings: list[Resource] = field(default_factory=list)
    plans: list[Resource] = field(default_factory=list)
    plan_keys: list[Resource] = field(default_factory=list)
    waf_acls: list[Resource] = field(default_factory=list)
    via: list[Resource] = field(default_factory=list)  # integrations and functions between entry and model

    def label(self) -> str:
        if self.kind in ("rest_api", "http_api") and self.api is not None:
            return f"{self.api.name} stage {self.entry.props.get('stage_name') or self.entry.name}"
        return f"{self.kind} {self.entry.name}"


@dataclass
class Deployment:
    id: str
    name: str
    kind: str
    endpoint: Resource
    configs: list[Resource] = field(default_factory=list)  # SageMaker endpoint config, Azure deployments
    paths: list[AccessPath] = field(default_factory=list)
    guards: list[Resource] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    denied: dict[str, str] = field(default_factory=dict)  # AWS operation -> the permission it needs

    def add(self, res: Resource, src: Resource | None = None, dst: Resource | None = None, label: str = "") -> None:
        if all(r is not res for r in self.resources):
            self.resources.append(res)
        if src is not None and dst is not None:
            edge = (src.address, dst.address, label)
            if edge not in self.edges:
                self.edges.append(edge)

    def tag(self, *names: str) -> str | None:
        """A tag or label of the endpoint (or its config), first of ``names`` found. Spellings are
        compared loosely (``privaudit:report``, ``privaudit-report``, ``privaudit.io/report`` are one
        key), since GCP labels and Kubernetes keys cannot hold a colon."""
        wanted = [tag_key(n) for n in names]
        for res in [self.endpoint, *self.configs]:
            have = {tag_key(k): v for k, v in res.tags.items()}
            for n in wanted:
                if n in have:
                    return have[n]
        return None


def tag_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("privaudit.io", "privaudit"))


class Index:
    def __init__(self, resources: list[Resource]) -> None:
        self.by_key: dict[str, list[Resource]] = defaultdict(list)
        self.by_kind: dict[str, list[Resource]] = defaultdict(list)
        for r in resources:
            self.by_kind[r.kind].append(r)
            for k in r.keys | ({r.arn} if r.arn else set()):
                self.by_key[k].append(r)

        self._rev: dict[tuple[str, str], dict[int, list[Resource]]] = {}

    def referring(self, kind: str, attr: str, target: Resource) -> list[Resource]:
        """Resources of ``kind`` whose ``props[attr]`` refers to ``target`` (reverse lookups, cached)."""
        key = (kind, attr)
        if key not in self._rev:
            rev: dict[int, list[Resource]] = defaultdict(list)
            for r in self.by_kind[kind]:
                for t in self.resolve(r.props.get(attr)):
                    rev[id(t)].append(r)
            self._rev[key] = rev
        return self._rev[key].get(id(target), [])

    def resolve(self, value: object, kind: str | tuple[str, ...] | None = None) -> list[Resource]:
        kinds = (kind,) if isinstance(kind, str) else kind
        out: list[Resource] = []
        for tok in reference_tokens(value):
            for r in self.by_key.get(tok, []):
                if (kinds is None or r.kind in kinds) and all(r is not o for o in out):
                    out.append(r)
        return out

    def refers(self, value: object, target: Resource) -> bool:
        return any(r is target for r in self.resolve(value))


def _integration_targets(ix: Index, integ: Resource) -> list[Resource]:
    uri = str(integ.props.get("uri") or "")
    out: list[Resource] = []
    m = _SM_URI.search(uri)
    if m:
        out += ix.resolve(m.group(1), "sagemaker_endpoint")
    m = _LAMBDA_URI.search(uri)
    if m:
        fn = m.group(1)
        out += ix.resolve(fn, "lambda_function")
        name = _LAMBDA_NAME.search(fn)
        if name:
            out += ix.resolve(name.group(1), "lambda_function")
    return out


def _stage_name(stage: Resource) -> str:
    return str(stage.props.get("stage_name") or stage.name)


def _matches_stage(ix: Index, value: object, stage: Resource) -> bool:
    return literal(value) == _stage_name(stage) or ix.refers(value, stage)


def _rest_path(ix: Index, dep: Deployment, integ: Resource, api: Resource, stage: Resource, via: list[Resource]) -> AccessPath:
    path = AccessPath(kind="rest_api" if api.kind == "rest_api" else "http_api", entry=stage, api=api, via=via)
    if "method" in integ.props:
        path.methods = ix.resolve(integ.props["method"], "method")
    else:
        verb = integ.props.get("http_method")
        path.methods = [m for m in ix.referring("method", "api", api) if ix.refers(verb, m) or (
                        m.props.get("resource") == integ.props.get("resource") and str(m.props.get("http_method")) == str(verb))]
    path.method_settings = [s for s in ix.referring("method_settings", "api", api)
                            if _matches_stage(ix, s.props.get("stage_name"), stage)]
    for plan in ix.by_kind["usage_plan"]:
        if any(ix.refers(s.get("api"), api) and _matches_stage(ix, s.get("stage"), stage) for s in plan.props["stages"]):
            path.plans.append(plan)
            path.plan_keys += ix.referring("usage_plan_key", "plan", plan)
    assocs = ix.referring("waf_association", "resource", stage) + ix.referring("waf_association", "resource", api)
    for assoc in [a for i, a in enumerate(assocs) if all(a is not b for b in assocs[:i])]:
        target = assoc.props.get("resource")
        on_stage = ix.refers(target, stage)
        if not on_stage and ix.refers(target, api):
            named = _STAGE_IN_ARN.search(str(target))
            on_stage = named is None or named.group(1) == _stage_name(stage)
        if on_stage:
            for acl in ix.resolve(assoc.props.get("acl"), "waf_acl"):
                path.waf_acls.append(acl)
                dep.add(assoc)
                dep.add(acl, acl, stage, "protects")
    dep.add(api)
    dep.add(stage, stage, api, "serves")
    for m in path.methods:
        dep.add(m, api, m, "method")
        dep.add(integ, m, integ, "integration")
    for s in path.method_settings:
        dep.add(s, s, stage, "throttles")
    for p in path.plans:
        dep.add(p, p, stage, "limits")
    for k in path.plan_keys:
        dep.add(k, k, next(p for p in path.plans if ix.refers(k.props.get("plan"), p)), "key")
    return path


def _add_integration_paths(ix: Index, dep: Deployment, integ: Resource, via: list[Resource]) -> None:
    dep.add(integ, integ, via[-1] if via else dep.endpoint, "invokes")
    for api in ix.resolve(integ.props.get("api"), ("rest_api", "http_api")):
        for stage in ix.referring("stage", "api", api):
            dep.paths.append(_rest_path(ix, dep, integ, api, stage, [integ, *via]))


def build(resources: list[Resource]) -> list[Deployment]:
    ix = Index(resources)
    deployments = []
    integrations: dict[int, list[Resource]] = defaultdict(list)
    for integ in ix.by_kind["integration"]:
        for t in _integration_targets(ix, integ):
            integrations[id(t)].append(integ)
    for ep in [r for k in ENDPOINT_KINDS for r in ix.by_kind[k]]:
        dep = Deployment(id=ep.arn or f"{ep.type}:{ep.address}" + (f"@{ep.region}" if ep.region else ""),
                         name=ep.name, kind=ep.kind, endpoint=ep)
        dep.add(ep)
        if ep.kind == "sagemaker_endpoint":
            for cfg in ix.resolve(ep.props.get("config"), "sagemaker_endpoint_config"):
                dep.configs.append(cfg)
                dep.add(cfg, ep, cfg, "config")
        if ep.kind == "azure_online_endpoint":
            for d in ix.referring("azure_online_deployment", "endpoint", ep):
                dep.configs.append(d)
                dep.add(d, d, ep, "deployment")
        callers = ix.referring("lambda_function", "env", ep)
        for fn in callers:
            dep.add(fn, fn, ep, "invokes")
            for url in ix.referring("lambda_url", "function", fn):
                dep.add(url, url, fn, "url")
                dep.paths.append(AccessPath(kind="lambda_url", entry=url, via=[fn]))
        for integ in integrations.get(id(ep), []):
            _add_integration_paths(ix, dep, integ, [])
        for fn in callers:
            for integ in integrations.get(id(fn), []):
                _add_integration_paths(ix, dep, integ, [fn])
        for guard in ix.by_kind["guard"]:
            if _guards(guard, ep):
                dep.guards.append(guard)
                dep.add(guard, guard, ep, "fronts")
                dep.paths.append(AccessPath(kind="guard", entry=guard))
        deployments.append(dep)
    return deployments


def _guards(guard: Resource, ep: Resource) -> bool:
    url = urlparse(str(guard.props.get("upstream") or ""))
    host = (url.hostname or "").split(".")
    segments = [s for s in url.path.split("/") if s]
    names = {ep.name, ep.name.split(":")[0]}
    return bool(host and host[0] in names) or any(s in names or s.split(":")[0] in names for s in segments)


def unique_names(deployments: list[Deployment]) -> None:
    """Two deployments with one name (regions, namespaces, stacks) get a qualifier, so ids stay distinct."""
    count: dict[str, int] = defaultdict(int)
    for d in deployments:
        count[d.name] += 1
    for d in deployments:
        if count[d.name] > 1:
            ep = d.endpoint
            qual = ep.region or ep.props.get("namespace") or (ep.file or ep.address)
            d.name = f"{d.name}@{qual}"
