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
    "PANEL_MAX_SIZE",
    "PANEL_MIN_SIZE",
    "colorbar",
    "contour",
    "heatmap_overlay",
    "heatmap_panel",
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


def save_png(
    img_or_bytes: Image.Image | bytes,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a PIL image or PNG bytes to ``path`` atomically.

    The picture goes to a temporary file in the same folder, which then
    replaces ``path``, so readers never see half a file. Missing parent
    folders are created.

    Args:
        img_or_bytes: A PIL image or bytes already PNG-encoded.
        path: Destination file.
        overwrite: replace an existing file (else :class:`~aetool.errors.OutputError`).
        root: the folder the file must stay in once symlinks are resolved.

    Returns:
        The destination as a ``Path``.
    """
    data = img_or_bytes if isinstance(img_or_bytes, bytes) else png_bytes(img_or_bytes)
    dest = Path(path)
    atomic_write_bytes(dest, data, overwrite=overwrite, root=root)
    return dest


# ---------------------------------------------------------------------------
# Heatmap panels: image | ground truth | error map | overlay, with a colour bar

#: Shortest a panel cell's longer side is drawn (tiny images are enlarged, nearest neighbour).
PANEL_MIN_SIZE = 256
#: Longest a panel cell's longer side is drawn (larger images are shrunk, box filter).
PANEL_MAX_SIZE = 1024
_CONTOUR_COLOR = (255, 255, 255)
_BAR_WIDTH = 14


def _colored_map(err: np.ndarray, vmax: float | None) -> np.ndarray:
    """The error map alone in the overlay's colours, float RGB ``(H, W, 3)``."""
    top = float(vmax) if vmax is not None else float(err.max(initial=0.0))
    norm = np.clip(err / top, 0.0, 1.0) if top > 0 else np.zeros_like(err)
    return colormaps[HEATMAP_COLORMAP](0.85 * norm)[..., :3]


def _cell_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(height, width) of a cell: integer enlargement up to ``min_size``, shrink to ``max_size``."""
    long = max(h, w)
    if long < min_size:
        k = -(-min_size // long)
        return h * k, w * k
    if long > max_size:
        return _fit_size(h, w, max_size)
    return h, w


def _resize_to(img: Image.Image, hw: tuple[int, int]) -> Image.Image:
    h, w = hw
    if img.size == (w, h):
        return img
    resample = Image.Resampling.NEAREST if w >= img.width else Image.Resampling.BOX
    return img.resize((w, h), resample)


def contour(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a boolean mask: inside pixels with an outside 4-neighbour.

    Pixels on the image border count as boundary when inside, so a region
    touching the edge is closed.
    """
    m = np.asarray(mask, dtype=bool)
    p = np.pad(m, 1, constant_values=False)
    interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~interior


def _draw_contour(cell: Image.Image, err: np.ndarray, threshold: float) -> Image.Image:
    above = Image.fromarray(np.asarray(err >= threshold, dtype=np.uint8) * 255, "L")
    above = above.resize(cell.size, Image.Resampling.NEAREST)
    edge = contour(np.asarray(above) > 127)
    arr = np.array(cell)
    arr[edge] = _CONTOUR_COLOR
    return Image.fromarray(arr, "RGB")


def colorbar(height: int, vmax: float | None, pixel_threshold: float | None = None) -> Image.Image:
    """A vertical colour bar of the heatmap colours, 0 at the bottom, ``vmax`` at the top.

    Tick labels give 0 and ``vmax`` (``max`` when each map uses its own maximum);
    a white line and label mark the pixel threshold.
    """
    font = _font(11)
    labels = ["0", f"{vmax:.3g}" if vmax else "max"]
    if pixel_threshold is not None and vmax:
        labels.append(f"{pixel_threshold:.3g}")
    text_w = max(round(font.getlength(t)) for t in labels) + 6
    width = _BAR_WIDTH + text_w + 2
    img = Image.new("RGB", (width, height), (255, 255, 255))
    ramp = np.linspace(1.0, 0.0, max(height - 12, 2))[:, None]
    rgb = colormaps[HEATMAP_COLORMAP](0.85 * ramp)[..., :3]
    bar = Image.fromarray((np.repeat(rgb, _BAR_WIDTH, axis=1) * 255 + 0.5).astype(np.uint8), "RGB")
    img.paste(bar, (0, 6))
    draw = ImageDraw.Draw(img)
    dark = (30, 30, 30)
    draw.text((_BAR_WIDTH + 4, 6), labels[1], fill=dark, font=font, anchor="lm")
    draw.text((_BAR_WIDTH + 4, height - 6), "0", fill=dark, font=font, anchor="lm")
    if pixel_threshold is not None and vmax:
        frac = min(max(pixel_threshold / vmax, 0.0), 1.0)
        y = round(6 + (1 - frac) * (bar.height - 1))
        draw.line([(0, y), (_BAR_WIDTH - 1, y)], fill=_CONTOUR_COLOR, width=2)
        draw.text((_BAR_WIDTH + 4, y), labels[2], fill=dark, font=font, anchor="lm")
    return img


def heatmap_panel(
    image: Any,
    error_map: Any,
    *,
    vmax: float | None = None,
    pixel_threshold: float | None = None,
    mask: Any | None = None,
    min_size: int = PANEL_MIN_SIZE,
    max_size: int = PANEL_MAX_SIZE,
) -> Image.Image:
    """An anomalib-style panel: image | ground truth | error map | overlay, and a colour bar.

    The ground-truth cell appears only when ``mask`` is given. Map and overlay
    share one colour scale (0 to ``vmax``, see :func:`heatmap_overlay`) shown
    by the colour bar on the right; with ``pixel_threshold`` a white contour
    outlines the pixels at or above it, on the map and on the overlay. Cells
    are enlarged (nearest neighbour, integer factor) so their longer side is
    at least ``min_size``, and shrunk to ``max_size`` at most.

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` floats in ``[0, 1]``.
        error_map: ``(H, W)`` errors for the same pixels.
        vmax: error drawn full red; default the map's own maximum.
        pixel_threshold: error level outlined by the contour.
        mask: ``(H, W)`` ground truth (non-zero = anomalous), or None.
        min_size, max_size: bounds of a cell's longer side, in pixels.

    Returns:
        An RGB image: a title row, the cells side by side and the colour bar.

    Raises:
        ValueError: the error map or the mask does not match the image.
    """
    img = _as_array(image)
    img = img[None] if img.ndim == 2 else img
    err = np.nan_to_num(_as_array(error_map), nan=0.0)
    err = err[0] if err.ndim == 3 and err.shape[0] == 1 else err
    if err.shape != img.shape[1:]:
        raise ValueError(f"error map shape {err.shape} does not match image shape {img.shape}")
    hw = _cell_size(int(err.shape[0]), int(err.shape[1]), min_size, max_size)
    cells: list[tuple[str, Image.Image]] = [("image", _resize_to(to_image(img), hw))]
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != err.shape:
            raise ValueError(f"mask shape {m.shape} does not match image shape {img.shape}")
        cells.append(("ground truth", _resize_to(to_image((m > 0).astype(np.float32)), hw)))
    colored = (_colored_map(err, vmax) * 255 + 0.5).astype(np.uint8)
    heat = _resize_to(Image.fromarray(colored, "RGB"), hw)
    over = _resize_to(heatmap_overlay(img, err, vmax), hw)
    if pixel_threshold is not None:
        heat = _draw_contour(heat, err, pixel_threshold)
        over = _draw_contour(over, err, pixel_threshold)
    cells += [("error map", heat), ("overlay", over)]
    return _lay_out_panel(cells, colorbar(hw[0], vmax, pixel_threshold))


def _lay_out_panel(cells: list[tuple[str, Image.Image]], bar: Image.Image) -> Image.Image:
    font = _font(13)
    title_h = 20
    h, w = cells[0][1].height, cells[0][1].width
    width = GRID_PAD + len(cells) * (w + GRID_PAD) + bar.width + GRID_PAD
    out = Image.new("RGB", (width, title_h + h + 2 * GRID_PAD), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for i, (title, cell) in enumerate(cells):
        x0 = GRID_PAD + i * (w + GRID_PAD)
        draw.text((x0 + w / 2, GRID_PAD + title_h / 2), title, fill=(30, 30, 30), font=font,
                  anchor="mm")  # fmt: skip
        out.paste(cell, (x0, GRID_PAD + title_h))
    out.paste(bar, (GRID_PAD + len(cells) * (w + GRID_PAD), GRID_PAD + title_h))
    return out
