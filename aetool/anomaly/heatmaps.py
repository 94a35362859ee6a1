"""Heatmaps: error maps drawn over the images they came from, one PNG panel per image.

An error map lives on the model's grid (its input size, after the resize
mode of training); a heatmap is drawn on the original image, so the map is
brought back onto the original pixel grid first (:func:`map_to_original`,
undoing a centre crop where the model crops). Each PNG is a panel
(:func:`aetool.report.pictures.heatmap_panel`): image | ground truth (when a
mask is known) | error map | overlay, with a colour bar and the pixel
threshold's contour. Every heatmap of a model, here and in the HTML report,
uses the model's one colour scale (:func:`aetool.anomaly.mapscale.map_scale`),
so colours compare across images and commands. Output names mirror the
input's relative path (:func:`heatmap_names`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from aetool.anomaly.labels import scored_root
from aetool.anomaly.mapscale import MapScale, map_scale
from aetool.data.decode import decode_image
from aetool.data.inputs import ImageRef
from aetool.files import atomic_path, check_output
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
    """The error drawn full red in every heatmap of the model (``None``: each map's maximum)."""
    return map_scale(model.metadata, score_kind).vmax


def _load_mask(path: Path, hw: tuple[int, int]) -> np.ndarray | None:
    """A ground-truth mask on the image's own grid, or None when it cannot be read."""
    try:
        with Image.open(path) as img:
            m = img.convert("L")
            if m.size != (hw[1], hw[0]):
                m = m.resize((hw[1], hw[0]), Image.Resampling.NEAREST)
            return np.asarray(m) > 0
    except (OSError, ValueError):
        return None


def write_heatmap(
    target: Path,
    ref: ImageRef,
    emap: np.ndarray,
    *,
    channels: int,
    alpha_background: str,
    resize: str,
    size: tuple[int, int] | None,
    scale: MapScale,
    mask_path: Path | None = None,
    overwrite: bool = True,
    root: Path | None = None,
) -> None:
    """Write the heatmap panel of a model-grid error map on its original image to ``target``.

    The image is decoded again at its own size (``channels`` and
    ``alpha_background`` as the model's preprocessing); ``resize`` and
    ``size`` say how the map's grid was cut from it. ``scale`` is the
    model's colour scale and pixel threshold; ``mask_path`` a ground-truth
    mask to show beside it.

    Raises:
        OutputError: ``target`` is the input image itself, exists (without
            ``overwrite``) or leads out of ``root`` through a symbolic link.
    """
    from aetool.report.pictures import heatmap_panel

    check_output(target, inputs=[ref.path], overwrite=overwrite, root=root)
    image = decode_image(ref.path, channels=channels, alpha_background=alpha_background)
    full = map_to_original(emap, image.shape[1:], resize, size)
    mask = _load_mask(mask_path, image.shape[1:]) if mask_path is not None else None
    panel = heatmap_panel(
        image, full, vmax=scale.vmax, pixel_threshold=scale.pixel_threshold, mask=mask
    )
    with atomic_path(target, overwrite=overwrite, root=root) as tmp:
        panel.save(tmp, format="PNG")
