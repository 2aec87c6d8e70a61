"""Monitoring off the request path, in the guard's own process: a bounded queue of QueryEvents drained
by one worker thread. The guard uses it for a Monitor object handed to it (tests, embedding, the
middleware with a monitor of its own); by default monitoring runs in a process of its own
(privaudit.guard.monitor_process), which keeps the detectors off the event loop's interpreter lock.

A request pays for identity, limits, forwarding and hardening; its event is queued and the worker
runs the query log and the detectors. The verdict reaches the proxy a moment later and applies to
the principal's next requests, as before. The queue is bounded in events and in bytes of rows: a
request that would not fit is refused before it is forwarded (``monitoring.on_error: deny``, the
default) or served unmonitored and counted (``allow``). Nothing waits on the worker except
``drain``, used at shutdown and by tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Optional, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from privaudit.errors import ConfigError
from privaudit.guard.config import GuardConfig
from privaudit.guard.events import Level, QueryEvent, Verdict

log = logging.getLogger("privaudit.guard")
BATCH = 64  # events the worker takes per wake-up
# on_result(principal, level, error): monitoring's answer on one event, an error instead of a level
# when it could not process it (the guard applies monitoring.on_error).
OnResult = Callable[[str, Optional[Level], Optional[Exception]], None]


class Monitor(Protocol):
    """What the guard needs of monitoring (privaudit.guard.monitoring builds the real one)."""

    def observe(self, event: QueryEvent) -> Verdict: ...

    def close(self) -> None: ...


class NullMonitor:
    """Stands in when monitoring is unavailable: every verdict is "log"."""

    def observe(self, event: QueryEvent) -> Verdict:
        return Verdict()

    def close(self) -> None:
        pass


def monitoring_importable(cfg: GuardConfig) -> bool:
    """Whether the monitoring code can be loaded. Without it the guard refuses to start, unless
    ``monitoring.on_error: allow`` says serving unmonitored is acceptable (then it warns, and a
    NullMonitor stands in)."""
    try:
        import privaudit.guard.monitoring  # noqa: F401
    except ImportError as exc:
        if cfg.monitoring.on_error != "allow":
            raise ConfigError(f"guard monitoring cannot be loaded ({exc}); install privaudit[guard], or set "
                              "monitoring.on_error: allow to serve requests unmonitored") from None
        log.warning("guard monitoring is unavailable (%s); monitoring.on_error is allow, so requests are served "
                    "but not monitored", exc)
        return False
    return True


def wait_until(cond: threading.Condition, done: Callable[[], bool], timeout: float) -> bool:
    """Wait on ``cond`` (which the caller holds) until ``done()``; False if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        cond.wait(left)
    return True


def event_bytes(event: QueryEvent) -> int:
    outputs = 0 if event.outputs is None else int(event.outputs.nbytes)
    return int(event.inputs.nbytes) + outputs


class Reserving:
    """Room held in a bounded monitoring queue for requests in flight: the guard reserves it before it
    forwards a request, and the event later submitted with ``reserved`` always fits (see submit)."""

    _cond: threading.Condition
    _stopping: bool
    _reserved: int
    _reserved_bytes: int

    def has_room(self, nbytes: int = 0) -> bool:
        raise NotImplementedError

    def reserve(self, nbytes: int) -> bool:
        """Hold room for one event of about ``nbytes``; False when there is none (or the queue closed)."""
        with self._cond:
            if self._stopping or not self.has_room(nbytes):
                return False
            self._reserved += 1
            self._reserved_bytes += nbytes
        return True

    def _release(self, reserved: int) -> None:
        """Give back what ``reserve`` held (the caller holds ``_cond``)."""
        self._reserved -= 1
        self._reserved_bytes -= reserved


class MonitorQueue(Reserving):
    """Events waiting for monitoring; ``on_result(event, verdict, error)`` runs in the worker."""

    alive = True  # a thread in this process: it stops only when closed

    def __init__(self, monitor: Monitor, on_result: OnResult,
                 *, max_events: int, max_bytes: int, registry: CollectorRegistry) -> None:
        self.monitor = monitor
        self.on_result = on_result
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._items: deque[tuple[QueryEvent, int]] = deque()
        self._bytes = 0
        self._reserved = self._reserved_bytes = 0  # room held by requests in flight
        self._busy = 0  # events taken by the worker and not yet finished
        self._cond = threading.Condition()
        self._stopping = False
        self.dropped = Counter("privaudit_guard_monitor_dropped", "Events monitoring never saw (queue full)",
                               registry=registry)
        self.depth = Gauge("privaudit_guard_monitor_queue", "Events waiting for monitoring", registry=registry)
        self._thread = threading.Thread(target=self._run, name="privaudit-monitor", daemon=True)
        self._thread.start()

    def has_room(self, nbytes: int = 0) -> bool:
        """Whether an event of ``nbytes`` would be taken now."""
        return (len(self._items) + self._reserved < self.max_events
                and self._bytes + self._reserved_bytes + nbytes <= self.max_bytes)

    def submit(self, event: QueryEvent, reserved: Optional[int] = None) -> bool:
        """Queue ``event``; False (and counted) when it does not fit or the queue is closed. An event sent
        with the ``reserved`` bytes held for it always fits, whatever its final size."""
        size = event_bytes(event)
        with self._cond:
            if reserved is not None:
                self._release(reserved)
            if self._stopping or (reserved is None and not self.has_room(size)):
                self.dropped.inc()
                return False
            self._items.append((event, size))
            self._bytes += size
            self.depth.set(len(self._items))
            self._cond.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if not self._items:
                    return
                # Take what is waiting (up to BATCH) in one go: one lock round trip, not one per event.
                batch = [self._items.popleft() for _ in range(min(BATCH, len(self._items)))]
                self._busy += len(batch)
            for event, size in batch:
                self._one(event)
                with self._cond:
                    self._bytes -= size
                    self._busy -= 1
            with self._cond:
                self.depth.set(len(self._items))
                self._cond.notify_all()

    def _one(self, event: QueryEvent) -> None:
        try:
            try:
                verdict = self.monitor.observe(event)
            except Exception as exc:  # reported to the proxy, which applies its fail mode
                self.on_result(event.principal, None, exc)
            else:
                self.on_result(event.principal, verdict.level, None)
        except Exception:
            log.exception("monitoring worker: handling the result of request %s failed", event.request_id)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event has been monitored; False on timeout."""
        with self._cond:
            return wait_until(self._cond, lambda: not (self._items or self._busy), timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Monitor what is queued (bounded by ``timeout``), then stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("monitoring worker: %d events left unmonitored at shutdown", len(self._items))
