"""Pictures: image grids, error heatmaps and matplotlib plots as PNG bytes.

Everything here takes plain numpy arrays and returns either a ``PIL.Image`` or
PNG bytes, so the same pictures serve ``aetool report`` (embedded in HTML),
``--png-dir``, ``aetool score --heatmaps``, ``aetool latent-map`` and the
per-epoch sample grids of ``aetool train --samples``.

matplotlib is used only through ``matplotlib.figure.Figure`` with the Agg
canvas: no pyplot, so no global figure state leaks between calls or threads.
Image arrays are ``(C, H, W)`` floats in ``[0, 1]`` with ``C`` 1 or 3, the
layout the models consume.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from aetool.files import atomic_write_bytes

__all__ = [
    "heatmap_overlay",
    "image_grid",
    "latent_map_png",
    "loss_curve_png",
    "png_bytes",
    "reconstruction_grid",
    "roc_pr_png",
    "save_png",
    "score_histogram_png",
    "to_image",
    "upscale",
]

#: Gap between grid cells and around the grid, in pixels.
GRID_PAD = 4
#: Colour of the gaps: light grey, so both black and white images show their edges.
GRID_BACKGROUND = (225, 225, 225)
HEATMAP_COLORMAP = "turbo"
_DPI = 100
_LABEL_FONT_SIZE = 14
_NORMAL_COLOR = "#2b7bba"
_ANOMALY_COLOR = "#d7301f"
_OTHER_COLOR = "#7f7f7f"


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


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    return buf.getvalue()


def _finite(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def loss_curve_png(
    train_loss: Sequence[float],
    val_loss: Sequence[float] | None = None,
    best_epoch: int | None = None,
    loss_name: str = "loss",
) -> bytes:
    """Training and validation loss per epoch as a PNG line plot.

    The y axis turns logarithmic when the loss falls by more than 20x, so the
    late epochs are not a flat line.

    Args:
        train_loss: Mean training loss for epochs 1, 2, ...
        val_loss: Validation loss per epoch (may be empty or None).
        best_epoch: 1-based epoch whose weights were kept; marked with a line.
        loss_name: Name of the loss for the y axis (``mse``, ``ssim``, ...).

    Returns:
        PNG bytes (640x360 pixels).
    """
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    series = [("train", train_loss, _NORMAL_COLOR), ("validation", val_loss or [], "#e6550d")]
    plotted: list[float] = []
    for name, values, color in series:
        y = np.asarray(values, dtype=np.float64)
        if y.size:
            x = np.arange(1, y.size + 1)
            ax.plot(
                x, y, marker="o" if y.size <= 40 else None, ms=3, lw=1.6, color=color, label=name
            )
            plotted.extend(_finite(y).tolist())
    if best_epoch is not None and plotted:
        ax.axvline(best_epoch, color="#555555", ls="--", lw=1, label=f"best epoch ({best_epoch})")
    if not plotted:
        ax.text(
            0.5,
            0.5,
            "no training history recorded",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="#666666",
        )
    else:
        pos = [v for v in plotted if v > 0]
        if len(pos) == len(plotted) and max(pos) / min(pos) > 20:
            ax.set_yscale("log")
        ax.legend(frameon=False)
        locator = ax.xaxis.get_major_locator()
        if isinstance(locator, MaxNLocator):  # the default AutoLocator is one
            locator.set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel(loss_name)
    ax.set_title("Loss per epoch")
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def _has_labels(labels: Sequence[Any] | None) -> bool:
    return labels is not None and any(v is not None for v in labels)


def score_histogram_png(
    scores: Any,
    labels: Sequence[int | None] | None = None,
    threshold: float | None = None,
    val_scores: Any | None = None,
    score_kind: str = "mse",
) -> bytes:
    """Histogram of anomaly scores with the threshold marked.

    With labels, normal (0) and anomalous (1) images get their own histograms
    (plus ``unlabeled`` for ``None``); without, the scored images are shown
    against the validation scores the threshold was fitted on. Histograms are
    normalised to density so groups of very different size stay comparable.

    Args:
        scores: One score per image (higher = more anomalous).
        labels: Optional 0/1/None per score.
        threshold: Decision threshold, drawn as a vertical line.
        val_scores: Validation scores (normal images) for the unlabeled view.
        score_kind: Name of the score for the x axis.

    Returns:
        PNG bytes (680x380 pixels).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    groups: list[tuple[str, np.ndarray, str]] = []
    if _has_labels(labels):
        assert labels is not None
        if len(labels) != s.size:
            raise ValueError(f"got {len(labels)} labels for {s.size} scores")
        lab = np.array([-1 if v is None else int(v) for v in labels])
        groups = [
            ("normal", s[lab == 0], _NORMAL_COLOR),
            ("anomalous", s[lab == 1], _ANOMALY_COLOR),
            ("unlabeled", s[lab == -1], _OTHER_COLOR),
        ]
    else:
        groups = [("scored images", s, _ANOMALY_COLOR)]
        if val_scores is not None:
            groups.insert(
                0, ("validation (normal)", np.asarray(val_scores, float).ravel(), _NORMAL_COLOR)
            )
    groups = [(n, _finite(v), c) for n, v, c in groups]
    groups = [(n, v, c) for n, v, c in groups if v.size]

    fig = _figure(6.8, 3.8)
    ax = fig.add_subplot()
    everything = np.concatenate([v for _, v, _ in groups]) if groups else np.array([])
    if everything.size:
        lo, hi = float(everything.min()), float(everything.max())
        if threshold is not None and np.isfinite(threshold):
            lo, hi = min(lo, threshold), max(hi, threshold)
        if hi <= lo:
            hi = lo + 1e-6 if lo == 0 else lo + abs(lo) * 1e-3
        bins = np.linspace(lo, hi, 41)
        for name, v, color in groups:
            ax.hist(
                v,
                bins=bins.tolist(),
                density=True,
                alpha=0.55,
                color=color,
                edgecolor=color,
                label=f"{name} (n={v.size})",
            )
    else:
        ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", ls="--", lw=1.5, label=f"threshold {threshold:.4g}")
    if everything.size or threshold is not None:
        ax.legend(frameon=False)
    ax.set_xlabel(f"anomaly score ({score_kind})")
    ax.set_ylabel("density")
    ax.set_title("Score distribution")
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def roc_pr_png(scores: Any, labels: Sequence[int | None]) -> bytes:
    """ROC and precision-recall curves side by side, AUC and AP in the legends.

    Images whose label is ``None`` are left out.

    Args:
        scores: One score per image (higher = more anomalous).
        labels: 0 (normal), 1 (anomalous) or None per score.

    Returns:
        PNG bytes (1100x440 pixels).

    Raises:
        ValueError: Fewer than one normal and one anomalous labelled image.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(labels) != s.size:
        raise ValueError(f"got {len(labels)} labels for {s.size} scores")
    keep = np.array([v is not None for v in labels], dtype=bool)
    y = np.array([0 if v is None else int(v) for v in labels])[keep]
    s = s[keep]
    if not (np.any(y == 0) and np.any(y == 1)):
        raise ValueError("ROC and precision-recall curves need both normal and anomalous labels")
    fpr, tpr, _ = roc_curve(y, s)
    precision, recall, _ = precision_recall_curve(y, s)
    roc_auc = auc(fpr, tpr)
    ap = average_precision_score(y, s)

    fig = _figure(11.0, 4.4)
    ax_roc, ax_pr = fig.subplots(1, 2)
    ax_roc.plot(fpr, tpr, color=_ANOMALY_COLOR, lw=2, label=f"ROC AUC = {roc_auc:.3f}")
    ax_roc.plot([0, 1], [0, 1], color="#999999", ls=":", lw=1, label="chance")
    ax_roc.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC curve",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    prevalence = float(y.mean())
    ax_pr.step(recall, precision, where="post", color=_NORMAL_COLOR, lw=2, label=f"AP = {ap:.3f}")
    ax_pr.axhline(prevalence, color="#999999", ls=":", lw=1, label=f"chance ({prevalence:.2f})")
    ax_pr.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall curve",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", frameon=False)
        ax.grid(alpha=0.3)
        ax.set_aspect("equal")
    return _figure_png(fig)


def latent_map_png(
    codes: Any,
    labels: Sequence[Any] | None = None,
    title: str = "Latent space",
) -> bytes:
    """Scatter plot of latent codes in 2-D, coloured by label.

    Two-dimensional codes are plotted as they are; wider ones are projected
    onto their first two principal components (explained variance in the axis
    labels); one-dimensional codes are plotted against their index.

    Args:
        codes: ``(N, k)`` latent codes.
        labels: Optional label per code (class name, 0/1, or None for unlabeled);
            up to 20 distinct labels get a legend.
        title: Plot title.

    Returns:
        PNG bytes (740x560 pixels).

    Raises:
        ValueError: Codes that are not 2-D, or a label count that does not match.
    """
    z = np.asarray(codes, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"latent codes must be (N, k), got shape {z.shape}")
    if labels is not None and len(labels) != z.shape[0]:
        raise ValueError(f"got {len(labels)} labels for {z.shape[0]} codes")
    z = np.nan_to_num(z)
    xlabel, ylabel = "z[0]", "z[1]"
    if z.shape[1] == 1:
        xy = np.column_stack([np.arange(z.shape[0]), z[:, 0]])
        xlabel, ylabel = "image index", "z[0]"
    elif z.shape[1] == 2:
        xy = z
    elif z.shape[0] >= 2 and float(np.ptp(z, axis=0).max()) > 0:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, svd_solver="full").fit(z)
        xy = pca.transform(z)
        v1, v2 = pca.explained_variance_ratio_ * 100
        xlabel, ylabel = f"PC1 ({v1:.0f}% variance)", f"PC2 ({v2:.0f}% variance)"
    else:
        xy = np.zeros((z.shape[0], 2))
        xlabel, ylabel = "PC1", "PC2"

    fig = _figure(7.4, 5.6)
    ax = fig.add_subplot()
    if labels is None or all(v is None for v in labels):
        ax.scatter(xy[:, 0], xy[:, 1], s=10, alpha=0.7, color=_NORMAL_COLOR, linewidths=0)
    else:
        names = ["unlabeled" if v is None else str(v) for v in labels]
        order = sorted(set(names), key=_natural_key)
        cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
        arr = np.array(names)
        for i, name in enumerate(order):
            m = arr == name
            color = _OTHER_COLOR if name == "unlabeled" else cmap(i % cmap.N)
            ax.scatter(
                xy[m, 0],
                xy[m, 1],
                s=10,
                alpha=0.75,
                color=color,
                linewidths=0,
                label=f"{name} ({int(m.sum())})",
            )
        if len(order) <= 20:
            ax.legend(
                frameon=False,
                markerscale=2,
                fontsize="small",
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                title="label",
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def _natural_key(name: str) -> tuple[int, float | str]:
    """Sort numeric labels numerically, then text labels, ``unlabeled`` last."""
    if name == "unlabeled":
        return (2, "")
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)


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
