"""Reference models for torch targets: the same architecture, re-initialised, trained by a built-in loop.

The loop is plain supervised training: cross-entropy (NLL of the log-probabilities when the module
ends in a softmax; binary cross-entropy for a single output column), Adam, shuffled mini-batches,
and early stopping on the reference model's own held-out records -- a sample of the pool records
outside its training half, which it never trains on. Every random choice (initialisation, shuffling,
dropout, the held-out sample) follows ``torch.manual_seed(seed)`` and a seeded generator, on one CPU
thread, so the same seed gives the same reference models on every run and with any ``--jobs``.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from privaudit.models import ModelOptions

VALIDATION_SHARE = 0.2  # held-out records per training record used for early stopping


def _torch() -> Any:
    import torch

    return torch


def reinitialise(module: Any) -> None:
    """Fresh parameters: ``reset_parameters()`` where a layer has one, PyTorch's default init elsewhere.

    Scripted and exported modules hide their layers' methods, so every parameter not covered by a
    ``reset_parameters`` gets the rule PyTorch's Linear/Conv/norm layers use: weights of 2+ dimensions
    Kaiming-uniform (a=sqrt(5)), their biases uniform(+-1/sqrt(fan_in)), 1-D weights ones and other
    1-D parameters zeros; running statistics are reset. For Linear/Conv/norm layers both paths draw
    the same numbers, so an in-memory module and its TorchScript copy re-initialise identically.
    """
    torch = _torch()
    covered: set[int] = set()
    for sub in module.modules():
        reset = getattr(type(sub), "reset_parameters", None)
        if callable(reset) and not isinstance(sub, torch.jit.ScriptModule):
            sub.reset_parameters()
            covered.update(id(p) for p in sub.parameters(recurse=False))
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if id(p) in covered:
                continue
            prefix, _, leaf = name.rpartition(".")
            sibling = params.get(f"{prefix}.weight" if prefix else "weight")
            if p.dim() >= 2:
                torch.nn.init.kaiming_uniform_(p, a=math.sqrt(5))
            elif leaf == "bias" and sibling is not None and sibling.dim() >= 2:
                fan_in = sibling[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                torch.nn.init.uniform_(p, -bound, bound)
            elif leaf == "weight":
                torch.nn.init.ones_(p)
            else:
                torch.nn.init.zeros_(p)
        for name, b in module.named_buffers():
            leaf = name.rpartition(".")[2]
            if leaf == "running_var":
                b.fill_(1.0)
            elif leaf in ("running_mean", "num_batches_tracked"):
                b.zero_()


def _set_mode(module: Any, training: bool) -> None:
    try:
        module.train(training)
    except NotImplementedError:
        pass  # torch.export programs keep the mode they were exported in


def _forward(module: Any, x: Any) -> Any:
    out = module(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def _log_probs(out: Any, kind: str) -> Any:
    """(n, C) log-probabilities from a batch of raw outputs of the given kind."""
    torch = _torch()
    if out.dim() == 1:
        out = out[:, None]
    if out.shape[1] == 1:
        if kind == "probabilities":
            p = out.clamp(1e-7, 1 - 1e-7)
            return torch.log(torch.cat([1 - p, p], dim=1))
        return torch.nn.functional.logsigmoid(torch.cat([-out, out], dim=1))
    if kind == "probabilities":
        return torch.log(out.clamp_min(1e-12))
    return torch.log_softmax(out, dim=1)


def probabilities(module: Any, X: NDArray[np.float64], device: str = "cpu", kind: str | None = None,
                  batch: int = 1024) -> NDArray[np.float64]:
    """A (trained) module's class probabilities on ``X`` as float64 numpy."""
    from privaudit.models.torch import output_kind

    torch = _torch()
    _set_mode(module, False)
    param = next(iter(module.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    outs = []
    with torch.inference_mode():
        for start in range(0, len(X), batch):
            out = _forward(module, torch.as_tensor(X[start:start + batch], dtype=dtype, device=device))
            outs.append(out.reshape(len(out), -1).double())
        raw = torch.cat(outs)
        kind = kind or output_kind(raw.cpu().numpy())
        return np.asarray(torch.exp(_log_probs(raw, kind)).cpu().numpy(), dtype=np.float64)


@dataclass(frozen=True)
class TorchFitter:
    """Trains one reference model from the target's architecture (see the module docstring)."""

    kind = "torch"

    fmt: str  # torch | torch-pickle | torchscript | torch-export
    archive: bytes | None  # the file's bytes for scripted/exported models (re-read in each worker)
    template: Any  # a CPU copy of an in-memory module
    device: str
    epochs: int
    lr: float
    batch_size: int
    patience: int
    key: str
    description: str

    @classmethod
    def of(cls, module: Any, *, fmt: str, archive: bytes | None, options: ModelOptions, device: str,
           fingerprint: str | None) -> TorchFitter:
        torch = _torch()
        template = None
        if archive is None:
            template = copy.deepcopy(module).to("cpu")
            h = hashlib.sha256(repr(module).encode())
            try:
                h.update(inspect.getsource(type(module)).encode())
            except (OSError, TypeError):
                pass
            for name, t in module.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
            fingerprint = h.hexdigest()
        settings = (fmt, fingerprint, options.ref_epochs, options.ref_lr, options.ref_batch_size, options.ref_patience,
                    device, torch.__version__)
        key = hashlib.sha256(repr(settings).encode()).hexdigest()
        what = {"torch": "module", "torch-pickle": "module", "torchscript": "TorchScript module",
                "torch-export": "torch.export program"}[fmt]
        desc = (f"built-in torch loop: same {what}, re-initialised, Adam lr={options.ref_lr}, up to {options.ref_epochs} "
                f"epochs, batch {options.ref_batch_size}, early stopping (patience {options.ref_patience})")
        return cls(fmt, archive, template, device, options.ref_epochs, options.ref_lr, options.ref_batch_size,
                   options.ref_patience, key, desc)

    def fresh(self) -> Any:
        """An untrained copy of the architecture on the training device."""
        torch = _torch()
        if self.fmt == "torchscript":
            assert self.archive is not None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(io.BytesIO(self.archive), map_location=self.device)
        elif self.fmt == "torch-export":
            assert self.archive is not None
            module = torch.export.load(io.BytesIO(self.archive)).module()
        else:
            module = copy.deepcopy(self.template).to(self.device)
        reinitialise(module)
        return module

    def trainable(self) -> bool:
        """False for modules without trainable parameters (e.g. frozen TorchScript: weights are constants)."""
        return any(p.requires_grad for p in self.fresh().parameters())

    def fit_score(self, X: NDArray[np.float64], y: NDArray[np.int64], mask: NDArray[np.bool_], seed: int,
                  n_classes: int) -> NDArray[np.float64]:
        """Train on ``X[mask]`` and return probabilities on every row of ``X``."""
        from privaudit.models.torch import output_kind

        torch = _torch()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # identical numbers whatever --jobs is; workers run side by side
        try:
            torch.manual_seed(seed)
            module = self.fresh()
            rng = np.random.default_rng(seed)
            train_idx = np.flatnonzero(mask)
            outside = np.flatnonzero(~mask)
            n_val = min(len(outside), max(1, int(round(VALIDATION_SHARE * len(train_idx))))) if len(outside) else 0
            val_idx = rng.choice(outside, size=n_val, replace=False) if n_val else outside[:0]
            param = next(iter(module.parameters()))
            dtype = param.dtype
            Xt = torch.as_tensor(X, dtype=dtype, device=self.device)
            yt = torch.as_tensor(y, dtype=torch.long, device=self.device)
            _set_mode(module, False)
            with torch.no_grad():
                kind = output_kind(_forward(module, Xt[train_idx[:256]]).reshape(min(256, len(train_idx)), -1)
                                   .double().cpu().numpy())
            opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=self.lr)
            gen = torch.Generator().manual_seed(seed)
            best, best_state, stale = math.inf, None, 0
            for _epoch in range(self.epochs):
                _set_mode(module, True)
                order = torch.as_tensor(train_idx)[torch.randperm(len(train_idx), generator=gen)].to(self.device)
                for start in range(0, len(order), self.batch_size):
                    batch = order[start:start + self.batch_size]
                    opt.zero_grad()
                    loss = torch.nn.functional.nll_loss(_log_probs(_forward(module, Xt[batch]), kind), yt[batch])
                    loss.backward()
                    opt.step()
                if not n_val:
                    continue
                _set_mode(module, False)
                with torch.no_grad():
                    vi = torch.as_tensor(val_idx, device=self.device)
                    val = float(torch.nn.functional.nll_loss(_log_probs(_forward(module, Xt[vi]), kind), yt[vi]))
                if val < best - 1e-6:
                    best, stale = val, 0
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    stale += 1
                    if stale >= self.patience:
                        break
            if best_state is not None:
                module.load_state_dict(best_state)
            probs = probabilities(module, np.asarray(X), self.device, kind)
        finally:
            torch.set_num_threads(threads)
        if probs.shape[1] != n_classes:
            out = np.zeros((len(X), n_classes))
            out[:, :min(n_classes, probs.shape[1])] = probs[:, :n_classes]
            return out
        return probs
