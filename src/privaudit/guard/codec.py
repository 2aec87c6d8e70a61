"""QueryEvents as compact bytes, for the pipe between the guard and its monitoring process.

Pickling an event (a frozen dataclass holding two numpy arrays and a dict) costs tens of
microseconds and a pickle opcode stream per array; the request path pays for every event it hands
off, so an event is written as one small JSON header (orjson) followed by the raw float64 bytes
of its rows and outputs. Records are length-prefixed so several travel in one pipe message.

    record := u32 header length | header (JSON list) | inputs (n*d float64) | outputs (n*C float64, optional)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
import orjson

from privaudit.guard.events import QueryEvent

_U32 = struct.Struct("<I")


def encode_event(event: QueryEvent) -> bytes:
    """One length-prefixed record. Raises TypeError when ``extra`` holds what JSON cannot carry."""
    inputs = np.ascontiguousarray(event.inputs, dtype=np.float64)
    outputs = None if event.outputs is None else np.ascontiguousarray(event.outputs, dtype=np.float64)
    out_shape = [-1, -1] if outputs is None else list(outputs.shape)
    header = orjson.dumps([event.principal, event.tier, event.time, event.client_ip, event.decision, event.status,
                           event.request_id, event.extra, *inputs.shape, *out_shape])
    body = _U32.pack(len(header)) + header + inputs.tobytes() + (b"" if outputs is None else outputs.tobytes())
    return _U32.pack(len(body)) + body


def decode_events(data: bytes) -> Iterator[QueryEvent]:
    """The events of a concatenation of records (the inverse of ``encode_event``)."""
    view = memoryview(data)
    at = 0
    while at < len(view):
        (size,) = _U32.unpack_from(view, at)
        end = at + 4 + size
        (hlen,) = _U32.unpack_from(view, at + 4)
        start = at + 8 + hlen
        (principal, tier, time, client_ip, decision, status, request_id, extra,
         n, d, on, oc) = orjson.loads(view[at + 8:start])
        cut = start + 8 * n * d
        # Copies, not views: an event outlives the message buffer (detectors keep rows in their windows).
        inputs = np.frombuffer(view[start:cut], dtype=np.float64).reshape(n, d).copy()
        outputs = None if on < 0 else np.frombuffer(view[cut:end], dtype=np.float64).reshape(on, oc).copy()
        yield QueryEvent(principal, tier, time, client_ip, inputs, outputs, decision, status, request_id, extra)
        at = end
