"""Reconstruction errors, anomaly scores, thresholds and metrics.

Conventions used throughout:

* A score is higher for more anomalous images; an image is flagged as an
  anomaly when ``score > threshold`` (strictly), see :func:`flag_anomalies`.
* Validation scores are the per-image scores of the held-out normal images
  recorded in the model file (``meta["validation"]["scores"][kind]``); the
  functions here take them as numpy arrays. Non-finite values are ignored.
* Labels are ``0`` (normal), ``1`` (anomaly) or ``None`` (unknown).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from torch import Tensor

from aetool.data.shards import path_key
from aetool.errors import ConfigError
from aetool.metrics import _blur, ssim_map

__all__ = [
    "ANOMALY_DIR_NAMES",
    "AUTO_MAD_K",
    "GOOD_DIR_NAMES",
    "MAD_TO_SIGMA",
    "PIXEL_AUC_MAX_PIXELS",
    "SCORE_KINDS",
    "ScoreRow",
    "Threshold",
    "ThresholdSpec",
    "best_f1_threshold",
    "build_score_row",
    "compute_metrics",
    "error_maps",
    "find_mask",
    "fit_threshold",
    "flag_anomalies",
    "image_scores",
    "infer_label",
    "infer_labels",
    "parse_threshold",
    "percentile_rank",
    "pixel_roc_auc",
    "read_labels_csv",
    "ssim_map",
]

#: Score kinds: per-image mean squared error, 1 - mean SSIM, and the maximum
#: of the smoothed squared-error map (small defects a mean washes out).
SCORE_KINDS = ("mse", "ssim", "max-local")

#: Scale factor turning a median absolute deviation into a standard deviation
#: (exact for normally distributed data).
MAD_TO_SIGMA = 1.4826
#: ``auto`` threshold = median + AUTO_MAD_K * MAD_TO_SIGMA * MAD of the
#: validation scores. 4 rather than the textbook 3 because reconstruction
#: errors are right-skewed; see benchmarks/threshold_rule.py for the measured
#: false-positive rates of the candidates.
AUTO_MAD_K = 4.0

#: Directory names (case-insensitive) that hold normal images.
GOOD_DIR_NAMES = frozenset({"good", "normal", "ok"})
#: Directory names (case-insensitive) that hold anomalous images on their own,
#: used by :func:`infer_label` when no sibling ``good`` folder is known.
ANOMALY_DIR_NAMES = frozenset({"abnormal", "anomaly", "anomalous", "bad", "defect", "defective"})

#: :func:`pixel_roc_auc` subsamples (deterministically) above this many pixels.
PIXEL_AUC_MAX_PIXELS = 5_000_000

_THRESHOLD_HELP = (
    "use 'auto', a number such as 0.012, a validation percentile such as p99 or p99.5, "
    "or mean + k standard deviations such as 3sigma"
)
_LABEL_WORDS = {
    "0": 0,
    "normal": 0,
    "good": 0,
    "ok": 0,
    "1": 1,
    "anomaly": 1,
    "anomalous": 1,
    "abnormal": 1,
    "bad": 1,
    "defect": 1,
    "defective": 1,
}


# ---------------------------------------------------------------------------
# Error maps and per-image scores


def error_maps(x: Tensor, recon: Tensor, kind: str = "mse") -> Tensor:
    """Per-pixel error maps ``(N, H, W)`` for a score kind (higher = more anomalous).

    Inputs are ``(N, C, H, W)`` in [0, 1]; they are compared in float32 so
    half-precision reconstructions do not lose the small SSIM constants.
    """
    if x.shape != recon.shape:
        raise ValueError(f"inputs {tuple(x.shape)} and reconstructions {tuple(recon.shape)} differ")
    x, recon = x.float(), recon.float()
    if kind == "mse":
        return ((x - recon) ** 2).mean(dim=1)
    if kind == "ssim":
        return 1 - ssim_map(x, recon)
    if kind == "max-local":
        sq = ((x - recon) ** 2).mean(dim=1, keepdim=True)
        return _blur(sq, 5, 1.0)[:, 0]
    raise ConfigError(f"unknown score {kind!r}; choose one of: {', '.join(SCORE_KINDS)}")


def image_scores(x: Tensor, recon: Tensor, kind: str = "mse") -> Tensor:
    """One anomaly score per image ``(N,)`` from inputs and reconstructions.

    ``mse`` and ``ssim`` average their error map; ``max-local`` takes the
    maximum of the 5x5-smoothed squared-error map.
    """
    maps = error_maps(x, recon, kind)
    if kind == "max-local":
        return maps.flatten(1).amax(dim=1)
    return maps.flatten(1).mean(dim=1)


# ---------------------------------------------------------------------------
# Thresholds


@dataclass(frozen=True)
class ThresholdSpec:
    """A parsed threshold rule, before it meets any validation scores.

    Attributes:
        kind: ``"auto"``, ``"value"``, ``"percentile"`` or ``"sigma"``.
        param: the number (threshold value, percentile or k); ``None`` for auto.
        text: the spec as the user wrote it (stripped).
    """

    kind: str
    param: float | None
    text: str


@dataclass(frozen=True)
class Threshold:
    """A threshold value and the human-readable rule that produced it."""

    value: float
    rule: str


_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?"
_PERCENTILE_RE = re.compile(rf"p\s*({_NUMBER})")
_SIGMA_RE = re.compile(rf"({_NUMBER})\s*(?:sigma|σ)")
_VALUE_RE = re.compile(_NUMBER)


def parse_threshold(spec: str) -> ThresholdSpec:
    """Parse a threshold rule.

    Accepted forms (case-insensitive, surrounding spaces ignored):

    * ``auto``: a robust rule on the validation scores, see :func:`fit_threshold`;
    * a number such as ``0.0123`` or ``1e-3`` (>= 0): that exact value;
    * ``pQ`` such as ``p99`` or ``p99.5`` (0 <= Q <= 100): the Q-th percentile
      of the validation scores;
    * ``Ksigma`` such as ``3sigma`` or ``2.5sigma`` (K >= 0): mean + K * std of
      the validation scores.

    Raises:
        ConfigError: the spec matches none of these forms.
    """
    text = str(spec).strip()
    low = text.lower()
    if low == "auto":
        return ThresholdSpec("auto", None, text)
    if m := _PERCENTILE_RE.fullmatch(low):
        q = float(m.group(1))
        if not 0 <= q <= 100:
            raise ConfigError(
                f"threshold percentile {text!r} is outside p0..p100; {_THRESHOLD_HELP}"
            )
        return ThresholdSpec("percentile", q, text)
    if m := _SIGMA_RE.fullmatch(low):
        k = float(m.group(1))
        if k < 0:
            raise ConfigError(f"threshold {text!r} needs a non-negative k; {_THRESHOLD_HELP}")
        return ThresholdSpec("sigma", k, text)
    if _VALUE_RE.fullmatch(low):
        value = float(low)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"threshold {text!r} must be a finite number >= 0; {_THRESHOLD_HELP}")
        return ThresholdSpec("value", value, text)
    raise ConfigError(f"invalid threshold {text!r}; {_THRESHOLD_HELP}")


def _finite(values: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def _fmt(x: float) -> str:
    return f"{x:g}"


def fit_threshold(spec: ThresholdSpec | str, val_scores: np.ndarray | Sequence[float]) -> Threshold:
    """Turn a threshold rule into a value using the stored validation scores.

    Rules (``n`` finite validation scores ``v``):

    * ``auto``: ``median(v) + AUTO_MAD_K * MAD_TO_SIGMA * MAD(v)`` with
      ``MAD(v) = median(|v - median(v)|)``, i.e. median + 4 * 1.4826 * MAD, a
      "4 robust sigma" bound. The median and MAD ignore a few anomalous or
      mislabelled images in the validation split (unlike mean + k*std or a
      high percentile of a small split), and k = 4 compensates for the right
      skew of reconstruction errors. When MAD is 0 (over half the scores are
      identical) the sample standard deviation replaces
      ``MAD_TO_SIGMA * MAD``.
    * value: the number itself (``rule == "explicit"``); needs no validation
      scores.
    * ``pQ``: ``numpy.percentile(v, Q)`` with linear interpolation.
    * ``Ksigma``: ``mean(v) + K * std(v)`` with the sample standard deviation
      (``ddof=1``; 0 when n == 1).

    Args:
        spec: a :class:`ThresholdSpec` or a string for :func:`parse_threshold`.
        val_scores: validation scores of one score kind.

    Raises:
        ConfigError: the spec is invalid, or a data-driven rule has no finite
            validation scores to work on.
    """
    if not isinstance(spec, ThresholdSpec):
        spec = parse_threshold(spec)
    if spec.kind == "value":
        assert spec.param is not None
        return Threshold(float(spec.param), "explicit")
    v = _finite(val_scores)
    n = v.size
    if n == 0:
        raise ConfigError(
            f"threshold {spec.text!r} needs validation scores, but the model file has none "
            "for this score kind; pass a numeric threshold such as 0.01 instead"
        )
    of = f"of {n} validation score{'s' if n != 1 else ''}"
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    if spec.kind == "percentile":
        assert spec.param is not None
        value = float(np.percentile(v, spec.param))
        return Threshold(value, f"p{_fmt(spec.param)} {of}")
    if spec.kind == "sigma":
        assert spec.param is not None
        value = float(v.mean()) + spec.param * std
        return Threshold(value, f"mean + {_fmt(spec.param)}*std {of}")
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med)))
    k = _fmt(AUTO_MAD_K)
    if mad > 0:
        value = med + AUTO_MAD_K * MAD_TO_SIGMA * mad
        return Threshold(value, f"auto: median + {k}*{MAD_TO_SIGMA}*MAD {of}")
    return Threshold(med + AUTO_MAD_K * std, f"auto: median + {k}*std {of} (MAD is 0)")


def flag_anomalies(
    scores: np.ndarray | Sequence[float], threshold: float | Threshold
) -> np.ndarray:
    """Boolean anomaly flags: ``score > threshold`` (NaN scores give False)."""
    t = threshold.value if isinstance(threshold, Threshold) else float(threshold)
    return np.asarray(scores, dtype=np.float64) > t


def percentile_rank(
    scores: np.ndarray | Sequence[float] | float, val_scores: np.ndarray | Sequence[float]
) -> np.ndarray:
    """Rank of each score among the normal validation scores, in [0, 100].

    The percentage of validation scores ``<=`` the score: 0 below every
    validation score, 100 at or above the largest. Non-finite scores give NaN.

    Raises:
        ConfigError: there are no finite validation scores.
    """
    v = np.sort(_finite(val_scores))
    if v.size == 0:
        raise ConfigError("percentile ranks need validation scores, but the model file has none")
    s = np.asarray(scores, dtype=np.float64)
    ranks = np.searchsorted(v, s, side="right") * (100.0 / v.size)
    return np.where(np.isfinite(s), ranks, np.nan)


# ---------------------------------------------------------------------------
# Metrics


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


# ---------------------------------------------------------------------------
# Labels


def _dir_parts(relpath: str | PurePath) -> tuple[str, ...]:
    if isinstance(relpath, PurePath):
        parts = relpath.parts
    else:
        parts = PurePath(str(relpath).replace("\\", "/")).parts
    return tuple(p for p in parts[:-1] if p not in ("/", "."))


def infer_label(relpath: str | PurePath) -> int | None:
    """Label one image from its own folder names.

    The deepest folder named ``good``/``normal``/``ok`` (case-insensitive)
    or ``abnormal``/``anomaly``/``anomalous``/``bad``/``defect``/``defective``
    decides: 0 for the first group, 1 for the second; otherwise ``None``.
    Sibling folders such as MVTec's ``test/broken_large`` need the whole set
    of paths; use :func:`infer_labels` for that.
    """
    for part in reversed(_dir_parts(relpath)):
        name = part.lower()
        if name in GOOD_DIR_NAMES:
            return 0
        if name in ANOMALY_DIR_NAMES:
            return 1
    return None


def infer_labels(relpaths: Sequence[str | PurePath]) -> list[int | None]:
    """Label images from the folder layout of the whole set.

    A folder that has a ``good``/``normal``/``ok`` child folder (compared
    case-insensitively) among the paths is an anchor: images under that
    good child are 0 and images under any other child folder of the anchor
    are 1. The deepest anchor containing an image decides. Images under no
    anchor fall back to :func:`infer_label` (an ``abnormal`` folder alone
    still gives 1), else ``None``.

    Handles MVTec-AD (``bottle/test/good/000.png`` -> 0,
    ``bottle/test/broken_large/000.png`` -> 1, also with ``test`` itself as
    the scored root, while ``bottle/train/good`` anchors only ``train``) and
    anomalib Folder layouts (``normal/`` and ``abnormal/`` side by side).

    Args:
        relpaths: image paths relative to the scored root, ``/`` separated.
    """
    all_parts = [_dir_parts(p) for p in relpaths]
    anchors: set[tuple[str, ...]] = set()
    for parts in all_parts:
        for d, name in enumerate(parts):
            if name.lower() in GOOD_DIR_NAMES:
                anchors.add(parts[:d])
    labels: list[int | None] = []
    for rel, parts in zip(relpaths, all_parts, strict=True):
        label: int | None = None
        for d in range(len(parts) - 1, -1, -1):
            if parts[:d] in anchors:
                label = 0 if parts[d].lower() in GOOD_DIR_NAMES else 1
                break
        else:
            label = infer_label(rel)
        labels.append(label)
    return labels


def read_labels_csv(path: str | Path) -> dict[str, int]:
    """Read image labels from a CSV file with a ``path,label`` header.

    Labels are ``0``/``1`` or the words normal/good/ok (0) and
    anomaly/anomalous/abnormal/bad/defect/defective (1), case-insensitive.
    Paths are kept as written, with ``\\`` turned into ``/`` and a leading
    ``./`` removed; blank lines are skipped. Extra columns are ignored.

    Raises:
        ConfigError: the file is missing or unreadable, lacks the header, a
            row has an empty path or an unknown label, or one path is given
            two different labels.
    """
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read labels file {p}: {exc}") from exc
    header_at = next((i for i, row in enumerate(rows) if any(c.strip() for c in row)), None)
    if header_at is None:
        raise ConfigError(f"labels file {p} is empty; it needs a 'path,label' header and rows")
    header = [c.strip().lower() for c in rows[header_at]]
    if "path" not in header or "label" not in header:
        raise ConfigError(
            f"labels file {p} needs a header row with 'path' and 'label' columns, "
            f"got {','.join(rows[header_at])!r}"
        )
    ip, il = header.index("path"), header.index("label")
    labels: dict[str, int] = {}
    for lineno, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
        if not any(c.strip() for c in row):
            continue
        where = f"{p}, line {lineno}"
        if len(row) <= max(ip, il):
            raise ConfigError(f"{where}: expected 'path,label' columns, got {','.join(row)!r}")
        key, word = path_key(row[ip]), row[il].strip().lower()
        if not key:
            raise ConfigError(f"{where}: the path is empty")
        if word not in _LABEL_WORDS:
            raise ConfigError(
                f"{where}: label {row[il].strip()!r} is not 0/1 or normal/anomaly (good/bad)"
            )
        value = _LABEL_WORDS[word]
        if labels.get(key, value) != value:
            raise ConfigError(f"{where}: {key!r} already has label {labels[key]}")
        labels[key] = value
    return labels


# ---------------------------------------------------------------------------
# Ground-truth masks and pixel metrics


def _mask_candidates(base: Path, rel: PurePath) -> list[Path]:
    names = [f"{rel.stem}_mask{rel.suffix}", rel.name]
    if rel.suffix.lower() != ".png":
        names += [f"{rel.stem}_mask.png", f"{rel.stem}.png"]
    return [base / rel.parent / name for name in names]


def find_mask(
    image_relpath: str | PurePath,
    root: str | Path | None,
    masks_dir: str | Path | None = None,
) -> Path | None:
    """The ground-truth mask file of an image, or ``None`` when there is none.

    Without ``masks_dir`` the MVTec-AD layout is assumed:
    ``<dataset>/test/<defect>/<name>.png`` ->
    ``<dataset>/ground_truth/<defect>/<name>_mask.png``, found from the last
    ``test`` folder in ``root / image_relpath`` (so ``root`` may be the
    dataset, its ``test`` folder or a defect folder). Normal images have no
    mask; treat them as all-zero.

    With ``masks_dir`` the masks mirror the image paths relative to ``root``:
    ``<masks_dir>/<relpath dir>/<name>_mask<ext>`` or the same file name
    (``.png`` also tried for other image extensions); when the relative path
    starts below a ``test`` folder, the part after it is tried too.

    Args:
        image_relpath: the image path relative to ``root`` (or a full path
            when ``root`` is ``None``).
        root: the scored folder.
        masks_dir: a folder of masks mirroring the images.
    """
    rel = PurePath(str(image_relpath).replace("\\", "/"))
    full = Path(root) / rel if root is not None else Path(rel)
    if masks_dir is not None:
        rels = [rel]
        if "test" in rel.parts[:-1]:
            i = len(rel.parts) - 2 - rel.parts[-2::-1].index("test")
            rels.append(PurePath(*rel.parts[i + 1 :]))
        for r in rels:
            for cand in _mask_candidates(Path(masks_dir), r):
                if cand.is_file():
                    return cand
        return None
    parts = full.parts
    dirs = parts[:-1]
    if "test" not in dirs:
        return None
    i = len(dirs) - 1 - dirs[::-1].index("test")
    gt = Path(*parts[:i], "ground_truth", *parts[i + 1 : -1])
    cand = gt / f"{full.stem}_mask.png"
    return cand if cand.is_file() else None


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


# ---------------------------------------------------------------------------
# Output rows


@dataclass
class ScoreRow:
    """One scored image, ready for a CSV/JSONL writer."""

    path: str
    score: float | None
    threshold: float
    is_anomaly: bool | None
    percentile: float | None
    label: int | None = None
    error: str | None = None
    rule: str = ""
    score_kind: str = "mse"

    def as_dict(self, with_label: bool | None = None, with_info: bool = False) -> dict[str, Any]:
        """Ordered output columns: path, score, threshold, is_anomaly, percentile,
        label (when ``with_label``; by default when this row has one), error,
        then score_kind and rule (when ``with_info``; ``aetool score`` writes them).

        Pass ``with_label`` explicitly when streaming CSV so every row has the
        same columns.
        """
        out: dict[str, Any] = {
            "path": self.path,
            "score": self.score,
            "threshold": self.threshold,
            "is_anomaly": self.is_anomaly,
            "percentile": self.percentile,
        }
        if with_label if with_label is not None else self.label is not None:
            out["label"] = self.label
        out["error"] = self.error
        if with_info:
            out["score_kind"] = self.score_kind
            out["rule"] = self.rule
        return out


def build_score_row(
    path: str,
    score: float | None,
    threshold: Threshold,
    val_scores: np.ndarray | Sequence[float] | None,
    *,
    score_kind: str,
    label: int | None = None,
    error: str | None = None,
) -> ScoreRow:
    """A :class:`ScoreRow` with ``is_anomaly`` and ``percentile`` filled in.

    ``score=None`` (an unreadable image, say with ``error`` set) leaves
    ``is_anomaly`` and ``percentile`` ``None``; so does a missing or empty
    ``val_scores`` for ``percentile``.
    """
    is_anomaly: bool | None = None
    percentile: float | None = None
    if score is not None and math.isfinite(score):
        is_anomaly = bool(score > threshold.value)
        if val_scores is not None and _finite(val_scores).size:
            percentile = float(percentile_rank(score, val_scores))
    return ScoreRow(
        path=path,
        score=None if score is None else float(score),
        threshold=threshold.value,
        is_anomaly=is_anomaly,
        percentile=percentile,
        label=label,
        error=error,
        rule=threshold.rule,
        score_kind=score_kind,
    )
