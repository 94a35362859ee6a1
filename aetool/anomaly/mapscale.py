"""One colour scale and one pixel threshold per model and score kind, for every error-map picture.

Training records, for each score kind, statistics of the per-pixel error maps
of the held-out normal images (``meta["validation"]["maps"][kind]``: ``p99``,
``p999`` and ``max``; :func:`map_statistics`). Every heatmap drawn for that
model (``aetool score --heatmaps``, the HTML report) then uses the same scale:

* full red (``vmax``) at the largest error seen on any normal validation
  pixel, so a normal image never saturates and colours compare across
  images, runs and commands;
* the pixel threshold (the contour drawn on maps and overlays) at the 99.9th
  percentile of normal validation pixels: about 1 normal pixel in 1000 lies
  inside it.

Models with their own anomaly map (``model`` score kind: a defect probability per
pixel) draw it on the fixed scale [0, 1], and their pixel threshold is at least 0.5,
the segmentation network's own decision boundary.

Model files written before these statistics existed fall back to the rule
heatmaps used before: full red at the largest ``max-local`` validation score
(the largest smoothed local error of any normal image), 1.0 for ``ssim``; they
get no contour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MAP_SAMPLE", "MapScale", "map_scale", "map_statistics"]

#: Pixels per score kind that :func:`map_statistics` keeps from each batch for its quantiles.
MAP_SAMPLE = 65536


@dataclass(frozen=True)
class MapScale:
    """How error maps are coloured: ``vmax`` full red (None: each map's own maximum),
    ``pixel_threshold`` the contour level (None: no contour), ``source`` where they came from."""

    vmax: float | None
    pixel_threshold: float | None
    source: str


def map_statistics(samples: list[np.ndarray], maxima: list[float]) -> dict[str, float]:
    """``p99``, ``p999`` and ``max`` of validation error-map pixels.

    Args:
        samples: pixel values (a sample of each batch's maps).
        maxima: each batch's exact maximum.
    """
    values = np.concatenate([s.ravel() for s in samples]).astype(np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return {}
    return {
        "p99": float(np.quantile(values, 0.99)),
        "p999": float(np.quantile(values, 0.999)),
        "max": float(max(maxima)),
    }


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def map_scale(metadata: Mapping[str, Any], score_kind: str) -> MapScale:
    """The colour scale and pixel threshold for ``score_kind`` maps of this model."""
    validation = metadata.get("validation") or {}
    stats = (validation.get("maps") or {}).get(score_kind) or {}
    if score_kind == "model":
        p999 = _positive(stats.get("p999"))
        return MapScale(1.0, max(p999 or 0.0, 0.5), "defect probability")
    vmax = _positive(stats.get("max"))
    if vmax is not None:
        thr = _positive(stats.get("p999"))
        return MapScale(vmax, thr, "validation error maps")
    if score_kind == "ssim":
        return MapScale(1.0, None, "1 - SSIM range")
    local = [v for v in (validation.get("scores") or {}).get("max-local", []) if _positive(v)]
    if local:
        return MapScale(max(local), None, "validation max-local scores")
    return MapScale(None, None, "each map's maximum")
