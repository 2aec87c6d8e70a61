"""A differentiable view of any loaded torch module, for white-box inversion (imported only with torch)."""

from __future__ import annotations

from typing import Any

import torch

from privaudit.models.torch import output_kind


class TorchModuleView(torch.nn.Module):
    """``module``'s log-probabilities, whatever it returns (logits or probabilities, decided on the first call).

    The inversion code reads a module's last child to tell whether it ends in a softmax; scripted and
    exported modules hide their layer types, so every torch target is differentiated through this view:
    the softmax of its output is the model's probabilities. The class name tells the inversion judge
    the model is a neural network.
    """

    def __init__(self, module: Any, device: Any) -> None:
        super().__init__()
        self.inner = module
        self.device = device
        self.kind: str | None = None

    def train(self, mode: bool = True) -> TorchModuleView:
        # The audited module stays in eval mode (exported programs cannot even switch).
        self.training = mode
        return self

    def forward(self, x: Any) -> Any:
        out = self.inner(x.to(self.device))
        out = out[0] if isinstance(out, (tuple, list)) else out
        out = out.reshape(len(out), -1)
        if self.kind is None:
            self.kind = output_kind(out.detach().to("cpu", torch.float64).numpy())
        if out.shape[-1] == 1:
            out = torch.cat([1 - out, out], dim=-1) if self.kind == "probabilities" else \
                torch.cat([torch.zeros_like(out), out], dim=-1)
        if self.kind == "probabilities":
            return torch.log(out.clamp_min(1e-300))
        return torch.log_softmax(out, dim=-1)
