"""PyTorch models: an ``nn.Module`` in memory, TorchScript (``.pt``/``.pth``), ``torch.export`` (``.pt2``).

A plain ``torch.save`` pickle is refused unless ``--allow-pickle`` is given, like joblib files. Rows go
to the model's device in batches under ``torch.inference_mode()``; outputs come back as numpy
(logits, probabilities or log-probabilities, which the audit tells apart as for any model). A single
output column is read as the score of class 1 of a binary model.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from privaudit.errors import ModelLoadError
from privaudit.models import LoadedModel, LoadOptions, ModelOptions, register_loader

PREDICT_BATCH = 1024
SCRIPT_SUFFIXES = (".pt", ".pth")


def _torch() -> Any:
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise ModelLoadError("PyTorch models need torch: pip install 'privaudit[torch]'") from exc
    return torch


def device_of(module: Any, requested: str | None) -> Any:
    torch = _torch()
    if requested:
        try:
            return torch.device(requested)
        except RuntimeError as exc:
            raise ModelLoadError(f"--device {requested}: not a torch device ({exc})") from exc
    param = next(iter(module.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def static_batch(program: Any) -> int | None:
    """The batch size a ``torch.export`` program was exported with, when it is fixed (no dynamic dim)."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in set(program.graph_signature.user_inputs):
            val = node.meta.get("val")
            dim = None if val is None else val.shape[0]
            return dim if isinstance(dim, int) else None
    return None


class TorchTarget:
    """A torch module queried in batches on its device; returns its raw outputs as float64 numpy."""

    def __init__(self, module: Any, *, device: Any, n_classes: int | None = None, fixed_batch: int | None = None) -> None:
        self.module, self.device, self.fixed_batch = module, device, fixed_batch
        self._classes = None if n_classes is None else np.arange(n_classes)
        self._queries = 0
        param = next(iter(module.parameters()), None)
        self.dtype = param.dtype if param is not None and param.is_floating_point() else _torch().float32

    @property
    def classes(self) -> NDArray[np.generic]:
        if self._classes is None:
            raise ModelLoadError("torch model: its classes are unknown until it has been queried once")
        return self._classes

    @property
    def queries(self) -> int:
        return self._queries

    def raw(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """The module's outputs, shape (n, k), with no conversion beyond numpy."""
        torch = _torch()
        step = self.fixed_batch or PREDICT_BATCH
        parts = []
        with torch.inference_mode():
            for start in range(0, len(X), step):
                chunk = np.asarray(X[start:start + step])
                n = len(chunk)
                if self.fixed_batch and n < self.fixed_batch:  # exported with a fixed batch: pad the last one
                    chunk = np.vstack([chunk, np.repeat(chunk[-1:], self.fixed_batch - n, axis=0)])
                out = self.module(torch.as_tensor(chunk, dtype=self.dtype, device=self.device))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                parts.append(out.detach().to("cpu", torch.float64).numpy().reshape(len(chunk), -1)[:n])
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)))

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        X = np.asarray(X, dtype=np.float64)
        self._queries += len(X)
        out = two_columns(self.raw(X))
        if self._classes is None:
            self._classes = np.arange(out.shape[1])
        return out


def two_columns(out: NDArray[np.float64]) -> NDArray[np.float64]:
    """One output per row is a binary model's class-1 score: probability if in [0, 1], else a logit."""
    if out.ndim != 2 or out.shape[1] != 1:
        return out
    s = out[:, 0]
    if s.size and s.min() >= 0.0 and s.max() <= 1.0:
        return np.column_stack([1.0 - s, s])
    return np.column_stack([np.zeros_like(s), s])


def from_module(module: Any, options: ModelOptions, *, fmt: str = "torch", path: str | None = None,
                sha256: str | None = None, archive: bytes | None = None, fixed_batch: int | None = None) -> LoadedModel:
    """A ``LoadedModel`` for a torch module, with the built-in training loop as its reference recipe."""
    from privaudit.models.torch_reference import TorchFitter
    from privaudit.models.torch_view import TorchModuleView

    device = device_of(module, options.device)
    if fmt != "torch-export":  # exported programs cannot be moved or switched; they load where asked
        module = module.to(device).eval()  # dropout off, batch-norm statistics frozen while auditing
    target = TorchTarget(module, device=device, fixed_batch=fixed_batch)
    fitter = TorchFitter.of(module, fmt=fmt, archive=archive, options=options, device=str(device), fingerprint=sha256)
    return LoadedModel(target, fmt, path, estimator=TorchModuleView(module, device), sha256=sha256, fitter=fitter)


def output_kind(out: NDArray[np.float64]) -> str:
    """'probabilities' when rows are non-negative and sum to 1 (or one column in [0, 1]), else 'logits'."""
    if out.shape[1] == 1:
        return "probabilities" if out.min() >= 0 and out.max() <= 1 else "logits"
    if out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-4):
        return "probabilities"
    return "logits"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _archive_kind(path: Path) -> str:
    """'script' (TorchScript), 'export' (torch.export) or 'pickle' (torch.save), from the zip's entries."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        return "pickle"  # the legacy torch.save format is a bare pickle stream
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "script"
    if any("/models/" in n and n.endswith(".json") for n in names) or any(n.endswith("/archive_format") for n in names):
        return "export"
    return "pickle"


@register_loader("torch")
def load_torch(spec: str, options: LoadOptions) -> LoadedModel | None:
    fmt = options.model.format
    if fmt not in (None, "torchscript", "torch-export", "torch-pickle"):
        return None
    if fmt is None and not spec.lower().endswith((*SCRIPT_SUFFIXES, ".pt2")):
        return None
    path = Path(spec)
    if not path.is_file():
        raise ModelLoadError(f"{spec}: no such model file")
    kind = _archive_kind(path)
    wanted = {"torchscript": "script", "torch-export": "export", "torch-pickle": "pickle"}.get(fmt or "", kind)
    if kind == "pickle" or wanted == "pickle":
        return _load_pickle(spec, path, options)
    torch = _torch()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    device = torch.device(options.model.device) if options.model.device else torch.device("cpu")
    try:
        if kind == "script":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still shipped
                module = torch.jit.load(io.BytesIO(data), map_location=device)
            return from_module(module, options.model, fmt="torchscript", path=str(path), sha256=digest, archive=data)
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # torch raises many types for damaged archives
        raise ModelLoadError(f"{spec}: torch could not load the model ({type(exc).__name__}: {exc})") from exc
    return from_module(program.module(), options.model, fmt="torch-export", path=str(path), sha256=digest,
                       archive=data, fixed_batch=static_batch(program))


def _load_pickle(spec: str, path: Path, options: LoadOptions) -> LoadedModel:
    if not options.allow_pickle:
        raise ModelLoadError(
            f"{spec}: refusing to unpickle; this is a torch.save pickle, and loading it runs any code inside it. "
            "If you trust its source pass --allow-pickle, or save the model once with torch.jit.save "
            "(.pt) or torch.export.save (.pt2), which privaudit loads without unpickling")
    torch = _torch()
    try:
        obj = torch.load(path, map_location=options.model.device or "cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"{spec}: could not unpickle the model ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, torch.nn.Module):
        raise ModelLoadError(f"{spec}: holds a {type(obj).__name__}, not a torch module (a state_dict has weights "
                             "but no architecture); save the module itself, or with torch.jit.save/torch.export.save")
    return from_module(obj, options.model, fmt="torch-pickle", path=str(path), sha256=sha256_of(path))
