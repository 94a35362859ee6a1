"""Heatmaps: error maps drawn over the images they came from, one PNG per image.

An error map lives on the model's grid (its input size, after the resize
mode of training); a heatmap is drawn on the original image, so the map is
brought back onto the original pixel grid first (:func:`map_to_original`,
undoing a centre crop where the model crops). All heatmaps of a run share one
colour scale (:func:`heatmap_vmax`) so their colours compare across images.
Output names mirror the input's relative path (:func:`heatmap_names`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from aetool.anomaly.labels import scored_root
from aetool.data.decode import decode_image
from aetool.data.inputs import ImageRef
from aetool.errors import OutputError
from aetool.files import atomic_path
from aetool.models.file import LoadedModel

__all__ = [
    "crop_box",
    "heatmap_names",
    "heatmap_vmax",
    "map_to_original",
    "overlay",
    "write_heatmap",
]


def heatmap_names(refs: Sequence[ImageRef]) -> Callable[[ImageRef], str]:
    """Mirror relative paths; with several scored roots, prefix each root's name."""
    roots: dict[str, str] = {}
    for ref in refs:
        r = scored_root(ref)
        if r not in roots:
            base = Path(r).name or "root"
            taken = set(roots.values())
            cand, k = base, 2
            while cand in taken:
                cand, k = f"{base}-{k}", k + 1
            roots[r] = cand
    prefix = len(roots) > 1

    def name(ref: ImageRef) -> str:
        rel = PurePosixPath(
            *[p for p in PurePosixPath(ref.relpath).parts if p not in ("..", ".", "/")]
        )
        # Keep the extension in the name of non-PNG inputs: a.jpg and a.png stay apart.
        out = rel.as_posix() if rel.suffix.lower() == ".png" else rel.as_posix() + ".png"
        return f"{roots[scored_root(ref)]}/{out}" if prefix else out

    return name


def overlay(image: np.ndarray, emap: np.ndarray, vmax: float | None) -> Image.Image:
    """The error map coloured over the image (:func:`aetool.report.plots.heatmap_overlay`)."""
    try:
        from aetool.report.plots import heatmap_overlay
    except ImportError:  # pragma: no cover - plots ships with aetool
        g = np.clip(image.mean(axis=0), 0, 1)
        top = vmax or float(emap.max(initial=0)) or 1.0
        e = np.clip(emap / top, 0, 1)
        rgb = np.stack([np.maximum(g, e), g * (1 - e), g * (1 - e)], -1)
        return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    return heatmap_overlay(image, emap, vmax)


def crop_box(orig_hw: tuple[int, int], size: tuple[int, int]) -> tuple[float, ...]:
    """Where the 'crop' resize mode takes its output from, in original pixels."""
    h0, w0 = orig_hw
    h, w = size
    scale = max(w / w0, h / h0)
    nw, nh = max(w, round(w0 * scale)), max(h, round(h0 * scale))
    left, top = (nw - w) // 2, (nh - h) // 2
    sx, sy = w0 / nw, h0 / nh
    return left * sx, top * sy, (left + w) * sx, (top + h) * sy


def map_to_original(
    emap: np.ndarray, orig_hw: tuple[int, int], resize: str, size: tuple[int, int] | None
) -> np.ndarray:
    """Bring a model-resolution error map back onto the original pixel grid."""
    h0, w0 = orig_hw
    if emap.shape == (h0, w0):
        return emap
    t = torch.from_numpy(np.ascontiguousarray(emap, dtype=np.float32))[None, None]
    if resize != "crop" or size is None:
        return F.interpolate(t, size=(h0, w0), mode="bilinear", align_corners=False)[0, 0].numpy()
    x0, y0, x1, y1 = crop_box(orig_hw, size)
    left, top = int(round(x0)), int(round(y0))
    bw, bh = max(1, min(w0, int(round(x1))) - left), max(1, min(h0, int(round(y1))) - top)
    out = np.zeros((h0, w0), dtype=np.float32)
    out[top : top + bh, left : left + bw] = F.interpolate(
        t, size=(bh, bw), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    return out


def heatmap_vmax(model: LoadedModel, score_kind: str) -> float | None:
    """One colour scale for every image of a run (``None``: each map's own maximum).

    Full red at the largest smoothed local error of any normal validation
    image, or 1.0 for ``1 - SSIM`` maps and for a model's own maps (probabilities).
    """
    if score_kind in ("ssim", "model"):
        return 1.0
    local = [v for v in model.validation_scores("max-local") if math.isfinite(v)]
    return max(local) if local and max(local) > 0 else None


def write_heatmap(
    target: Path,
    ref: ImageRef,
    emap: np.ndarray,
    *,
    channels: int,
    alpha_background: str,
    resize: str,
    size: tuple[int, int] | None,
    vmax: float | None,
) -> None:
    """Write the overlay of a model-grid error map on its original image to ``target``.

    The image is decoded again at its own size (``channels`` and
    ``alpha_background`` as the model's preprocessing); ``resize`` and
    ``size`` say how the map's grid was cut from it.

    Raises:
        OutputError: ``target`` is the input image itself.
    """
    if target.exists() and os.path.samefile(target, ref.path):
        raise OutputError(f"refusing to overwrite the input {ref.path} with its heatmap")
    image = decode_image(ref.path, channels=channels, alpha_background=alpha_background)
    full = map_to_original(emap, image.shape[1:], resize, size)
    with atomic_path(target) as tmp:
        overlay(image, full, vmax).save(tmp, format="PNG")
