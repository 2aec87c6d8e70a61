"""How ``privaudit guard`` runs the proxy: uvicorn with a header timeout, metrics on a listener of
their own, and logs that never carry credentials.

* uvicorn bounds the idle time between requests on a kept-alive connection, not the time a client
  takes to send its first request line and headers; a few hundred clients trickling bytes would hold
  their connections forever. ``with_header_timeout`` closes a connection whose request has not begun
  (headers complete) within ``client_timeouts.header_seconds``. Bodies are bounded in the proxy.
* ``/metrics`` shows totals a prober could read to learn it has been flagged, so it is served on
  ``metrics.listen`` (default 127.0.0.1:9464), never on the proxy's port without credentials.
* ``RedactingFilter`` removes the user:password part of any URL from every log line (Redis and
  upstream URLs may carry them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from privaudit.guard.redact import redact


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with URL credentials replaced by ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_redaction() -> None:
    """Add the filter to every handler of the root logger and of uvicorn's loggers."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def with_header_timeout(base: type[asyncio.Protocol], seconds: float) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol ``base`` that drops a connection whose first request has
    not finished its headers within ``seconds``."""

    class HeaderTimeout(base):  # type: ignore[valid-type, misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(seconds, self._header_timeout)

        def _header_timeout(self) -> None:
            if getattr(self, "cycle", None) is None and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeout


def http_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's fastest available HTTP protocol (httptools, else h11), with the header timeout."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base: type[asyncio.Protocol] = HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    return with_header_timeout(base, seconds)


def serve_metrics(registry: CollectorRegistry, address: tuple[str, int]) -> Any:
    """Serve ``registry`` at ``address`` from a thread; returns the server (``shutdown()`` stops it)."""
    host, port = address
    started = start_http_server(port, addr=host, registry=registry)
    return started[0] if isinstance(started, tuple) else started
