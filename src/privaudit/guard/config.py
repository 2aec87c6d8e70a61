"""The guard's YAML configuration (``guard.yaml``): strict pydantic models and a loader whose every
complaint is one line naming the file and the key path, e.g.
``guard.yaml: limits.default: '20/sekond' is not a rate string like '20/second;120/minute'``.

Sections the monitoring side consumes (``log``, ``detectors``, ``response``, ``allow``, ``alerts``,
``escalation``) are only checked for their basic shape here; their meaning belongs to
``privaudit.guard.monitoring``, which reports its own errors.
docs/guard.md documents every key.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from privaudit.ci.controls import parse_rates, read_guard_yaml
from privaudit.errors import ConfigError
from privaudit.guard.events import LEVELS

# Only signatures made with a private key: a verifier holding just public keys can never be fooled into
# treating one as an HMAC secret (the classic RS256 -> HS256 confusion).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K", "ES384", "ES512", "EdDSA"}
)
STORAGE_SCHEMES = ("memory", "redis", "rediss")


class _Strict(BaseModel):
    # Unknown keys are refused: a typo such as "limts" must not silently drop a control.
    model_config = ConfigDict(extra="forbid")


def _check_rates(value: str) -> str:
    parse_rates(value)  # the grammar privaudit.ci.controls reads too; its ValueError names the problem
    return value


Rate = Annotated[str, AfterValidator(_check_rates)]


class ProtocolConfig(_Strict):
    """How clients and the upstream speak: the same wire formats ``privaudit audit`` reads."""

    type: Literal["auto", "kserve-v1", "v2", "custom"] = "auto"
    input_field: str = "instances"
    output_field: str = "predictions"
    row_format: Literal["list", "dict"] = "list"
    feature_names: Optional[list[str]] = None
    classes: Optional[list[Union[str, int, float]]] = None

    @model_validator(mode="after")
    def _custom_only(self) -> ProtocolConfig:
        if self.type != "custom":
            for key, default in (("input_field", "instances"), ("output_field", "predictions"), ("row_format", "list")):
                if getattr(self, key) != default:
                    raise ValueError(f"{key} only applies to protocol type custom")
        if self.row_format == "dict" and not self.feature_names:
            raise ValueError("row_format dict needs feature_names (the column order of each row)")
        return self


class ListenConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class ApiKeysConfig(_Strict):
    file: Path


class JwtConfig(_Strict):
    jwks_file: Path
    issuer: str
    audience: Union[str, list[str]]
    tier_claim: str = "tier"
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    leeway: float = Field(default=0.0, ge=0.0, le=300.0)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not value:
            raise ValueError(
                f"{bad[0] if bad else 'an empty list'!s} is not allowed; use asymmetric algorithms only "
                f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
            )
        return value


class IdentityConfig(_Strict):
    api_keys: Optional[ApiKeysConfig] = None
    jwt: Optional[JwtConfig] = None
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR such as 10.0.0.0/8") from None
        return value

    @model_validator(mode="after")
    def _some_identity(self) -> IdentityConfig:
        if self.api_keys is None and self.jwt is None:
            raise ValueError("configure api_keys or jwt (or both): every request must name a principal")
        return self

    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies]


class LimitsConfig(_Strict):
    storage: str = "memory://"
    on_storage_error: Literal["deny", "allow"] = "deny"
    default: Rate
    tiers: dict[str, Rate] = Field(default_factory=dict)

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in STORAGE_SCHEMES:
            raise ValueError(f"{value!r} is not a supported storage; use memory:// or redis://host:port")
        return value


class OutputPolicy(_Strict):
    # Required, as privaudit.ci.controls requires it: the audit reads the same file.
    output: Literal["label", "top_k", "probabilities"]
    k: Optional[int] = Field(default=None, ge=1)
    round: Optional[int] = Field(default=None, ge=0, le=15)

    @model_validator(mode="after")
    def _k_with_top_k(self) -> OutputPolicy:
        if self.output == "top_k" and self.k is None:
            raise ValueError("output top_k needs k (how many classes to return)")
        if self.output != "top_k" and self.k is not None:
            raise ValueError("k only applies to output top_k")
        return self


class HardeningConfig(_Strict):
    default: OutputPolicy = Field(default_factory=lambda: OutputPolicy(output="probabilities"))
    tiers: dict[str, OutputPolicy] = Field(default_factory=dict)


class MetricsConfig(_Strict):
    path: str = "/metrics"
    # "host:port" of a listener of its own (never the proxy's port), "proxy" to serve it on the proxy's
    # port to authenticated principals only, or null for no metrics endpoint.
    listen: Optional[str] = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: Optional[str]) -> Optional[str]:
        if value is None or value == "proxy":
            return value
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:9464), 'proxy' or null")
        return value

    def address(self) -> tuple[str, int] | None:
        if self.listen is None or self.listen == "proxy":
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value == "/healthz":
            raise ValueError(f"{value!r} must be an absolute path such as /metrics (and not /healthz)")
        return value


class MonitoringConfig(_Strict):
    """How the request path hands requests to monitoring (a bounded queue and one worker)."""

    on_error: Literal["deny", "allow"] = "deny"  # a request monitoring cannot take or process
    queue_events: int = Field(default=10_000, ge=1)
    queue_bytes: int = Field(default=64 * 2**20, ge=1024)
    error_block_seconds: float = Field(default=60.0, gt=0)  # refusal after a monitoring error


class RequestLimitsConfig(_Strict):
    """What a request body may hold before it is refused with 400 (and logged)."""

    max_json_depth: int = Field(default=32, ge=2, le=1000)
    max_number_chars: int = Field(default=40, ge=8, le=1000)
    max_abs_value: float = Field(default=1e15, gt=0)  # larger feature values cannot be sketched faithfully


class ClientTimeoutsConfig(_Strict):
    header_seconds: float = Field(default=10.0, gt=0)  # a connection's first request line and headers
    body_seconds: float = Field(default=30.0, gt=0)  # a request's whole body


class GuardConfig(_Strict):
    upstream: Optional[str] = None  # optional only for GuardMiddleware, which wraps the model app itself
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    listen: ListenConfig = Field(default_factory=ListenConfig)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    timeout: float = Field(default=30.0, gt=0)
    upstream_connections: int = Field(default=32, ge=1, le=1024)
    identity: IdentityConfig
    limits: LimitsConfig
    hardening: HardeningConfig = Field(default_factory=HardeningConfig)
    # Monitoring's sections, handed to privaudit.guard.monitoring.build_monitor unchanged.
    log: dict[str, Any] = Field(default_factory=dict)
    detectors: Union[dict[str, Any], list[str]] = Field(default_factory=dict)
    response: list[str] = Field(default_factory=lambda: [str(level) for level in LEVELS])
    allow: list[str] = Field(default_factory=list)
    alerts: dict[str, Any] = Field(default_factory=dict)
    escalation: dict[str, Any] = Field(default_factory=dict)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    requests: RequestLimitsConfig = Field(default_factory=RequestLimitsConfig)
    client_timeouts: ClientTimeoutsConfig = Field(default_factory=ClientTimeoutsConfig)
    # Paths forwarded upstream; None: the protocol's inference routes only. "{name}" matches one segment.
    routes: Optional[list[str]] = None
    log_http_client: bool = False  # the HTTP client's own INFO lines name every upstream URL
    # Where the configuration was read from, so reload() can read it again; not part of the YAML.
    _path: Optional[Path] = PrivateAttr(default=None)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @field_validator("upstream")
    @classmethod
    def _url(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{value!r} is not an http(s) URL with a host, e.g. http://127.0.0.1:8081")
        return value

    @model_validator(mode="after")
    def _custom_routes(self) -> GuardConfig:
        if self.protocol.type == "custom" and self.routes is None:
            raise ValueError("routes: protocol custom has no standard inference route; list the model's paths, "
                             "e.g. routes: [/predict]")
        return self

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        for route in value or []:
            if not route.startswith("/") or ".." in route.split("/"):
                raise ValueError(f"{route!r} must be an absolute path such as /v1/models/{{name}}:predict")
        return value

    @field_validator("response")
    @classmethod
    def _levels(cls, value: list[str]) -> list[str]:
        for level in value:
            if level not in LEVELS:
                raise ValueError(f"{level!r} is not a response level; use {', '.join(LEVELS)}")
        return value

    def detector_settings(self) -> dict[str, Any]:
        """``detectors`` as a mapping: a bare list of names means each with its defaults."""
        if isinstance(self.detectors, list):
            return {name: {} for name in self.detectors}
        return dict(self.detectors)

    def limits_for(self, tier: str) -> str:
        return self.limits.tiers.get(tier, self.limits.default)

    def policy_for(self, tier: str) -> OutputPolicy:
        return self.hardening.tiers.get(tier, self.hardening.default)

    def known_tier(self, tier: str) -> str:
        """The tier used for limits, hardening and metrics; unknown names fall back to "default" so a
        token's claim can neither invent a tier nor blow up metric cardinality."""
        return tier if tier in self.limits.tiers or tier in self.hardening.tiers else "default"


_UNION_TAGS = frozenset({"str", "int", "float", "bool"})


def _loc(loc: tuple[Any, ...]) -> str:
    # pydantic puts union member tags (``str``, ``list[str]``, ...) into locations; users never wrote them.
    parts = [str(p) for p in loc]
    return ".".join(p for p in parts if p not in _UNION_TAGS and not p.startswith(("function-", "list[", "dict[", "literal[")))


def _message(err: Any) -> str:
    kind, msg = err["type"], str(err["msg"])
    if kind == "missing":
        return "is required; add it (see docs/guard.md)"
    if kind == "extra_forbidden":
        return "is not a known key; check its spelling (see docs/guard.md)"
    if msg.startswith(("Value error, ", "Assertion failed, ")):
        return msg.split(", ", 1)[1]
    return f"{msg} (got {err.get('input')!r})"


def parse_config(data: Any, source: str = "guard.yaml", base_dir: Path | None = None) -> GuardConfig:
    """Validate decoded YAML; relative file paths are taken from ``base_dir`` (the config's folder)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a guard configuration must be a mapping of sections (upstream, identity, limits, ...)")
    try:
        cfg = GuardConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _loc(tuple(err["loc"])) or "(top level)"
        line = f"{source}: {where}: {_message(err)}"
        raise ConfigError(" ".join(line.split())) from None
    if base_dir is not None:
        ident = cfg.identity
        if ident.api_keys is not None and not ident.api_keys.file.is_absolute():
            ident.api_keys.file = base_dir / ident.api_keys.file
        if ident.jwt is not None and not ident.jwt.jwks_file.is_absolute():
            ident.jwt.jwks_file = base_dir / ident.jwt.jwks_file
    return cfg


def load_config(path: str | Path) -> GuardConfig:
    """Read and validate ``path``; any problem is one ConfigError line naming the file and key."""
    p = Path(path)
    data = read_guard_yaml(p, str(p), "no such file; pass the guard's YAML configuration with --config")
    cfg = parse_config(data if data is not None else {}, str(p), p.parent)
    cfg._path = p
    return cfg
