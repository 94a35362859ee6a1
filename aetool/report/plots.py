"""Pictures and charts under one name: :mod:`aetool.report.pictures` (Pillow) and
:mod:`aetool.report.charts` (matplotlib), re-exported for existing imports."""

from __future__ import annotations

from aetool.report.charts import (
    ANOMALY_COLOR,
    NORMAL_COLOR,
    OTHER_COLOR,
    latent_map_png,
    loss_curve_png,
    roc_pr_png,
    score_histogram_png,
)
from aetool.report.pictures import (
    GRID_BACKGROUND,
    GRID_PAD,
    HEATMAP_COLORMAP,
    heatmap_overlay,
    image_grid,
    png_bytes,
    reconstruction_grid,
    save_png,
    to_image,
    upscale,
)

__all__ = [
    "ANOMALY_COLOR",
    "GRID_BACKGROUND",
    "GRID_PAD",
    "HEATMAP_COLORMAP",
    "NORMAL_COLOR",
    "OTHER_COLOR",
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
