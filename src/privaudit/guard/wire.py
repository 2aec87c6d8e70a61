"""What the proxy accepts: the inference routes it forwards, and client requests turned into records.

Only the protocol's inference routes reach the upstream (``/v1/models/{name}:predict`` for KServe v1,
``/v2/models/{name}[/versions/{v}]/infer`` for v2, or the paths listed in ``routes:``); a key holder
must not reach an upstream's admin or reload endpoints through the guard. Bodies are refused with a
ValueError (the proxy's 400) when they nest deeper than ``max_json_depth``, hold a number written
with more than ``max_number_chars`` characters, a value that overflows a float, or a feature value
beyond ``max_abs_value`` (such a value would overflow the monitor's sketch and leave the request
unmonitored).

Most bodies are the plain KServe v1 shape, ``{"instances": [[numbers, ...], ...]}``; those are read by
orjson and numpy in C (``_fast_records``), after checks on the raw bytes that rule out everything the
exact reader below refuses (a repeated key needs two keys; constants, strings and escapes are absent;
no number is too long). Anything else, and anything the fast path cannot vouch for, goes through the
exact reader, so both accept and refuse the same bodies with the same messages.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Callable, Optional

import numpy as np
import orjson
from numpy.typing import NDArray

from privaudit.guard.config import RequestLimitsConfig
from privaudit.models._http_protocols import WireFormat, get_path

_SEGMENT = "[^/]+"
DEFAULT_ROUTES = {
    "kserve-v1": ["/v1/models/{name}:predict"],
    "v2": ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"],
}
DEFAULT_ROUTES["auto"] = DEFAULT_ROUTES["kserve-v1"] + DEFAULT_ROUTES["v2"]
def route_matcher(protocol: str, routes: list[str] | None) -> Callable[[str], bool]:
    """Whether a request path is one of the inference routes the guard forwards."""
    if routes is None:
        routes = DEFAULT_ROUTES.get(protocol)
        if routes is None:
            raise ValueError(f"protocol {protocol} has no standard inference route; list the model's paths in routes:")
    parts = []
    for route in routes:
        pieces = re.split(r"\{[^/{}]+\}", route)
        parts.append(_SEGMENT.join(re.escape(p) for p in pieces))
    pattern = re.compile("(?:" + "|".join(parts) + ")")

    def matches(path: str) -> bool:
        return pattern.fullmatch(path) is not None and ".." not in path.split("/")

    return matches


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two "instances" keys could mean one thing to us and another to the model server; refuse both.
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("the JSON repeats a key")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"the JSON holds {name}, which is not a number")


def nesting(body: bytes) -> int:
    """An upper bound on the JSON's nesting depth (brackets inside strings count too)."""
    if not body:
        return 0
    b = np.frombuffer(body, dtype=np.uint8)
    steps = (b == ord("[")).astype(np.int32) + (b == ord("{")) - (b == ord("]")) - (b == ord("}"))
    return int(np.cumsum(steps).max(initial=0))


def _numbers(rows: Any, feature_names: tuple[str, ...] | None) -> NDArray[np.float64]:
    if not isinstance(rows, list) or not rows:
        raise ValueError("expected a non-empty list of records")
    if feature_names is not None and all(isinstance(r, dict) for r in rows):
        try:
            rows = [[r[name] for name in feature_names] for r in rows]
        except KeyError as exc:
            raise ValueError(f"a record lacks feature {exc.args[0]!r}") from None
    width = len(rows[0]) if isinstance(rows[0], list) else -1
    for row in rows:
        if not isinstance(row, list) or len(row) != width or width == 0:
            raise ValueError("every record must be a list of the same number of features")
        for v in row:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"feature value {v!r} is not a number")
    return np.asarray(rows, dtype=np.float64)


def load_json(body: bytes, limits: RequestLimitsConfig) -> Any:
    """The JSON document, or ValueError naming what is wrong with it."""
    depth = nesting(body)
    if depth > limits.max_json_depth:
        raise ValueError(f"the JSON nests {depth} levels deep; at most {limits.max_json_depth} are accepted")

    def number(text: str) -> float:
        if len(text) > limits.max_number_chars:
            raise ValueError(f"a number is written with {len(text)} characters; at most {limits.max_number_chars} are accepted")
        value = float(text)
        if not np.isfinite(value):
            raise ValueError(f"the number {text[:20]} overflows a 64-bit float")
        return value

    try:
        return json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                          parse_int=number, parse_float=number)
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 JSON") from None
    except RecursionError:
        raise ValueError("the JSON nests too deeply") from None


@lru_cache(maxsize=8)
def _long_number(chars: int) -> re.Pattern[bytes]:
    return re.compile(rb"[-+.eE0-9]{%d,}" % (chars + 1))


def _fast_records(body: bytes, limits: RequestLimitsConfig) -> Optional[NDArray[np.float64]]:
    """The records of a plain KServe v1 body, or None when the exact reader must decide."""
    # Two quotes: one key, so none repeated, and no strings among the values; no backslash: no escapes;
    # no true/false/null: every value is a number or a list; depth 3 is all this shape needs.
    if (body.count(b'"') != 2 or b"\\" in body or b"true" in body or b"false" in body or b"null" in body
            or limits.max_json_depth < 3 or _long_number(limits.max_number_chars).search(body)):
        return None
    try:
        doc = orjson.loads(body)  # refuses NaN, Infinity, numbers that overflow and invalid UTF-8
        rows = doc["instances"]
        if not isinstance(rows, list) or not rows or not isinstance(rows[0], list):
            return None
        X = np.asarray(rows, dtype=np.float64)  # refuses ragged rows (a ValueError)
    except (ValueError, TypeError, KeyError):
        return None
    if X.ndim != 2 or X.shape[1] == 0:
        return None
    return X


def encode_records(wire: WireFormat, X: NDArray[np.float64]) -> bytes:
    """The upstream request body for ``X`` (WireFormat.encode; the KServe v1 shape written by orjson)."""
    if wire.protocol in ("v2", "custom") or not np.isfinite(X).all():
        return wire.encode(X)  # also refuses NaN and infinity, which JSON cannot carry
    return b'{"instances":' + orjson.dumps(np.ascontiguousarray(X), option=orjson.OPT_SERIALIZE_NUMPY) + b"}"


def parse_request(wire: WireFormat, body: bytes, limits: RequestLimitsConfig | None = None) -> NDArray[np.float64]:
    """The (n, d) records of a client request in ``wire``'s protocol (the inverse of WireFormat.encode)."""
    limits = limits or RequestLimitsConfig()
    X = _fast_records(body, limits) if wire.protocol not in ("v2", "custom") else None
    if X is not None:
        return _bounded(X, limits)
    doc = load_json(body, limits)
    if wire.protocol == "v2":
        inputs = doc.get("inputs") if isinstance(doc, dict) else None
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise ValueError("expected 'inputs' holding exactly one tensor")
        shape, data = inputs[0].get("shape"), inputs[0].get("data")
        # Integers arrive as floats (parse_int above); a shape must still be whole and positive.
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, float) and s.is_integer() and s > 0 for s in shape)):
            raise ValueError("the input tensor's shape must be [records, features]")
        shape = [int(s) for s in shape]
        # The spec sends data flat, row-major; some clients nest it by row. Accept both, exactly shaped.
        flat = isinstance(data, list) and bool(data) and not isinstance(data[0], list)
        X = _numbers([data], None)[0] if flat else _numbers(data, None)
        if X.size != shape[0] * shape[1] or (not flat and X.shape != tuple(shape)):
            raise ValueError(f"the input tensor's data does not fill shape {shape}")
        X = X.reshape(shape[0], shape[1])
    elif wire.protocol == "custom":
        X = _numbers(get_path(doc, wire.input_field), wire.feature_names)
    else:
        X = _numbers(doc.get("instances") if isinstance(doc, dict) else None, None)
    return _bounded(X, limits)


def _bounded(X: NDArray[np.float64], limits: RequestLimitsConfig) -> NDArray[np.float64]:
    biggest = float(np.max(np.abs(X))) if X.size else 0.0
    if not biggest <= limits.max_abs_value:
        raise ValueError(f"a feature value of magnitude {biggest:.3g} exceeds max_abs_value {limits.max_abs_value:g}")
    return X
