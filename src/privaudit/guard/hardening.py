"""Output hardening: what a caller is allowed to see of the model's scores, per tier.

Pure functions. The masking and rounding itself is ``privaudit.target.apply_output_mode`` -- the very
function audits use for what-if scoring -- so the guard serves exactly what a hardened audit assumed.
``encode_answer`` writes the hardened outputs back in the client's protocol from scratch: fields of
the upstream answer that are not predictions (raw logits, extra outputs) are never passed on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from privaudit.guard.config import OutputPolicy
from privaudit.models._http_protocols import WireFormat, label_key, set_path
from privaudit.target import OutputMode, apply_output_mode

_V2_META = ("model_name", "model_version", "id")  # upstream v2 fields that carry no model output


def mode_for(policy: OutputPolicy) -> OutputMode:
    """The ``hardening`` policy of guard.yaml as the OutputMode audits speak."""
    if policy.output == "label":
        return OutputMode("label")
    return OutputMode(policy.output, rounding=policy.round, k=policy.k)


def stricter(mode: OutputMode) -> OutputMode:
    """One step down the ladder, for principals monitoring flags "degrade":
    probabilities / top-k -> top-1 rounded to 1 decimal -> label only."""
    if mode.kind == "label":
        return mode
    if mode.kind == "top_k" and mode.k == 1 and mode.rounding is not None and mode.rounding <= 1:
        return OutputMode("label")
    return OutputMode("top_k", rounding=1 if mode.rounding is None else min(mode.rounding, 1), k=1)


def harden(outputs: NDArray[Any], mode: OutputMode) -> NDArray[Any]:
    """Apply ``mode`` to decoded upstream outputs: (n, C) scores, NaN where the upstream already left a
    class out, or (n,) label indices (which cannot be hardened further and pass unchanged)."""
    out = np.asarray(outputs)
    if out.ndim != 2:
        return out
    scores = out.astype(np.float64)
    missing = np.isnan(scores)
    # Ranking must ignore classes the upstream withheld; -inf sorts them last and never wins argmax.
    ranked = np.where(missing, -np.inf, scores)
    hardened = apply_output_mode(ranked, mode)
    if mode.kind == "label":
        return hardened
    result: NDArray[np.float64] = np.where(np.isinf(hardened) | missing, np.nan, hardened)
    return result


def _label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _top_pairs(row: NDArray[np.float64]) -> list[tuple[int, float]]:
    present = np.flatnonzero(~np.isnan(row))
    order = present[np.argsort(-row[present], kind="stable")]
    return [(int(j), float(row[j])) for j in order]


def _v2_outputs(hardened: NDArray[Any], classes: NDArray[Any]) -> list[dict[str, Any]]:
    labels = [_label(c) for c in classes.tolist()]
    text = not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in labels)
    label_type = "BYTES" if text else "INT64"
    n = len(hardened)
    if hardened.ndim == 1:
        data = [labels[int(i)] for i in hardened]
        return [{"name": "label", "shape": [n], "datatype": label_type, "data": data}]
    if not np.isnan(hardened).any():
        return [{"name": "probabilities", "shape": list(hardened.shape), "datatype": "FP64", "data": hardened.ravel().tolist()}]
    # v2 tensors are rectangular and JSON has no NaN: send the k best labels and their scores side by side.
    pairs = [_top_pairs(row) for row in hardened]
    k = min((len(p) for p in pairs), default=0)
    return [
        {"name": "top_k_labels", "shape": [n, k], "datatype": label_type, "data": [labels[j] for p in pairs for j, _ in p[:k]]},
        {"name": "top_k_probabilities", "shape": [n, k], "datatype": "FP64", "data": [s for p in pairs for _, s in p[:k]]},
    ]


def _rows(hardened: NDArray[Any], classes: NDArray[Any]) -> list[Any]:
    labels = [_label(c) for c in classes.tolist()]
    if hardened.ndim == 1:
        return [labels[int(i)] for i in hardened]
    if not np.isnan(hardened).any():
        rows: list[Any] = hardened.tolist()
        return rows
    # The same {label: score} objects privaudit's own HTTP adapter reads, best first.
    return [{label_key(labels[j]): s for j, s in _top_pairs(row)} for row in hardened]


def encode_answer(wire: WireFormat, hardened: NDArray[Any], classes: NDArray[Any], upstream: Any) -> dict[str, Any]:
    """The JSON body for the client, in the protocol it spoke; only metadata survives from ``upstream``."""
    if wire.protocol == "v2":
        body: dict[str, Any] = {}
        if isinstance(upstream, dict):
            body.update({k: upstream[k] for k in _V2_META if isinstance(upstream.get(k), str)})
        body["outputs"] = _v2_outputs(hardened, classes)
        return body
    rows = _rows(hardened, classes)
    if wire.protocol == "custom":
        return set_path(wire.output_field, rows)
    return {"predictions": rows}
