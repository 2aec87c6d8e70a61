"""Kubernetes manifests: KServe ``InferenceService`` and Seldon ``SeldonDeployment``.

What each reads (see docs/scan.md): the model server and whether it returns probabilities, the
request logger, a transformer, and the labels/annotations that carry privaudit evidence.
"""

from __future__ import annotations

import re
from typing import Any

from privaudit.scan.model import Resource, as_bool, skips_in

PROBA_SERVERS = {"sklearn", "xgboost", "lightgbm"}  # KServe servers that return predict_proba on request


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {str(e.get("name")): str(e.get("value")) for e in container.get("env") or [] if isinstance(e, dict)}


def _kserve(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc.get("spec") or {}
    pred = spec.get("predictor") or {}
    fmt, env = None, {}
    for key in ("sklearn", "xgboost", "lightgbm", "tensorflow", "pytorch", "onnx", "triton", "huggingface", "model"):
        if isinstance(pred.get(key), dict):
            block = pred[key]
            fmt = (block.get("modelFormat") or {}).get("name", key) if key == "model" else key
            env = _env(block)
            break
    for c in pred.get("containers") or []:
        env.update(_env(c or {}))
    logger = pred.get("logger") if isinstance(pred.get("logger"), dict) else None
    return {"format": (fmt or "custom").lower(), "proba": as_bool(env.get("PREDICT_PROBA")),
            "logger_mode": (logger or {}).get("mode", "all") if logger is not None else None,
            "logger_url": (logger or {}).get("url"), "transformer": isinstance(spec.get("transformer"), dict)}


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("children") or []:
        if isinstance(child, dict):
            out += _walk(child)
    return out


def _seldon(doc: dict[str, Any]) -> dict[str, Any]:
    nodes = []
    for p in (doc.get("spec") or {}).get("predictors") or []:
        if isinstance((p or {}).get("graph"), dict):
            nodes += _walk(p["graph"])
    servers = [n for n in nodes if n.get("implementation")]
    impl = str(servers[0].get("implementation")) if servers else None
    params = {str(x.get("name")): str(x.get("value")) for x in (servers[0].get("parameters") or [])} if servers else {}
    loggers = [n["logger"] for n in nodes if isinstance(n.get("logger"), dict)]
    return {"implementation": impl, "method": params.get("method"),
            "logger_mode": loggers[0].get("mode", "all") if loggers else None,
            "output_transformer": any(str(n.get("type", "")).upper() == "OUTPUT_TRANSFORMER" for n in nodes)}


def _line_of(text: str, name: str, kind: str) -> int | None:
    """The line of ``kind: X`` in the document that names ``name`` (first match)."""
    lines = text.splitlines()
    kinds = [i for i, ln in enumerate(lines) if re.match(rf"^kind:\s*{kind}\s*$", ln)]
    for i in kinds:
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("---")), len(lines))
        for j in range(i, end):
            if re.match(rf"^\s+name:\s*['\"]?{re.escape(name)}['\"]?\s*$", lines[j]):
                return i + 1
    return kinds[0] + 1 if kinds else None


def parse_manifest(doc: dict[str, Any], text: str, label: str) -> Resource | None:
    kind = doc.get("kind")
    if kind not in ("InferenceService", "SeldonDeployment"):
        return None
    meta = doc.get("metadata") or {}
    name = str(meta.get("name") or "unnamed")
    ns = str(meta.get("namespace") or "default")
    tags = {str(k): str(v) for k, v in {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}.items()}
    props = _kserve(doc) if kind == "InferenceService" else _seldon(doc)
    props["namespace"] = ns
    skip_text = [f"{k}={v}" for k, v in tags.items() if k.startswith("privaudit") and "skip" in k]
    skips = skips_in([f"privaudit:skip={v}" for t in skip_text for v in [t.split("=", 1)[1]]])
    line = _line_of(text, name, kind)
    if line is not None:
        lines = text.splitlines()
        end = next((i for i in range(line, len(lines)) if lines[i].startswith("---")), len(lines))
        skips += skips_in(lines[line - 1:end])
    res = Resource(kind="kserve" if kind == "InferenceService" else "seldon", type=str(kind),
                   address=f"{kind}/{ns}/{name}", name=name, props=props, tags=tags, file=label, line=line, skips=skips)
    res.keys.update({res.address, f"{name}.{ns}", name})
    return res
