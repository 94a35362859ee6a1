"""Evaluation against known labels: image-level metrics, pixel-level ROC AUC and AUPRO.

Labels are ``0`` (normal), ``1`` (anomaly) or ``None`` (unknown); images
with an unknown label or a non-finite score are left out of the metrics.
Undefined metrics are ``None`` rather than a warning, so reports stay plain
JSON. :func:`best_f1_threshold` is reported beside the real threshold as an
upper bound only: it is fitted on the very labels it is scored against.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aetool.anomaly.heatmaps import crop_box
from aetool.anomaly.thresholds import Threshold
from aetool.errors import ConfigError

__all__ = [
    "AUPRO_MAX_FPR",
    "aupro",
    "PIXEL_AUC_MAX_PIXELS",
    "best_f1_threshold",
    "compute_metrics",
    "load_mask",
    "pixel_roc_auc",
]

#: :func:`pixel_roc_auc` subsamples (deterministically) above this many pixels.
PIXEL_AUC_MAX_PIXELS = 5_000_000
#: AUPRO integrates the per-region overlap up to this false-positive rate (MVTec AD).
AUPRO_MAX_FPR = 0.3


def _labelled(
    scores: np.ndarray | Sequence[float], labels: Sequence[int | None] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    lab = np.array([-1 if v is None else int(v) for v in labels], dtype=np.int64)
    if s.shape != lab.shape:
        raise ValueError(f"{s.size} scores but {lab.size} labels")
    if np.any((lab != -1) & (lab != 0) & (lab != 1)):
        raise ConfigError("labels must be 0 (normal), 1 (anomaly) or unknown")
    keep = (lab >= 0) & np.isfinite(s)
    return s[keep], lab[keep], int(s.size - keep.sum())


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def compute_metrics(
    scores: np.ndarray | Sequence[float],
    labels: Sequence[int | None] | np.ndarray,
    threshold: float | Threshold,
) -> dict[str, Any]:
    """Image-level detection metrics for scores with known labels.

    Images whose label is ``None`` or whose score is not finite are left out
    (counted in ``n_skipped``). A prediction is ``score > threshold``.
    Undefined values are ``None`` instead of a warning: ROC AUC and average
    precision when only one class is present, precision with no predicted
    anomaly, recall with no true anomaly, and F1 when either of those is
    undefined (F1 is 0 when both are 0).

    Returns:
        ``{"n", "n_normal", "n_anomalous", "n_skipped", "threshold",
        "roc_auc", "average_precision", "f1", "precision", "recall",
        "accuracy", "confusion": {"tn", "fp", "fn", "tp"}}``, plain Python
        numbers (JSON-serialisable).
    """
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    s, y, skipped = _labelled(scores, labels)
    t = threshold.value if isinstance(threshold, Threshold) else float(threshold)
    pred = (s > t).astype(np.int64)
    tn, fp, fn, tp = (int(c) for c in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    both = n_pos > 0 and n_neg > 0
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": int(y.size),
        "n_normal": n_neg,
        "n_anomalous": n_pos,
        "n_skipped": skipped,
        "threshold": t,
        "roc_auc": float(roc_auc_score(y, s)) if both else None,
        "average_precision": float(average_precision_score(y, s)) if both else None,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "accuracy": _ratio(tp + tn, int(y.size)),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def best_f1_threshold(
    scores: np.ndarray | Sequence[float], labels: Sequence[int | None] | np.ndarray
) -> Threshold:
    """The threshold that maximises F1 on labelled scores (an upper bound, not a rule).

    Candidates cut between consecutive distinct scores; the value returned is
    the midpoint of the cut (just below the lowest score when every image is
    flagged), so ``score > value`` reproduces the optimum. Ties go to the
    highest threshold (fewest alarms). Unlabelled or non-finite entries are
    ignored.

    Raises:
        ConfigError: the labels do not contain both normal and anomalous images.
    """
    s, y, _ = _labelled(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ConfigError("an F1-optimal threshold needs both normal and anomalous labelled images")
    order = np.argsort(-s, kind="stable")
    s_desc, y_desc = s[order], y[order]
    tp = np.cumsum(y_desc)
    fp = np.cumsum(1 - y_desc)
    # Only the last position of each run of equal scores is a valid cut.
    last = np.r_[s_desc[1:] != s_desc[:-1], True]
    tp, fp, cut = tp[last], fp[last], np.flatnonzero(last)
    f1 = 2 * tp / (tp + fp + n_pos)
    best = f1.max()
    i = int(np.flatnonzero(f1 >= best - 1e-12)[0])  # first = highest threshold
    lowest_flagged = s_desc[cut[i]]
    j = cut[i] + 1
    if j < s_desc.size:
        value = (lowest_flagged + s_desc[j]) / 2
    else:
        value = float(np.nextafter(lowest_flagged, -np.inf))
    return Threshold(float(value), "F1-optimal on labelled scores")


def _resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    mh, mw = mask.shape
    rows = np.minimum(((np.arange(h) + 0.5) * mh / h).astype(np.int64), mh - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mw / w).astype(np.int64), mw - 1)
    return mask[rows[:, None], cols[None, :]]


def _as_2d(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    elif a.ndim == 3 and what == "mask":
        a = a.max(axis=-1) if a.shape[-1] <= 4 else a.max(axis=0)
    if a.ndim != 2:
        raise ValueError(f"a {what} must be 2-D (H, W), got shape {a.shape}")
    return a


def pixel_roc_auc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> float | None:
    """Pixel-level ROC AUC of error maps against ground-truth masks.

    A mask pixel is anomalous when it is > 0 (masks of any dtype, 0/255 or
    0/1, single- or multi-channel); ``None`` stands for an all-normal mask.
    Masks are resized to their map's size by nearest neighbour. Above
    :data:`PIXEL_AUC_MAX_PIXELS` pixels in total, every image keeps the same
    random fraction of its pixels (fixed seed, so results repeat).
    Non-finite map values are dropped.

    Returns:
        The AUC, or ``None`` when the pixels are all normal or all anomalous.
    """
    if len(maps) != len(masks):
        raise ValueError(f"{len(maps)} maps but {len(masks)} masks")
    total = sum(int(np.asarray(m).size) for m in maps)
    frac = min(1.0, PIXEL_AUC_MAX_PIXELS / total) if total else 1.0
    rng = np.random.default_rng(0)
    values: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    for m, k in zip(maps, masks, strict=True):
        emap = _as_2d(m, "map").astype(np.float32, copy=False)
        if k is None:
            truth = np.zeros(emap.shape, dtype=bool)
        else:
            truth = _as_2d(k, "mask") > 0
            if truth.shape != emap.shape:
                truth = _resize_nearest(truth, emap.shape)
        v, t = emap.ravel(), truth.ravel()
        keep = np.isfinite(v)
        if frac < 1.0:
            keep &= rng.random(v.size) < frac
        values.append(v[keep])
        truths.append(t[keep])
    if not values:
        return None
    y = np.concatenate(truths)
    if y.all() or not y.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.concatenate(values)))


def load_mask(path: Path, map_hw: tuple[int, int], resize: str, fixed: bool) -> np.ndarray:
    """A mask as bool (H, W) on the error map's grid, transformed like its image.

    Raises:
        OSError: the mask is not a regular file (a FIFO is never opened).
        Exception: whatever Pillow raises for a malformed file.
    """
    if not Path(path).is_file():
        raise OSError(f"{path} is not a regular file")
    with Image.open(path) as img:
        m = img.convert("L")
    h, w = map_hw
    if m.size != (w, h):
        if resize == "crop" and fixed:
            x0, y0, x1, y1 = crop_box((m.height, m.width), (h, w))
            m = m.resize((w, h), Image.Resampling.NEAREST, box=(x0, y0, x1, y1))
        else:
            m = m.resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(m) > 0


def aupro(
    maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_fpr: float = AUPRO_MAX_FPR
) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr``, normalised to [0, 1].

    The MVTec AD standard for anomaly maps (Bergmann et al., 2021): for every
    threshold, the per-region overlap (PRO) is the mean, over all connected
    defect regions of all ground-truth masks, of the fraction of the region's
    pixels above the threshold; the false-positive rate is the fraction of
    normal pixels above it. The curve PRO(FPR) is integrated exactly (every
    distinct score is a threshold; the last segment is interpolated at
    ``max_fpr``) and divided by ``max_fpr``, so a perfect map scores 1.0 and a
    random one about ``max_fpr / 2``.

    Args:
        maps: anomaly maps, one ``(H, W)`` array per image (higher = more anomalous).
        masks: ground-truth masks of the same shapes (non-zero = defect); images
            without defects have all-zero masks. Regions are 8-connected.
        max_fpr: integration limit on the false-positive rate, in (0, 1].

    Returns:
        The normalised area, or NaN when there is no defect region or no normal pixel.

    Example:
        >>> import numpy as np
        >>> round(aupro([np.array([[0.9, 0.1, 0.5, 0.2]])], [np.array([[1, 1, 0, 0]])]), 6)
        0.5
    """
    from scipy import ndimage

    if not 0 < max_fpr <= 1:
        raise ValueError("max_fpr must be in (0, 1]")
    scores_all: list[np.ndarray] = []
    weights_all: list[np.ndarray] = []
    normal_all: list[np.ndarray] = []
    n_regions = 0
    structure = np.ones((3, 3), dtype=bool)
    for amap, mask in zip(maps, masks, strict=True):
        amap = np.asarray(amap, dtype=np.float64)
        truth = np.asarray(mask) != 0
        if amap.shape != truth.shape:
            raise ValueError(f"map shape {amap.shape} differs from mask shape {truth.shape}")
        labels, n = ndimage.label(truth, structure=structure)
        flat = labels.ravel()
        sizes = np.bincount(flat, minlength=n + 1).astype(np.float64)
        # weight of each defect pixel: 1 / size of its region (summed over regions -> count)
        w = np.where(flat > 0, 1.0 / np.maximum(sizes[flat], 1.0), 0.0)
        scores_all.append(amap.ravel())
        weights_all.append(w)
        normal_all.append(flat == 0)
        n_regions += n
    if n_regions == 0:
        return float("nan")
    scores = np.concatenate(scores_all)
    weights = np.concatenate(weights_all) / n_regions
    normal = np.concatenate(normal_all)
    n_normal = int(normal.sum())
    if n_normal == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    pro = np.cumsum(weights[order])
    fpr = np.cumsum(normal[order]) / n_normal
    # one point per distinct score: the last index of each tie group
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    fpr = np.r_[0.0, fpr[last]]
    pro = np.r_[0.0, pro[last]]
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr:  # interpolate the segment that crosses max_fpr
        i = int(np.searchsorted(fpr, max_fpr, side="right"))
        if i < fpr.size:
            x0, x1, y0, y1 = fpr[i - 1], fpr[i], pro[i - 1], pro[i]
            y_at = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0) if x1 > x0 else y1
            x, y = np.r_[x, max_fpr], np.r_[y, y_at]
    return float(np.trapezoid(y, x) / max_fpr)
