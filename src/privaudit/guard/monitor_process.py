"""Monitoring in a process of its own: the query log and the detectors never share the guard's
interpreter lock.

In one process, the detectors (a few milliseconds of numpy and Python per request) held the GIL the
event loop needed to answer requests, so every request waited behind the monitoring of earlier ones.
Here the guard encodes each QueryEvent (privaudit.guard.codec), a writer thread sends batches of them
down a pipe, and a child process runs ``Monitor.observe`` on each and sends back one small result per
event: the principal and its response level, or the error that monitoring hit. A reader thread in
the guard applies the results; as before, a verdict applies to the principal's next requests.

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
The child is started from a fork server that has already imported the monitoring code, so a start
costs a fork, not a fresh interpreter.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import fcntl
import os
import select
import signal
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any, Optional

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from privaudit.errors import ConfigError, PrivauditError
from privaudit.guard.codec import decode_events, encode_event
from privaudit.guard.events import QueryEvent
from privaudit.guard.worker import OnResult, event_bytes

log = logging.getLogger("privaudit.guard")
START_TIMEOUT = 120.0  # seconds for the child to build the monitor (calibration data is read here)
METRICS_EVERY = 1.0  # seconds between metric snapshots from a busy child
_EVENTS, _SYNC, _RESULTS, _METRICS, _READY, _FAILED = b"E", b"S", b"R", b"M", b"O", b"X"
_U64 = struct.Struct("<Q")
_LENGTH = struct.Struct("!i")  # multiprocessing.Connection's frame header, so the child reads with recv_bytes
PIPE_BYTES = 2**20
BATCH = 256  # messages the child takes before it answers
LINGER = 0.002  # seconds the child waits after a small batch (a verdict arrives at most this much later)
NICENESS = 5  # the request path first: under CPU contention monitoring yields, and its bounded queue absorbs the lag


def _context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["privaudit.guard.monitoring"])
        return ctx
    return multiprocessing.get_context("spawn")


class _ChildMetrics:
    """A collector serving the child's last metric snapshot from the guard's registry."""

    def __init__(self) -> None:
        self.text = ""

    def collect(self) -> Iterator[Metric]:
        yield from text_string_to_metric_families(self.text)


class ProcessQueue:
    """The guard's side of the monitoring process; the same surface as worker.MonitorQueue."""

    def __init__(self, settings: dict[str, Any], on_result: OnResult, *, max_events: int, max_bytes: int,
                 registry: CollectorRegistry, start_timeout: float = START_TIMEOUT) -> None:
        self.on_result = on_result
        self.max_events = max_events
        self.max_bytes = max_bytes
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
        registry.register(self._child_metrics)  # type: ignore[arg-type]
        ctx = _context()
        inbox, self._to_child = ctx.Pipe(duplex=False)
        self._from_child, outbox = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_child_main, args=(settings, inbox, outbox), name="privaudit-monitor",
                                   daemon=True)
        self.process.start()
        inbox.close()  # the child holds these ends now: its death closes the pipe and we read end-of-file
        outbox.close()
        self._fd = self._to_child.fileno()
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
        if message[:1] == _READY:
            return
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
        self._close_pipes()
        if message[:1] == _FAILED:
            raise ConfigError(message[1:].decode("utf-8", "replace"))
        why = f"exit code {self.process.exitcode}" if message == b"" and ready else f"no answer within {timeout:g} s"
        raise ConfigError(f"the guard's monitoring process did not start ({why}); see the lines above for its error")

    @property
    def alive(self) -> bool:
        return self._alive

    def has_room(self, nbytes: int = 0) -> bool:
        """Whether an event of ``nbytes`` would be taken now (False once monitoring has stopped)."""
        return self._alive and len(self._sizes) < self.max_events and self._bytes + nbytes <= self.max_bytes

    def submit(self, event: QueryEvent) -> bool:
        """Send ``event`` to monitoring; False (and counted) when it does not fit or monitoring stopped."""
        size = event_bytes(event)
        if not self.has_room(size) or self._stopping:
            self.dropped.inc()
            return False
        message = _EVENTS + encode_event(event)
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
                if kind == _RESULTS:
                    self._results(orjson.loads(body))
                elif kind == _METRICS:
                    self._child_metrics.text = body.decode()
                elif kind == _SYNC:
                    self._child_metrics.text = body[8:].decode()
                    with self._cond:
                        self._synced = _U64.unpack_from(body)[0]
                        self._cond.notify_all()
        except (EOFError, OSError):
            pass
        except Exception:  # an unreadable message: treat it as the child's death, never as a pass
            log.exception("monitoring: unreadable message from the monitoring process")
        self._down()

    def _results(self, results: list[list[Any]]) -> None:
        with self._cond:
            taken = [self._sizes.popleft() for _ in results]
            self._bytes -= sum(size for _, size in taken)
            depth = len(self._sizes)
            self._cond.notify_all()
        self.depth.set(depth)
        for principal, level, error in results:
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
            self.process.join(1)
            log.error("the monitoring process stopped (exit code %s) with %d events unmonitored; requests are now "
                      "refused unless monitoring.on_error is allow; restart the guard", self.process.exitcode, len(lost))
            for principal, _ in lost:
                try:
                    self.on_result(principal, None, RuntimeError("the monitoring process stopped"))
                except Exception:
                    log.exception("monitoring: recording a lost event failed")

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every event sent so far has been monitored (and the metrics are current)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if not self._alive:
                return True
            self._sync_sent += 1
            mark = self._sync_sent
            self._send(_SYNC + _U64.pack(mark))
            while self._alive and self._synced < mark:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Let the child monitor what is queued and flush its log (bounded by ``timeout``), then stop it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._writer.join(timeout)
        self.process.join(timeout)
        if self.process.is_alive():
            log.error("monitoring process: still busy after %g s at shutdown; stopping it", timeout)
            self.process.terminate()
            self.process.join(5)
        self._reader.join(5)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for conn in (self._to_child, self._from_child):
            try:
                conn.close()
            except OSError:
                pass


# --- the child --------------------------------------------------------------------------------------


def _child_main(settings: dict[str, Any], inbox: Connection, outbox: Connection) -> None:
    """Build the monitor, then answer each message of events with one message of results."""
    # The fork server outlives tests that change the working folder or the environment; take the
    # guard's, so relative log paths and key_env variables mean what they mean to the guard.
    os.chdir(settings["cwd"])
    os.environ.clear()
    os.environ.update(settings["environ"])
    # Ctrl-C reaches the whole process group: the guard decides when monitoring stops (it closes the
    # pipe). A SIGTERM sent to this process alone still flushes the log before it exits.
    try:
        os.nice(NICENESS)
    except (AttributeError, OSError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    logging.basicConfig(level=settings["log_level"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from privaudit.guard.server import install_redaction

    install_redaction()
    try:
        module, _, name = settings["factory"].partition(":")
        build = getattr(importlib.import_module(module), name)
        registry = CollectorRegistry()
        monitor = build(**settings["monitor"], metrics_registry=registry)
    except PrivauditError as exc:
        outbox.send_bytes(_FAILED + str(exc).encode())
        return
    except Exception as exc:
        outbox.send_bytes(_FAILED + f"guard monitoring could not start: {type(exc).__name__}: {exc}".encode())
        return
    import gc

    gc.collect()
    gc.freeze()  # what was built to start lives as long as the process: keep it out of every collection
    outbox.send_bytes(_READY)
    last_metrics = time.monotonic()
    try:
        ended = False
        while not ended:
            messages: list[bytes] = []
            try:
                messages.append(inbox.recv_bytes())
                while len(messages) < BATCH and inbox.poll(0):  # what else is waiting: one answer for all
                    messages.append(inbox.recv_bytes())
            except EOFError:
                ended = True  # the guard closed the pipe: monitor what arrived before it, then stop
            results: list[list[Any]] = []
            for message in messages:
                kind, body = message[:1], message[1:]
                if kind == _SYNC:  # answered after the results of every event sent before it
                    if results:
                        outbox.send_bytes(_RESULTS + orjson.dumps(results))
                        results = []
                    outbox.send_bytes(_SYNC + body[:8] + generate_latest(registry))
                    continue
                for event in decode_events(body):
                    try:
                        results.append([event.principal, monitor.observe(event).level, None])
                    except Exception as exc:  # MonitorError (counted by the monitor): the guard refuses the principal
                        results.append([event.principal, None, f"{type(exc).__name__}: {exc}"[:300]])
            if results:
                outbox.send_bytes(_RESULTS + orjson.dumps(results))
            if len(messages) < BATCH and not ended:
                # Let events gather: one wake-up for several of them, not one per event. Each wake-up of
                # this process can preempt the guard or the model server on a busy host.
                time.sleep(LINGER)
            now = time.monotonic()
            if now - last_metrics >= METRICS_EVERY:
                last_metrics = now
                outbox.send_bytes(_METRICS + generate_latest(registry))
    finally:
        monitor.close()


def monitor_settings(cfg: Any, log_level: Optional[int] = None,
                     factory: str = "privaudit.guard.monitoring:build_monitor") -> dict[str, Any]:
    """What the child needs to build the monitor the guard's configuration describes (plain data).
    ``factory`` ("module:function", called with build_monitor's arguments) builds it."""
    return {
        "factory": factory,
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "log_level": log_level if log_level is not None else logging.getLogger("privaudit").getEffectiveLevel(),
        "monitor": {"log": cfg.log, "detectors": cfg.detector_settings(), "response": list(cfg.response),
                    "allow": list(cfg.allow), "alerts": cfg.alerts, "escalation": cfg.escalation or None,
                    "learn": True, "feature_names": cfg.protocol.feature_names},
    }

