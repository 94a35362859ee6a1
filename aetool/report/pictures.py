"""Pictures drawn with Pillow: image grids, error heatmaps, heatmap panels, PNG bytes.

Everything here takes plain numpy arrays and returns a ``PIL.Image`` or PNG
bytes, so the same pictures serve ``aetool report`` (embedded in HTML),
``--png-dir``, ``aetool score --heatmaps`` and the per-epoch sample grids of
``aetool train --samples``. Image arrays are ``(C, H, W)`` floats in
``[0, 1]`` with ``C`` 1 or 3, the layout the models consume. Plots with axes
live in :mod:`aetool.report.charts`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from aetool.files import atomic_write_bytes

__all__ = [
    "GRID_BACKGROUND",
    "GRID_PAD",
    "HEATMAP_COLORMAP",
    "heatmap_overlay",
    "image_grid",
    "png_bytes",
    "reconstruction_grid",
    "save_png",
    "to_image",
    "upscale",
]

#: Gap between grid cells and around the grid, in pixels.
GRID_PAD = 4
#: Colour of the gaps: light grey, so both black and white images show their edges.
GRID_BACKGROUND = (225, 225, 225)
HEATMAP_COLORMAP = "turbo"
_LABEL_FONT_SIZE = 14


def _as_array(x: Any) -> np.ndarray:
    """Convert arrays, lists or torch tensors (without importing torch) to float arrays."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def to_image(image: Any) -> Image.Image:
    """Convert one ``(C, H, W)`` or ``(H, W)`` float image in ``[0, 1]`` to an RGB PIL image.

    Values are clipped to ``[0, 1]``; NaN becomes 0.

    Raises:
        ValueError: The array is not an image with 1 or 3 channels.
    """
    arr = _as_array(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"expected an image shaped (C, H, W) with C 1 or 3, got {arr.shape}")
    arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    u8 = (np.clip(arr, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if u8.shape[0] == 1:
        return Image.fromarray(u8[0], mode="L").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(u8.transpose(1, 2, 0)), mode="RGB")


def _fit_size(h: int, w: int, scale_to: int) -> tuple[int, int]:
    """(height, width) with the longer side ``scale_to``, aspect ratio kept."""
    s = scale_to / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def upscale(img: Image.Image, scale_to: int) -> Image.Image:
    """Resize so the longer side is ``scale_to`` pixels.

    Enlarging uses NEAREST so tiny images (8x8 digits) stay crisp pixel blocks
    instead of blurs; shrinking uses a box filter to avoid aliasing.
    """
    h, w = _fit_size(img.height, img.width, scale_to)
    if (w, h) == img.size:
        return img
    resample = Image.Resampling.NEAREST if w >= img.width else Image.Resampling.BOX
    return img.resize((w, h), resample)


def _font(size: int = _LABEL_FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: fixed bitmap font
        return ImageFont.load_default()


def image_grid(
    rows: Sequence[Any],
    labels: Sequence[str] | None = None,
    scale_to: int = 96,
) -> Image.Image:
    """Lay out batches of images as rows of a grid.

    Every image is resized so its longer side is ``scale_to`` pixels
    (NEAREST when enlarging) and centred in a cell of the largest such size.
    The grid is ``GRID_PAD`` pixels of light grey around and between cells,
    plus a left column with the row labels when given. Rows shorter than the
    longest row leave empty cells.

    Args:
        rows: One batch per row, each ``(N, C, H, W)`` (or ``(N, H, W)``) floats in
            ``[0, 1]`` with ``C`` 1 or 3.
        labels: Optional text for each row, drawn left of it.
        scale_to: Cell size in pixels (longer image side).

    Returns:
        An RGB image of width ``label_width + GRID_PAD + ncols * (cell_w + GRID_PAD)``
        and height ``GRID_PAD + nrows * (cell_h + GRID_PAD)``.

    Raises:
        ValueError: No rows, a row with the wrong shape, or a label count
            that does not match the rows.
    """
    if scale_to < 1:
        raise ValueError("scale_to must be at least 1")
    batches = [_as_array(r) for r in rows]
    if not batches:
        raise ValueError("image_grid needs at least one row")
    if labels is not None and len(labels) != len(batches):
        raise ValueError(f"got {len(labels)} labels for {len(batches)} rows")
    cells: list[list[Image.Image]] = []
    for b in batches:
        if b.ndim == 3:  # (N, H, W) grey
            b = b[:, None]
        if b.ndim != 4:
            raise ValueError(f"each row must be (N, C, H, W), got shape {b.shape}")
        cells.append([upscale(to_image(im), scale_to) for im in b])
    sizes = [im.size for row in cells for im in row] or [(scale_to, scale_to)]
    cell_w = max(s[0] for s in sizes)
    cell_h = max(s[1] for s in sizes)
    ncols = max(1, max(len(row) for row in cells))

    font = _font()
    label_w = 0
    if labels:
        label_w = max(round(font.getlength(str(t))) for t in labels) + 2 * GRID_PAD
    width = label_w + GRID_PAD + ncols * (cell_w + GRID_PAD)
    height = GRID_PAD + len(cells) * (cell_h + GRID_PAD)
    grid = Image.new("RGB", (width, height), GRID_BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(cells):
        y0 = GRID_PAD + r * (cell_h + GRID_PAD)
        if labels:
            draw.text(
                (GRID_PAD, y0 + cell_h / 2),
                str(labels[r]),
                fill=(30, 30, 30),
                font=font,
                anchor="lm",
            )
        for c, im in enumerate(row):
            x0 = label_w + GRID_PAD + c * (cell_w + GRID_PAD)
            grid.paste(im, (x0 + (cell_w - im.width) // 2, y0 + (cell_h - im.height) // 2))
    return grid


def reconstruction_grid(
    inputs: Any,
    recons: Any,
    noisy: Any | None = None,
    n: int = 8,
    scale_to: int = 96,
) -> Image.Image:
    """Grid of the first ``n`` inputs above their reconstructions.

    For denoising models pass the noisy inputs too; they form the middle row,
    between the clean input and what the model made of the noisy one.

    Args:
        inputs: ``(N, C, H, W)`` clean inputs in ``[0, 1]``.
        recons: ``(N, C, H, W)`` reconstructions, same shape as ``inputs``.
        noisy: Optional ``(N, C, H, W)`` noisy inputs the model actually saw.
        n: How many columns (images) to show at most.
        scale_to: Cell size in pixels, see :func:`image_grid`.

    Returns:
        An RGB image with rows labelled ``input``, ``noisy input``, ``reconstruction``.
    """
    rows = [_as_array(inputs)[:n]]
    labels = ["input"]
    if noisy is not None:
        rows.append(_as_array(noisy)[:n])
        labels.append("noisy input")
    rows.append(_as_array(recons)[:n])
    labels.append("reconstruction")
    return image_grid(rows, labels, scale_to=scale_to)


def heatmap_overlay(
    image: Any,
    error_map: Any,
    vmax: float | None = None,
    alpha: float = 0.9,
) -> Image.Image:
    """Colour a per-pixel error map over a greyscale copy of the image.

    Low error is dark blue, high error red (the ``turbo`` colormap). The
    colour's weight grows with the error, from ``0.4 * alpha`` to ``alpha``, so
    the image stays readable where the error is low and hot spots stand out.
    Use the same ``vmax`` for several images to make their colours comparable.

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` floats in ``[0, 1]``.
        error_map: ``(H, W)`` non-negative errors for the same pixels.
        vmax: Error mapped to the hottest colour; default the map's maximum.
        alpha: Weight of the colour at ``vmax``, in ``[0, 1]``.

    Returns:
        An RGB image the size of the input (``W x H``); enlarge it with
        :func:`upscale` for display.

    Raises:
        ValueError: The error map does not match the image's height and width.
    """
    img = _as_array(image)
    if img.ndim == 2:
        img = img[None]
    err = np.nan_to_num(_as_array(error_map), nan=0.0)
    if err.ndim == 3 and err.shape[0] == 1:
        err = err[0]
    if img.ndim != 3 or err.shape != img.shape[1:]:
        raise ValueError(f"error map shape {err.shape} does not match image shape {img.shape}")
    top = float(vmax) if vmax is not None else float(err.max(initial=0.0))
    norm = np.clip(err / top, 0.0, 1.0) if top > 0 else np.zeros_like(err)
    gray = np.clip(np.nan_to_num(img.mean(axis=0)), 0.0, 1.0)[..., None]
    # turbo's last 15% darkens to maroon; stop at its brightest red instead.
    color = colormaps[HEATMAP_COLORMAP](0.85 * norm)[..., :3]
    weight = (alpha * (0.4 + 0.6 * norm))[..., None]
    mixed = (1.0 - weight) * gray + weight * color
    return Image.fromarray((np.clip(mixed, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")


def png_bytes(img: Image.Image) -> bytes:
    """Encode a PIL image as PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_png(img_or_bytes: Image.Image | bytes, path: str | os.PathLike[str]) -> Path:
    """Write a PIL image or PNG bytes to ``path`` atomically.

    The picture goes to a temporary file in the same folder, which then
    replaces ``path``, so readers never see half a file. Missing parent
    folders are created.

    Args:
        img_or_bytes: A PIL image or bytes already PNG-encoded.
        path: Destination file.

    Returns:
        The destination as a ``Path``.
    """
    data = img_or_bytes if isinstance(img_or_bytes, bytes) else png_bytes(img_or_bytes)
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest, data)
    return dest
