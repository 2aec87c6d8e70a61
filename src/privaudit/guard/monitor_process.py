"""Monitoring in a process of its own: the query log and the detectors never share the guard's
interpreter lock.

In one process, the detectors (a few milliseconds of numpy and Python per request) held the GIL the
event loop needed to answer requests, so every request waited behind the monitoring of earlier ones.
Here the guard encodes each QueryEvent (privaudit.guard.codec) once its answer has been sent and writes
it to a pipe from the event loop without blocking (a writer thread takes over only when the pipe is
full); a child process (privaudit.guard.monitor_child) runs ``Monitor.observe`` on each and answers with
how many events it monitored and every verdict that changes something: a principal raised above
``log`` or back to it, or the error monitoring hit. A reader thread in the guard applies them; as
before, a verdict applies to the principal's next requests.

Fail closed, as the in-process queue (privaudit.guard.worker) does:

* the queue is bounded by the events (and bytes of rows) sent and not yet answered; a request that
  would not fit is refused before it is forwarded, or served and counted with ``on_error: allow``;
* a monitoring error on an event is reported per principal, and the guard refuses that principal;
* when the child dies (killed, out of memory, a crash) the pipe reaches end-of-file at once: the
  guard marks monitoring down (``privaudit_guard_monitor_up`` 0, /healthz 503) and every later
  request is refused (``deny``) or served and counted (``allow``). It does not start a new child: the
  detectors' history died with the old one, and a restarted guard (process supervisor) is the
  honest way back.

The child's Prometheus metrics (alarms, escalations, log records, errors) reach the guard's registry
as text: the child sends a snapshot at most once a second while busy and with every ``drain``.
The child is a fresh interpreter (``python -m privaudit.guard.monitor_child``); starting it costs a second
or two of imports, once per guard start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any, Optional

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from privaudit.errors import ConfigError
from privaudit.guard.codec import encode_event
from privaudit.guard.events import QueryEvent
from privaudit.guard.monitor_child import EVENTS, FAILED, METRICS, READY, RESULTS, SYNC, U64
from privaudit.guard.worker import OnResult, Reserving, event_bytes, wait_until

log = logging.getLogger("privaudit.guard")
START_TIMEOUT = 120.0  # seconds for the child to build the monitor (calibration data is read here)
_LENGTH = struct.Struct("!i")  # multiprocessing.Connection's frame header, so the child reads with recv_bytes
PIPE_BYTES = 2**20


class _ChildMetrics:
    """A collector serving the child's last metric snapshot from the guard's registry."""

    def __init__(self) -> None:
        self.text = ""

    def collect(self) -> Iterator[Metric]:
        yield from text_string_to_metric_families(self.text)


class ProcessQueue(Reserving):
    """The guard's side of the monitoring process; the same surface as worker.MonitorQueue."""

    def __init__(self, settings: dict[str, Any], on_result: OnResult, *, max_events: int, max_bytes: int,
                 registry: CollectorRegistry, start_timeout: float = START_TIMEOUT) -> None:
        self.on_result = on_result
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._reserved = self._reserved_bytes = 0  # room held by requests in flight
        self._cond = threading.Condition()
        self._backlog: list[bytes] = []  # framed messages the pipe had no room for, oldest first
        self._writing = False  # the writer thread holds part of the backlog: keep the order, queue behind it
        self._sizes: deque[tuple[str, int]] = deque()  # (principal, bytes) of each event sent, in order
        self._bytes = 0
        self._synced = self._sync_sent = 0
        self._alive = False
        self._stopping = False
        self.dropped = Counter("privaudit_guard_monitor_dropped", "Events monitoring never saw (queue full)",
                               registry=registry)
        self.depth = Gauge("privaudit_guard_monitor_queue", "Events sent to monitoring and not yet monitored",
                           registry=registry)
        self.up = Gauge("privaudit_guard_monitor_up", "1 while the monitoring process runs, 0 once it has stopped",
                        registry=registry)
        self._child_metrics = _ChildMetrics()
        registry.register(self._child_metrics)  # type: ignore[arg-type, unused-ignore]
        # A fresh interpreter (python -m privaudit.guard.monitor_child), not multiprocessing: its spawn and
        # fork-server starts re-run the main script of whoever embeds the guard, and fork copies a process
        # with threads. The child inherits our working folder and environment (relative log paths and
        # key_env mean the same), and the two pipe ends it needs, nothing else.
        inbox, to_child = os.pipe()
        from_child, outbox = os.pipe()
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "privaudit.guard.monitor_child", str(inbox), str(outbox)],
                                            pass_fds=(inbox, outbox), stdin=subprocess.DEVNULL)
        finally:
            os.close(inbox)  # the child holds these ends now: its death closes the pipe and we read end-of-file
            os.close(outbox)
        self._to_child = Connection(to_child, readable=False)
        self._from_child = Connection(from_child, writable=False)
        # Plain data as JSON (paths as text), read first thing by the child: no pickle crosses the pipe.
        self._to_child.send_bytes(orjson.dumps(settings, default=str))
        self._fd = to_child
        # Messages are written from the event loop without blocking it (a stalled child must never stall
        # requests); a larger pipe leaves the writer thread idle unless the child falls well behind.
        os.set_blocking(self._fd, False)
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            try:
                fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            except OSError:
                pass  # above /proc/sys/fs/pipe-max-size: keep the default
        self._await_ready(start_timeout)
        self._alive = True
        self.up.set(1)
        self._writer = threading.Thread(target=self._write, name="privaudit-monitor-writer", daemon=True)
        self._reader = threading.Thread(target=self._read, name="privaudit-monitor-reader", daemon=True)
        self._writer.start()
        self._reader.start()

    def _await_ready(self, timeout: float) -> None:
        try:
            ready = self._from_child.poll(timeout)
            message = self._from_child.recv_bytes() if ready else b""
        except (EOFError, OSError):
            message = b""
        if message[:1] == READY:
            return
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._close_pipes()
        if message[:1] == FAILED:
            raise ConfigError(message[1:].decode("utf-8", "replace"))
        why = f"exit code {self.process.returncode}" if message == b"" and ready else f"no answer within {timeout:g} s"
        raise ConfigError(f"the guard's monitoring process did not start ({why}); see the lines above for its error")

    @property
    def alive(self) -> bool:
        return self._alive

    def has_room(self, nbytes: int = 0) -> bool:
        """Whether an event of ``nbytes`` would be taken now (False once monitoring has stopped)."""
        return (self._alive and len(self._sizes) + self._reserved < self.max_events
                and self._bytes + self._reserved_bytes + nbytes <= self.max_bytes)

    def submit(self, event: QueryEvent, reserved: Optional[int] = None) -> bool:
        """Send ``event`` to monitoring; False (and counted) when it does not fit or monitoring stopped. An
        event sent with the ``reserved`` bytes held for it always fits, whatever its final size."""
        size = event_bytes(event)
        if reserved is not None:
            with self._cond:
                self._release(reserved)
        if self._stopping or not (self._alive if reserved is not None else self.has_room(size)):
            self.dropped.inc()
            return False
        message = EVENTS + encode_event(event)
        with self._cond:
            self._sizes.append((event.principal, size))
            self._bytes += size
            self._send(message)
        return True

    def _send(self, message: bytes) -> None:
        """Write one message (multiprocessing's framing) now if the pipe takes it, else leave the rest to
        the writer thread. Called with the lock held; never blocks."""
        if self._stopping:
            return  # the writer thread may have closed the pipe (and the number may name another file now)
        frame = _LENGTH.pack(len(message)) + message
        if self._backlog or self._writing:
            self._backlog.append(frame)  # behind what is already waiting: order matters
            return
        try:
            written = os.write(self._fd, frame)
        except BlockingIOError:
            written = 0
        except OSError:
            return  # the child is gone; the reader sees end-of-file and marks monitoring down
        if written < len(frame):
            self._backlog.append(frame[written:])
            self._cond.notify_all()

    def _write(self) -> None:
        """Write the backlog when the pipe has room again; at close, end the stream (the child exits)."""
        while True:
            with self._cond:
                while not self._backlog and not self._stopping:
                    self._cond.wait()
                data = b"".join(self._backlog)
                self._backlog.clear()
                self._writing = bool(data)
                stop = self._stopping
            view = memoryview(data)
            try:
                while view:
                    select.select([], [self._fd], [], 1.0)
                    try:
                        view = view[os.write(self._fd, view):]
                    except BlockingIOError:
                        continue
            except OSError:
                return  # the child is gone; the reader sees end-of-file and marks monitoring down
            finally:
                with self._cond:
                    self._writing = False
            if stop:
                with self._cond:
                    if self._backlog:
                        continue
                self._to_child.close()  # end-of-file: the child flushes its log and exits
                return

    def _read(self) -> None:
        try:
            while True:
                message = self._from_child.recv_bytes()
                kind, body = message[:1], message[1:]
                if kind == RESULTS:
                    self._results(orjson.loads(body))
                elif kind == METRICS:
                    self._child_metrics.text = body.decode()
                elif kind == SYNC:
                    self._child_metrics.text = body[8:].decode()
                    with self._cond:
                        self._synced = U64.unpack_from(body)[0]
                        self._cond.notify_all()
        except (EOFError, OSError):
            pass
        except Exception:  # an unreadable message: treat it as the child's death, never as a pass
            log.exception("monitoring: unreadable message from the monitoring process")
        self._down()

    def _results(self, answer: list[Any]) -> None:
        """``[done, notable]``: the next ``done`` events were monitored; ``notable`` lists the verdicts that
        change something (the child leaves out principals that stay at "log")."""
        done, notable = answer
        with self._cond:
            taken = [self._sizes.popleft() for _ in range(done)]
            self._bytes -= sum(size for _, size in taken)
            depth = len(self._sizes)
            self._cond.notify_all()
        self.depth.set(depth)
        for principal, level, error in notable:
            try:
                self.on_result(principal, level, None if error is None else RuntimeError(error))
            except Exception:
                log.exception("monitoring: applying a verdict for %s failed", principal)

    def _down(self) -> None:
        """The child is gone: refuse from now on, and treat what it never answered as failed."""
        with self._cond:
            self._alive = False
            lost = list(self._sizes)
            self._sizes.clear()
            self._bytes = 0
            self._cond.notify_all()
        self.up.set(0)
        self.depth.set(0)
        if not self._stopping:
            try:
                self.process.wait(1)
            except subprocess.TimeoutExpired:
                pass
            log.error("the monitoring process stopped (exit code %s) with %d events unmonitored; requests are now "
                      "refused unless monitoring.on_error is allow; restart the guard", self.process.returncode, len(lost))
            for principal, _ in lost:
                try:
                    self.on_result(principal, None, RuntimeError("the monitoring process stopped"))
                except Exception:
                    log.exception("monitoring: recording a lost event failed")

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every event sent so far has been monitored (and the metrics are current)."""
        with self._cond:
            if not self._alive:
                return True
            self._sync_sent += 1
            mark = self._sync_sent
            self._send(SYNC + U64.pack(mark))
            return wait_until(self._cond, lambda: not self._alive or self._synced >= mark, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Let the child monitor what is queued and flush its log (bounded by ``timeout``), then stop it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._writer.join(timeout)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("monitoring process: still busy after %g s at shutdown; stopping it", timeout)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for conn in (self._to_child, self._from_child):
            try:
                conn.close()
            except OSError:
                pass


def monitor_settings(cfg: Any, log_level: Optional[int] = None,
                     factory: str = "privaudit.guard.monitoring:build_monitor") -> dict[str, Any]:
    """What the child needs to build the monitor the guard's configuration describes (plain data).
    ``factory`` ("module:function", called with build_monitor's arguments) builds it."""
    return {
        "factory": factory,
        "sys_path": list(sys.path),  # e.g. a factory from a folder the guard's caller put on the path
        "log_level": log_level if log_level is not None else logging.getLogger("privaudit").getEffectiveLevel(),
        "monitor": {"log": cfg.log, "detectors": cfg.detector_settings(), "response": list(cfg.response),
                    "allow": list(cfg.allow), "alerts": cfg.alerts, "escalation": cfg.escalation or None,
                    "learn": True, "feature_names": cfg.protocol.feature_names},
    }

