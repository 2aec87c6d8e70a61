"""Wire formats for HTTP model endpoints: build request bodies and read predictions back.

Kept apart from the transport (``privaudit.models.http``) so the JSON shapes can be tested and
extended without touching retries, pacing or threads. Everything here is pure and thread-safe.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from privaudit.errors import ConfigError, DataError, EndpointError

Protocol = Literal["kserve-v1", "v2", "custom"]
PROTOCOLS: tuple[str, ...] = ("auto", "kserve-v1", "v2", "custom")
ROW_FORMATS: tuple[str, ...] = ("list", "dict")

# v2 integer-like datatypes: an (n, 1) tensor of these is one label per row, not one score.
_V2_LABEL_TYPES = frozenset({"BOOL", "BYTES", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
# Names servers give the score tensor when they also return other outputs (labels, ids, ...).
_V2_SCORE_HINTS = ("prob", "score", "logit")
_MAX_LISTED = 8  # how many classes / keys an error message lists before eliding the rest


def resolve_protocol(protocol: str, url_path: str) -> Protocol:
    """Pick the wire format; "auto" trusts the URL because v2 servers all mount under ``/v2/``."""
    if protocol == "auto":
        return "v2" if "/v2/" in url_path else "kserve-v1"
    if protocol in ("kserve-v1", "v2", "custom"):
        return protocol  # type: ignore[return-value]
    raise ConfigError(f"--protocol {protocol}: not supported; use one of {', '.join(PROTOCOLS)}")


# The top-level field each protocol puts the rows in; an error body quoting another protocol's field
# means the request went out in the wrong shape.
_ROWS_FIELD = {"kserve-v1": "instances", "v2": "inputs"}


def protocol_mismatch(sent: str, input_field: str, error_body: str) -> tuple[str, str] | None:
    """(field named, protocol it belongs to) when an error body names the rows field of a protocol
    other than the one ``sent`` (e.g. ``KeyError: 'instances'`` after a v2 request), else None."""
    ours = _ROWS_FIELD.get(sent, input_field.split(".")[0])
    for protocol, field in _ROWS_FIELD.items():
        if field != ours and re.search(rf"""['"]{field}['"]""", error_body):
            return field, protocol
    return None


def _listing(values: Any) -> str:
    items = [repr(v.item() if isinstance(v, np.generic) else v) for v in list(values)[:_MAX_LISTED]]
    more = len(values) - _MAX_LISTED
    return "[" + ", ".join(items) + (f", ... {more} more" if more > 0 else "") + "]"


def get_path(body: Any, path: str) -> Any:
    """Follow a dotted path (``result.scores``, ``outputs.0.data``) into decoded JSON."""
    node = body
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            keys = _listing(sorted(node)) if isinstance(node, dict) else type(node).__name__
            raise EndpointError(
                f"the answer has no '{part}' in '{path}' (found {keys}); set --output-field to the path of the predictions (with --protocol custom)"
            )
    return node


def set_path(path: str, value: Any) -> dict[str, Any]:
    """Nest ``value`` under a dotted path: ``data.rows`` -> ``{"data": {"rows": value}}``."""
    out: Any = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out  # type: ignore[no-any-return]


@dataclass(frozen=True)
class WireFormat:
    """How one endpoint wants its rows and where its answer keeps the predictions."""

    protocol: Protocol
    input_field: str = "instances"
    output_field: str = "predictions"
    row_format: str = "list"
    feature_names: tuple[str, ...] | None = None

    def encode(self, X: NDArray[np.float64]) -> bytes:
        """JSON body for one batch. NaN/inf are refused: JSON has no spelling for them."""
        if not np.all(np.isfinite(X)):
            raise DataError("the records contain NaN or infinite values, which JSON cannot carry; impute them before auditing an HTTP endpoint")
        rows: list[Any] = X.tolist()
        if self.protocol == "v2":
            body: dict[str, Any] = {
                "inputs": [{"name": "input-0", "shape": list(X.shape), "datatype": "FP64", "data": X.ravel().tolist()}]
            }
        elif self.protocol == "custom":
            if self.row_format == "dict":
                names = self.feature_names or ()
                if X.shape[1] != len(names):
                    raise DataError(
                        f"the records have {X.shape[1]} columns but the HTTP setting feature_names lists {len(names)}; give one name per column"
                    )
                rows = [dict(zip(names, row)) for row in rows]
            body = set_path(self.input_field, rows)
        else:
            body = {"instances": rows}
        return json.dumps(body, separators=(",", ":")).encode()

    def extract(self, body: Any, n: int) -> list[Any]:
        """The ``n`` per-record predictions inside a decoded answer, in request order."""
        if self.protocol == "v2":
            rows = _v2_rows(body)
        elif self.protocol == "custom":
            rows = get_path(body, self.output_field)
        else:
            rows = get_path(body, "predictions")
        if not isinstance(rows, list):
            raise EndpointError(f"expected a list of predictions but the answer holds {type(rows).__name__}; check --protocol and --output-field")
        if len(rows) != n:
            raise EndpointError(f"sent {n} records but got {len(rows)} predictions back; the endpoint must answer one prediction per record")
        return rows


def _v2_rows(body: Any) -> list[Any]:
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        found = _listing(sorted(body)) if isinstance(body, dict) else type(body).__name__
        raise EndpointError(f"the answer has no v2 'outputs' list (found {found}); is this an Open Inference Protocol v2 endpoint? if not, pass --protocol kserve-v1 or custom")
    out = _pick_v2_output(outputs)
    data, shape = out.get("data"), out.get("shape")
    if not isinstance(data, list) or not isinstance(shape, list) or not shape:
        raise EndpointError(f"v2 output '{out.get('name')}' lacks a data list or a shape; the endpoint's answer is malformed")
    if data and isinstance(data[0], list):
        return data  # some servers send nested rows despite the spec; take them as they are
    if math.prod(shape) != len(data):
        raise EndpointError(f"v2 output '{out.get('name')}' has shape {shape} but {len(data)} values; the endpoint's answer is malformed")
    width = math.prod(shape[1:]) if len(shape) > 1 else 1
    if len(shape) == 1 or (width == 1 and str(out.get("datatype", "")).upper() in _V2_LABEL_TYPES):
        return data  # one label per record (MLServer reports 1-D outputs as (n, 1))
    return [data[i : i + width] for i in range(0, len(data), width)]


def _pick_v2_output(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(outputs) == 1:
        return outputs[0]
    for out in outputs:
        if any(hint in str(out.get("name", "")).lower() for hint in _V2_SCORE_HINTS):
            return out
    for out in outputs:
        shape = out.get("shape")
        if isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 1:
            return out
    return outputs[0]


# --- answers -> numpy -------------------------------------------------------------------------


def label_key(value: Any) -> str:
    """Compare labels by spelling so JSON's "1", 1 and 1.0 all find class 1."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _row_kind(row: Any) -> str:
    if isinstance(row, dict):
        return "top_k"
    if isinstance(row, list):
        # Hugging Face style top-k: [{"label": "cat", "score": 0.9}, ...]
        if row and all(isinstance(x, dict) and "label" in x for x in row):
            return "top_k"
        return "scores"
    if isinstance(row, (str, int, float)):  # bool is an int
        return "label"
    return type(row).__name__


def _need_classes(kind: str) -> EndpointError:
    return EndpointError(
        f"the endpoint answers {kind} rather than one score per class, and no audited data names its classes; "
        "list them with --classes (e.g. --classes cat,dog)"
    )


def _index(lookup: dict[str, int], label: Any, classes: NDArray[np.generic], given: bool) -> int:
    try:
        return lookup[label_key(label)]
    except KeyError:
        where = "--classes" if given else "the label column of the audited data"
        raise EndpointError(
            f"the endpoint answered label {label!r}, which is not among the classes {_listing(classes)} from {where}; "
            "list every label the model can return, in order, with --classes a,b,c"
        ) from None


def classes_from_labels(labels: Any) -> NDArray[np.generic]:
    """The distinct labels of the audited data, once each by spelling, in a stable (sorted) order."""
    distinct = {label_key(v): v for v in np.asarray(labels).tolist()}
    return np.asarray([distinct[k] for k in sorted(distinct)], dtype=object)


def _top_k_pairs(row: Any) -> list[tuple[Any, Any]]:
    if isinstance(row, dict):
        return list(row.items())
    pairs = []
    for item in row:
        score = item.get("score", item.get("probability"))
        if score is None:
            raise EndpointError(f"top-k entry {item!r} has a label but no score or probability; the endpoint's answer is malformed")
        pairs.append((item["label"], score))
    return pairs


def decode(rows: list[Any], classes: NDArray[np.generic] | None,
           data_classes: NDArray[np.generic] | None = None) -> tuple[NDArray[Any], NDArray[np.generic]]:
    """Turn per-record predictions into the Target output and the (possibly inferred) classes.

    Label and top-k answers name classes rather than order them; without ``classes`` they are looked
    up in ``data_classes`` (the label column's values of the audited data).

    Score lists become float ``(n, C)``; labels become int ``(n,)`` indices into ``classes``;
    ``{label: prob}`` maps become float ``(n, C)`` with NaN for classes the endpoint left out.
    """
    kinds = {_row_kind(r) for r in rows}
    if len(kinds) > 1:
        raise EndpointError(f"the endpoint mixes prediction shapes ({', '.join(sorted(kinds))}) within one audit; it must answer the same way every time")
    kind = kinds.pop() if kinds else "scores"
    if kind == "scores":
        try:
            out = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            raise EndpointError("the endpoint's score lists are not all numeric lists of one length; it must return one score per class per record") from None
        if rows and out.ndim != 2:
            raise EndpointError(f"the endpoint's scores have shape {out.shape}; expected one flat list of class scores per record")
        width = out.shape[1] if out.ndim == 2 else (0 if classes is None else len(classes))
        out = out.reshape(len(rows), width)
        if classes is None:
            return out, np.arange(width)
        if width != len(classes):
            raise EndpointError(f"the endpoint returns {width} scores per record but --classes lists {len(classes)}; fix --classes")
        return out, classes
    if kind not in ("label", "top_k"):
        raise EndpointError(f"a prediction is a JSON {kind}; expected class scores, a label, or a {{label: probability}} object")
    given = classes is not None
    if classes is None:
        if data_classes is None:
            raise _need_classes("labels" if kind == "label" else "top-k {label: probability} objects")
        classes = data_classes
    lookup = {label_key(c): i for i, c in enumerate(classes.tolist())}
    if kind == "label":
        for r in rows:
            if isinstance(r, float) and not r.is_integer():
                raise EndpointError(
                    "the endpoint answers one fractional number per record; return all class probabilities per record (or class labels)"
                )
        return np.fromiter((_index(lookup, r, classes, given) for r in rows), dtype=np.int64, count=len(rows)), classes
    full = np.full((len(rows), len(classes)), np.nan)
    for i, row in enumerate(rows):
        for label, score in _top_k_pairs(row):
            try:
                full[i, _index(lookup, label, classes, given)] = float(score)
            except (TypeError, ValueError):
                raise EndpointError(f"top-k score {score!r} for label {label!r} is not a number; the endpoint's answer is malformed") from None
    return full, classes
