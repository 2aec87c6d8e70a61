"""Black-box classifiers behind a live HTTP endpoint (KServe v1, Open Inference Protocol v2, custom JSON).

The target batches records into POST requests, keeps a few in flight on one pooled client,
retries transient failures with seeded jittered backoff, paces itself to a records-per-second
cap, and refuses to send more records than ``max_queries`` allows. The JSON shapes live in
``_http_protocols`` so this module only deals with transport and bookkeeping.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from typing import Any, Mapping

import httpx
import numpy as np
from numpy.typing import NDArray

from privaudit.errors import ConfigError, DataError, EndpointError, QueryBudgetExceeded
from privaudit.models import LoadedModel, LoadOptions, register_loader
from privaudit.models._http_protocols import (PROTOCOLS, ROW_FORMATS, WireFormat, classes_from_labels, decode,
                                              protocol_mismatch,
                                              resolve_protocol)

_MAX_BACKOFF = 30.0  # s; beyond this a "transient" failure is not transient
_MAX_RETRY_AFTER = 120.0  # s; a server asking for longer is enforcing a quota, not shedding load
_EXCERPT = 160  # characters of an error body quoted back to the user
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*\s+\S")  # "Basic xyz", "Bearer xyz", ...
_CUSTOM_ONLY = {"input_field": "instances", "output_field": "predictions", "row_format": "list"}


_CLI_FLAGS = frozenset({"protocol", "classes", "batch_size", "concurrency", "auth_env", "auth_header", "max_queries",
                        "rate", "input_field", "output_field", "retries", "timeout"})


def _name(key: str) -> str:
    """How a message names a setting: the command-line flag where there is one."""
    return "--" + key.replace("_", "-") if key in _CLI_FLAGS else f"HTTP setting {key}"


def _number(key: str, value: Any, kind: type) -> Any:
    # Settings may arrive from a command line as strings; accept "64" but never a bool for a number.
    if isinstance(value, str):
        try:
            value = kind(value)
        except ValueError:
            raise ConfigError(f"{_name(key)} {value!r} is not a number; give e.g. {_name(key)} 10") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise ConfigError(f"{_name(key)} {value!r} must be {'a whole number' if kind is int else 'a number'}")
    return kind(value)


@dataclass(frozen=True)
class HttpSettings:
    """How to talk to one endpoint. Build from user input with :meth:`from_dict`."""

    protocol: str = "auto"
    input_field: str = "instances"
    output_field: str = "predictions"
    row_format: str = "list"
    feature_names: tuple[str, ...] | None = None
    classes: tuple[Any, ...] | None = None
    batch_size: int = 64
    concurrency: int = 4
    timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.5  # s before the first retry; doubles per attempt
    seed: int = 0  # seeds the backoff jitter so runs are reproducible
    auth_env: str | None = None
    auth_header: str = "Authorization"
    max_queries: int | None = None
    rate: float | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {self.protocol}: not supported; use one of {', '.join(PROTOCOLS)}")
        if self.row_format not in ROW_FORMATS:
            raise ConfigError(f"HTTP setting row_format={self.row_format!r} is not supported; use list or dict")
        for key, default in _CUSTOM_ONLY.items():
            if self.protocol != "custom" and getattr(self, key) != default:
                raise ConfigError(f"{_name(key)} only applies to custom JSON APIs; add --protocol custom or drop {_name(key)}")
        for key in ("input_field", "output_field", "auth_header"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value or any(not part for part in value.split(".")):
                raise ConfigError(f"{_name(key)} {value!r} must be a non-empty name (dotted paths like result.scores are fine)")
        if self.row_format == "dict" and not self.feature_names:
            raise ConfigError("HTTP setting row_format=dict sends each record as an object keyed by feature name; give feature_names too")
        if self.classes is not None and (not self.classes or len({str(c) for c in self.classes}) != len(self.classes)):
            raise ConfigError("--classes must list each class label once, in the model's output order")
        for key, low in (("batch_size", 1), ("concurrency", 1), ("retries", 0), ("seed", 0)):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < low:
                raise ConfigError(f"{_name(key)} {getattr(self, key)!r} must be a whole number >= {low}")
        if self.max_queries is not None and (not isinstance(self.max_queries, int) or self.max_queries < 0):
            raise ConfigError(f"--max-queries {self.max_queries!r} must be a whole number >= 0")
        if not self.timeout > 0 or self.backoff < 0 or (self.rate is not None and not self.rate > 0):
            raise ConfigError("--timeout and --rate must be positive, and the HTTP setting backoff must not be negative")
        if self.auth_env is not None and not (isinstance(self.auth_env, str) and self.auth_env):
            raise ConfigError("--auth-env must be the name of an environment variable holding the credential")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> HttpSettings:
        """Validate user-supplied settings; unknown keys are refused so typos do not pass silently."""
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown HTTP setting '{unknown[0]}'; known settings are {', '.join(sorted(known))}")
        kw: dict[str, Any] = {}
        for key, value in raw.items():
            if value is None and key in ("feature_names", "classes", "auth_env", "max_queries", "rate"):
                kw[key] = None
            elif key in ("batch_size", "concurrency", "retries", "seed", "max_queries"):
                kw[key] = _number(key, value, int)
            elif key in ("timeout", "backoff", "rate"):
                kw[key] = _number(key, value, float)
            elif key in ("feature_names", "classes"):
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
                    raise ConfigError(f"{_name(key)} must be a list of labels, e.g. {_name(key)} a,b")
                kw[key] = tuple(str(v) for v in value) if key == "feature_names" else tuple(value)
            elif key == "headers":
                if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                    raise ConfigError("HTTP setting headers must map header names to string values")
                kw[key] = tuple(value.items())
            elif not isinstance(value, str):
                raise ConfigError(f"{_name(key)} {value!r} must be a string")
            else:
                kw[key] = value
        return cls(**kw)


def _auth_value(settings: HttpSettings) -> str | None:
    if settings.auth_env is None:
        return None
    secret = os.environ.get(settings.auth_env)
    if not secret:
        raise ConfigError(f"environment variable {settings.auth_env} (named by --auth-env) is not set or empty; export the endpoint's credential in it")
    return secret.strip()


def _display_url(url: httpx.URL) -> str:
    # Userinfo and query strings are where people put keys; keep them out of messages and reports.
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Pacer:
    """Spaces batches so at most ``rate`` records leave per second.

    A token bucket one batch deep: a batch may go now if the previous one's records have been
    "paid for", otherwise it waits. Shared by all worker threads, hence the lock.
    """

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._next = 0.0
        self._lock = threading.Lock()

    def delay(self, n: int) -> float:
        if self._rate is None:
            return 0.0
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self._rate
            return start - now


class ClassesUnknown(EndpointError, AttributeError):
    """Raised by ``classes`` before any answer. Also an AttributeError so that ``hasattr`` and
    Python 3.11's runtime ``isinstance(target, Target)`` report "not yet" instead of blowing up."""


class _Cancelled(Exception):
    """A sibling batch failed; this one stops without sending anything more."""


class HttpTarget:
    """A classifier reached over HTTP; implements :class:`privaudit.target.Target`."""

    def __init__(self, url: str, settings: HttpSettings | None = None) -> None:
        self._client: httpx.Client | None = None  # set first so __del__ is safe if we raise below
        self.settings = settings or HttpSettings()
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"{url!r} is not a valid URL ({exc}); give e.g. http://host:8080/v1/models/m:predict") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"{_display_url(parsed)} is not an http(s) URL with a host; give e.g. http://host:8080/v1/models/m:predict")
        self.url = url
        self.display_url = _display_url(parsed)
        s = self.settings
        self.protocol = resolve_protocol(s.protocol, parsed.path)
        self._wire = WireFormat(self.protocol, s.input_field, s.output_field, s.row_format, s.feature_names)
        self._classes = None if s.classes is None else np.asarray(s.classes)
        self._data_classes: NDArray[np.generic] | None = None
        self._secret = _auth_value(s)
        headers = httpx.Headers({"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "privaudit"})
        for name, value in s.headers:
            headers[name] = value  # httpx.Headers replaces case-insensitively, so users can override ours
        if self._secret is not None:
            bearer = s.auth_header.lower() == "authorization" and not _SCHEME.match(self._secret)
            headers[s.auth_header] = f"Bearer {self._secret}" if bearer else self._secret
        self._lock = threading.Lock()
        self._rng = random.Random(s.seed)
        self._pacer = _Pacer(s.rate)
        self._queries = 0
        self._requests = 0
        self._batch_cap = s.batch_size  # lowered for good when the endpoint answers 429 to a larger request
        self._budget_used = 0  # records handed to the endpoint at least once (what max_queries caps)
        limits = httpx.Limits(max_connections=s.concurrency, max_keepalive_connections=s.concurrency)
        # Redirects are not followed: a POST bounced elsewhere could carry the credential to another host.
        self._client = httpx.Client(headers=headers, timeout=s.timeout, limits=limits, follow_redirects=False)

    def __repr__(self) -> str:  # never includes the credential or the raw URL
        return f"HttpTarget({self.display_url!r}, protocol={self.protocol!r})"

    # --- Target -------------------------------------------------------------------------------

    @property
    def classes(self) -> NDArray[np.generic]:
        if self._classes is None:
            raise ClassesUnknown(f"{self.display_url}: the classes are unknown until the endpoint has answered once; give them with --classes")
        return self._classes

    def use_data_classes(self, labels: Any) -> None:
        """The audited data's labels: the classes of label or top-k answers when --classes is not given."""
        self._data_classes = classes_from_labels(labels)

    @property
    def queries(self) -> int:
        """Records the endpoint has answered (a retried batch counts once)."""
        return self._queries

    @property
    def requests_sent(self) -> int:
        """HTTP requests issued, retries and failed attempts included."""
        return self._requests

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64] | NDArray[np.int64]:
        if self._client is None or self._client.is_closed:
            raise EndpointError(f"{self.display_url}: this HTTP target has been closed; create a new one to query again")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise DataError(f"records must be a 2-D array (rows x features); got shape {X.shape}")
        n, cap = len(X), self.settings.max_queries
        if cap is not None and self._budget_used + n > cap:
            raise QueryBudgetExceeded(
                f"{self.display_url}: sending {n} more records would exceed --max-queries {cap} "
                f"({self._budget_used} already sent); raise --max-queries or audit fewer records"
            )
        size = self._batch_cap
        spans = [(i, min(i + size, n)) for i in range(0, n, size)]
        batches = self._run([X[a:b] for a, b in spans])
        rows = [row for batch in batches for row in batch]
        try:
            out, classes = decode(rows, self._classes, self._data_classes)
        except EndpointError as exc:
            raise EndpointError(f"{self.display_url}: {exc}") from None
        if self._classes is None and n:
            self._classes = classes  # inferred from the first answer's width
        return out

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> HttpTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Interpreter shutdown may have torn down httpx already; a failed close there is harmless.
        try:
            self.close()
        except Exception:
            pass

    # --- transport ----------------------------------------------------------------------------

    def _run(self, batches: list[NDArray[np.float64]]) -> list[list[Any]]:
        """Send every batch, ``concurrency`` at a time, and return the answers in input order."""
        stop = threading.Event()
        workers = min(self.settings.concurrency, len(batches))
        if workers <= 1:
            return [self._send(b, stop) for b in batches]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="privaudit-http")
        try:
            futures = [pool.submit(self._send, b, stop) for b in batches]
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
            if failed:
                stop.set()  # tell running siblings not to start another attempt
                real = [f for f in failed if not isinstance(f.exception(), _Cancelled)]
                raise (real or failed)[0].exception()  # type: ignore[misc]
            return [f.result() for f in futures]
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _send(self, X: NDArray[np.float64], stop: threading.Event) -> list[Any]:
        n = len(X)
        with self._lock:
            cap = self.settings.max_queries
            if cap is not None and self._budget_used + n > cap:  # only reachable with concurrent predict calls
                raise QueryBudgetExceeded(f"{self.display_url}: --max-queries {cap} reached; raise it or audit fewer records")
            self._budget_used += n
        return self._post(X, stop)

    def _post(self, X: NDArray[np.float64], stop: threading.Event) -> list[Any]:
        """POST ``X``, split into requests the endpoint accepts; a 429 on a multi-record request halves
        the size of every later request (down to one record), which then holds for this target."""
        size = self._batch_cap
        if len(X) > size:
            return [row for a in range(0, len(X), size) for row in self._post(X[a:a + size], stop)]
        n = len(X)
        body = self._wire.encode(X)
        attempts = self.settings.retries + 1
        last = ""
        for attempt in range(attempts):
            pause = self._pacer.delay(n)
            if stop.is_set() or (pause > 0 and stop.wait(pause)):
                raise _Cancelled()
            retry_after: float | None = None
            try:
                assert self._client is not None
                resp = self._client.post(self.url, content=body)
            except httpx.TransportError as exc:
                self._count(requests=1)
                last = f"{type(exc).__name__}: {self._redact(str(exc)) or 'no detail'}"
            else:
                self._count(requests=1)
                if resp.is_success:
                    rows = self._extract(resp, n)
                    self._count(queries=n)
                    return rows
                status, excerpt = resp.status_code, self._excerpt(resp)
                if status != 429:
                    mismatch = protocol_mismatch(self.protocol, self._wire.input_field, resp.text)
                    if mismatch is not None:
                        raise EndpointError(
                            f"{self.display_url} answered HTTP {status} naming '{mismatch[0]}' ({excerpt}): it expects "
                            f"{mismatch[1]} requests but privaudit sent {self.protocol} ones; pass --protocol {mismatch[1]}")
                if status != 429 and status < 500:
                    raise EndpointError(f"{self.display_url} answered HTTP {status}: {excerpt}{self._hint(resp)}")
                last = f"HTTP {status}: {excerpt}"
                retry_after = _retry_after(resp)
                if retry_after is not None and retry_after > _MAX_RETRY_AFTER:
                    raise EndpointError(
                        f"{self.display_url} answered HTTP {status} and asked to wait {retry_after:.0f} s before retrying; "
                        "its quota is spent, so lower --rate or try again later"
                    )
                if status == 429 and n > 1:
                    with self._lock:
                        self._batch_cap = min(self._batch_cap, max(1, n // 2))
                    wait_s = retry_after if retry_after is not None else self._backoff(0, None)
                    if stop.wait(wait_s):
                        raise _Cancelled()
                    return self._post(X, stop)  # smaller requests, with a fresh retry budget
            if attempt + 1 < attempts and stop.wait(self._backoff(attempt, retry_after)):
                raise _Cancelled()
        if last.startswith("HTTP 429"):
            raise EndpointError(
                f"{self.display_url} refused even a single record per request {attempts} time(s) in a row (last: {last}); "
                f"its rate limit is below what privaudit sends: lower --rate (records per second, e.g. --rate 1) "
                f"and --batch-size, or raise --retries"
            )
        raise EndpointError(
            f"{self.display_url} failed {attempts} time(s) in a row (last: {last}); check the endpoint is up, "
            "or raise --retries or --timeout"
        )

    def _extract(self, resp: httpx.Response, n: int) -> list[Any]:
        try:
            body = resp.json()
        except ValueError:
            raise EndpointError(f"{self.display_url} answered with something other than JSON: {self._excerpt(resp)}") from None
        try:
            return self._wire.extract(body, n)
        except EndpointError as exc:
            raise EndpointError(f"{self.display_url}: {exc}") from None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Exponential with "equal jitter" so parallel workers do not retry in lock-step.
        ceiling = min(_MAX_BACKOFF, self.settings.backoff * 2**attempt)
        with self._lock:
            delay = ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)
        return max(delay, retry_after or 0.0)

    def _count(self, *, requests: int = 0, queries: int = 0) -> None:
        with self._lock:
            self._requests += requests
            self._queries += queries

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _excerpt(self, resp: httpx.Response) -> str:
        text = " ".join(resp.text.split())  # one line, whatever the server sent
        text = self._redact(text)
        if not text:
            return "(empty body)"
        return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."

    def _hint(self, resp: httpx.Response) -> str:
        status = resp.status_code
        if status in (401, 403):
            where = f"the credential in ${self.settings.auth_env}" if self.settings.auth_env else "no credential (set --auth-env)"
            return f"; the endpoint refused {where}, check it and --auth-header"
        if status in (404, 405):
            return f"; check the URL and --protocol (sending {self.protocol} requests)"
        if 300 <= status < 400:
            return f"; it redirects to {resp.headers.get('Location', '?')}, use that URL directly"
        return "; the endpoint rejected the request, check --protocol and --input-field"


@register_loader("http")
def load_http(spec: str, options: LoadOptions) -> LoadedModel | None:
    if not spec.lower().startswith(("http://", "https://")):
        return None
    target = HttpTarget(spec, HttpSettings.from_dict(options.http))
    return LoadedModel(target, "http", target.display_url)
