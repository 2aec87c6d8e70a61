"""The monitoring process's side of privaudit.guard.monitor_process: build the monitor, then answer
each batch of events with one message of results.

Messages (multiprocessing.Connection framing, first byte the kind):

    guard -> child   E records (privaudit.guard.codec)   S u64 mark (drain: answer after what came before)
    child -> guard   O ready | X one-line error (could not start) | R JSON [done, [[principal, level, error], ...]]
                     S u64 mark + metrics text | M metrics text (at most every METRICS_EVERY while busy)
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import struct
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from privaudit.errors import PrivauditError
from privaudit.guard.codec import decode_events
from privaudit.guard.server import install_redaction

METRICS_EVERY = 1.0  # seconds between metric snapshots from a busy child
EVENTS, SYNC, RESULTS, METRICS, READY, FAILED = b"E", b"S", b"R", b"M", b"O", b"X"
U64 = struct.Struct("<Q")
BATCH = 256  # messages the child takes before it answers
ACK_EVERY = 0.05  # seconds a count of uneventful events may wait (the guard's queue bound counts them until then)
LINGER = 0.005  # seconds the child waits after a small batch (a verdict arrives at most this much later)
NICENESS = 5  # the request path first: under CPU contention monitoring yields, and its bounded queue absorbs the lag


def child_main(settings: dict[str, Any], inbox: Connection, outbox: Connection) -> None:
    """Build the monitor, then answer each message of events with one message of results."""
    sys.path[:] = settings["sys_path"]
    # Ctrl-C reaches the whole process group: the guard decides when monitoring stops (it closes the
    # pipe). A SIGTERM sent to this process alone still flushes the log before it exits.
    try:
        os.nice(NICENESS)
    except (AttributeError, OSError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    logging.basicConfig(level=settings["log_level"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()
    try:
        module, _, name = settings["factory"].partition(":")
        build = getattr(importlib.import_module(module), name)
        registry = CollectorRegistry()
        monitor = build(**settings["monitor"], metrics_registry=registry)
    except PrivauditError as exc:
        outbox.send_bytes(FAILED + str(exc).encode())
        return
    except Exception as exc:
        outbox.send_bytes(FAILED + f"guard monitoring could not start: {type(exc).__name__}: {exc}".encode())
        return
    gc.collect()
    gc.freeze()  # what was built to start lives as long as the process: keep it out of every collection
    outbox.send_bytes(READY)
    answers = _Answers(outbox)
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
            for message in messages:
                kind, body = message[:1], message[1:]
                if kind == SYNC:  # answered after the results of every event sent before it
                    answers.flush()
                    outbox.send_bytes(SYNC + body[:8] + generate_latest(registry))
                    continue
                for event in decode_events(body):
                    try:
                        answers.add(event.principal, monitor.observe(event).level, None)
                    except Exception as exc:  # MonitorError (counted by the monitor): the guard refuses the principal
                        answers.add(event.principal, None, f"{type(exc).__name__}: {exc}"[:300])
            answers.flush(urgent_only=not ended)
            if len(messages) < BATCH and not ended:
                # Let events gather: one wake-up for several of them, not one per event. Each wake-up of
                # this process can preempt the guard or the model server on a busy host.
                time.sleep(LINGER)
            now = time.monotonic()
            if now - last_metrics >= METRICS_EVERY:
                last_metrics = now
                answers.flush()
                outbox.send_bytes(METRICS + generate_latest(registry))
    finally:
        monitor.close()


class _Answers:
    """Results on their way to the guard: ``[done, [[principal, level, error], ...]]``. ``done`` counts the
    events monitored (the guard's queue bound); only what changes something is listed: a level above
    ``log``, a principal's return to ``log``, an error. Those go at once; a plain count waits up to
    ACK_EVERY, so an ordinary request costs the guard no wake-up of its own."""

    def __init__(self, outbox: Connection) -> None:
        self.outbox = outbox
        self.done = 0
        self.notable: list[list[Any]] = []
        self.raised: set[str] = set()  # principals last reported above "log"
        self.since = time.monotonic()

    def add(self, principal: str, level: str | None, error: str | None) -> None:
        self.done += 1
        if error is not None or level != "log":
            self.notable.append([principal, level, error])
            if level is not None:
                self.raised.add(principal)
        elif principal in self.raised:
            self.raised.discard(principal)
            self.notable.append([principal, level, None])

    def flush(self, urgent_only: bool = False) -> None:
        if not self.done or (urgent_only and not self.notable and time.monotonic() - self.since < ACK_EVERY):
            return
        self.outbox.send_bytes(RESULTS + orjson.dumps([self.done, self.notable]))
        self.done, self.notable, self.since = 0, [], time.monotonic()


def main(argv: list[str]) -> None:
    """``python -m privaudit.guard.monitor_child INBOX_FD OUTBOX_FD`` (started by the guard): the
    settings arrive first on the inbox, as JSON (the guard is the only writer of this pipe)."""
    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    try:
        settings = orjson.loads(inbox.recv_bytes())
    except EOFError:
        return
    child_main(settings, inbox, outbox)


if __name__ == "__main__":
    main(sys.argv[1:])
