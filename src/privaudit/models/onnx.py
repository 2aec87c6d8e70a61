"""ONNX models (``.onnx``) run with onnxruntime on the CPU.

The input and output are read from the graph (or named with ``--onnx-input`` / ``--onnx-output``).
skl2onnx classifiers answer a label tensor plus ``output_probability``, a list of ``{class: p}``
dicts; the dicts become columns in the order of the class labels stored in the graph. A graph with
several score outputs must say which is meant: the one whose name mentions probabilities or logits,
else the user names it. A graph exported with a fixed batch size gets its rows in batches of that size.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from privaudit.errors import ModelLoadError
from privaudit.models import LoadedModel, LoadOptions, register_loader, wants

BATCH = 4096
_SCORE_NAME = re.compile(r"prob|logit", re.IGNORECASE)
_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _is_scores(out: Any) -> bool:
    return str(out.type).startswith("seq(map(") or out.type in _FLOAT_TYPES


def pick_output(outputs: list[Any], wanted: str | None, spec: str) -> Any:
    """The output holding class scores: the named one, the only score output, or the prob/logit-named one."""
    names = [o.name for o in outputs]
    if wanted is not None:
        if wanted not in names:
            raise ModelLoadError(f"{spec}: --onnx-output {wanted}: no such output; the graph's outputs are {', '.join(names)}")
        return outputs[names.index(wanted)]
    if len(outputs) == 1:
        return outputs[0]
    scores = [o for o in outputs if _is_scores(o)]
    if len(scores) == 1:
        return scores[0]
    named = [o for o in scores if _SCORE_NAME.search(o.name)]
    if len(named) == 1:
        return named[0]
    choices = scores or outputs
    raise ModelLoadError(f"{spec}: the graph has {len(choices)} outputs that could be class scores "
                         f"({', '.join(o.name for o in choices)}); name the one to audit with --onnx-output NAME")


def graph_classes(path: Path) -> list[Any] | None:
    """Class labels stored in the graph (skl2onnx's ZipMap or an ai.onnx.ml classifier node), if any."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name in ("classlabels_int64s", "classlabels_ints") and attr.ints:
                return list(attr.ints)
            if attr.name == "classlabels_strings" and attr.strings:
                return [s.decode() for s in attr.strings]
    return None


class OnnxTarget:
    """An onnxruntime session queried with one float matrix; answers (n, C) scores or (n,) class indices."""

    def __init__(self, session: Any, input_name: str, output: Any, dtype: Any, classes: list[Any] | None,
                 fixed_batch: int | None) -> None:
        self.session, self.input_name, self.output_name = session, input_name, output.name
        self.is_map = str(output.type).startswith("seq(map(")
        self.dtype, self.fixed_batch = dtype, fixed_batch
        self._classes = None if classes is None else np.asarray(classes)
        self._queries = 0

    @property
    def classes(self) -> NDArray[np.generic]:
        if self._classes is None:
            raise ModelLoadError("ONNX model: its classes are unknown until it has been queried once")
        return self._classes

    @property
    def queries(self) -> int:
        return self._queries

    def _run(self, X: NDArray[Any]) -> Any:
        return self.session.run([self.output_name], {self.input_name: X})[0]

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64] | NDArray[np.int64]:
        X = np.asarray(X, dtype=self.dtype)
        self._queries += len(X)
        step = self.fixed_batch or BATCH
        parts = []
        for start in range(0, len(X), step):
            chunk = X[start:start + step]
            n = len(chunk)
            if self.fixed_batch and n < self.fixed_batch:
                chunk = np.vstack([chunk, np.repeat(chunk[-1:], self.fixed_batch - n, axis=0)])
            parts.append(self._convert(self._run(chunk))[:n])
        out = np.concatenate(parts)
        if out.ndim == 1:  # labels
            if self._classes is None:
                raise ModelLoadError("ONNX model answers labels only and stores no class list; name a score "
                                     "output with --onnx-output")
            return np.searchsorted(self._classes, out).astype(np.int64)
        if self._classes is None:
            self._classes = np.arange(out.shape[1])
        return out

    def _convert(self, raw: Any) -> NDArray[Any]:
        if self.is_map:  # skl2onnx's ZipMap: one {class: probability} dict per row
            keys = list(self._classes) if self._classes is not None else sorted(raw[0]) if raw else []
            if self._classes is None:
                self._classes = np.asarray(keys)
            return np.array([[row[k] for k in keys] for row in raw], dtype=np.float64).reshape(len(raw), len(keys))
        arr = np.asarray(raw)
        if arr.dtype.kind in "iu" or arr.dtype.kind in "OSU":
            return arr.reshape(-1)
        arr = arr.astype(np.float64).reshape(len(arr), -1)
        from privaudit.models.torch import two_columns

        return two_columns(arr)


@register_loader("onnx")
def load_onnx(spec: str, options: LoadOptions) -> LoadedModel | None:
    if not wants(spec, options, "onnx", (".onnx",)):
        return None
    path = Path(spec)
    if not path.is_file():
        raise ModelLoadError(f"{spec}: no such model file")
    try:
        import onnxruntime as ort
    except ModuleNotFoundError as exc:
        raise ModelLoadError("ONNX models need onnxruntime: pip install 'privaudit[onnx]'") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the same numbers on every machine; the audit parallelises elsewhere
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for invalid graphs
        raise ModelLoadError(f"{spec}: onnxruntime could not load the graph ({exc})") from exc
    inputs = session.get_inputs()
    names = [i.name for i in inputs]
    wanted = options.model.onnx_input
    if wanted is not None and wanted not in names:
        raise ModelLoadError(f"{spec}: --onnx-input {wanted}: no such input; the graph's inputs are {', '.join(names)}")
    if wanted is None and len(inputs) != 1:
        raise ModelLoadError(f"{spec}: the graph has {len(inputs)} inputs ({', '.join(names)}); privaudit feeds one "
                             "matrix of features: export the model with a single input, or name it with --onnx-input")
    inp = inputs[names.index(wanted)] if wanted is not None else inputs[0]
    if inp.type not in _FLOAT_TYPES:
        raise ModelLoadError(f"{spec}: input {inp.name} has type {inp.type}; privaudit feeds float features")
    output = pick_output(session.get_outputs(), options.model.onnx_output, spec)
    batch = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    try:
        classes = graph_classes(path)
    except Exception:  # the onnx package is optional at run time; the classes then come from the outputs
        classes = None
    target = OnnxTarget(session, inp.name, output, _FLOAT_TYPES[inp.type], classes, batch)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LoadedModel(target, "onnx", str(path), sha256=digest)
