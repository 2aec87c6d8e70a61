"""The HTML report's model-inversion section: reconstructed images (as PNG data URIs) beside the
evaluator's verdict, and the attribute-inference table. No network, no files: everything inline."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from privaudit.report.schema import Report


def _png_uri(pixels: np.ndarray) -> str:
    """A grey-scale PNG of one image, scaled up with nearest-neighbour so 8x8 digits stay readable."""
    from matplotlib.figure import Figure

    img = np.asarray(pixels, dtype=np.float64)
    lo, hi = float(np.min(img)), float(np.max(img))
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    fig = Figure(figsize=(1.2, 1.2), dpi=80)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(img, cmap="gray_r", interpolation="nearest", vmin=0.0, vmax=1.0)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def inversion_view(report: Report) -> dict[str, Any] | None:
    inv = report.inversion
    if inv is None:
        return None
    extra = inv.model_extra or {}
    shape = extra.get("image_shape")
    recon = extra.get("reconstructions")
    means = extra.get("class_means")
    rows = []
    for i, c in enumerate(inv.classes):
        row: dict[str, Any] = {"c": c, "image": None, "mean": None}
        if shape and recon is not None and i < len(recon):
            row["image"] = _png_uri(np.reshape(recon[i], shape[:2]))
        if shape and means is not None and i < len(means):
            row["mean"] = _png_uri(np.reshape(means[i], shape[:2]))
        rows.append(row)
    return {"inv": inv, "rows": rows, "images": bool(shape and recon is not None)}
