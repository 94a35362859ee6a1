"""What a report shows: :class:`ReportData` and its :class:`ExtremeItem` images.

Plain numpy arrays, lists and the model file's metadata dict, every field
optional, so a report can be built from a scoring run
(:func:`aetool.report.collect.build_report`) or by hand, and rendered by
:mod:`aetool.report.html` without touching a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ExtremeItem", "ReportData", "lookup"]


@dataclass
class ExtremeItem:
    """One image among the most anomalous or most normal-looking.

    Attributes:
        path: Where the image came from (shown, HTML-escaped).
        score: Its anomaly score.
        image: ``(C, H, W)`` floats in ``[0, 1]``, as the model saw it.
        error_map: ``(H, W)`` per-pixel error for the heatmap.
        label: 0 normal, 1 anomalous, None unknown.
    """

    path: str
    score: float
    image: np.ndarray
    error_map: np.ndarray
    label: int | None = None


@dataclass
class ReportData:
    """Everything a report shows; every field is optional.

    Attributes:
        metadata: The model file's metadata dict (``format``, ``arch``,
            ``arch_args``, ``preprocessing``, ``training``, ``validation``);
            missing keys are tolerated.
        model_path: The model file, for the summary.
        inputs: ``(N, C, H, W)`` sample inputs for the reconstruction grid.
        recons: ``(N, C, H, W)`` their reconstructions.
        noisy: ``(N, C, H, W)`` noisy inputs of a denoising model, else None.
        scores: One anomaly score per scored image.
        labels: 0/1/None per score (None: unknown), or None when unlabeled.
        paths: Path per score.
        threshold: Decision threshold; images scoring above it are flagged.
        threshold_rule: How the threshold was chosen (e.g. ``"p99 of validation"``).
        score_kind: ``mse``, ``ssim`` or ``max-local``.
        val_scores: Validation scores; default ``metadata["validation"]["scores"][score_kind]``.
        top_anomalous: Highest-scoring images, most anomalous first.
        top_normal: Lowest-scoring images, most normal first.
        latent_codes: ``(N, k)`` latent codes, or None when the model has no vector latent.
        latent_labels: Label per latent code (class name or 0/1/None).
        metrics: Optional ``roc_auc``, ``average_precision``, ``f1``, ``precision``,
            ``recall`` and ``confusion`` (``{"tn", "fp", "fn", "tp"}``).
        best_f1: The F1-optimal threshold and its metrics (reported only).
        pixel: Pixel ROC AUC against ground-truth masks, when any were found.
        counts: The scoring run's counts.
        title: Page title.
        created: Timestamp text shown under the title, if any.
    """

    metadata: dict[str, Any] = field(default_factory=dict)
    model_path: str | None = None
    inputs: np.ndarray | None = None
    recons: np.ndarray | None = None
    noisy: np.ndarray | None = None
    scores: np.ndarray | None = None
    labels: list[int | None] | None = None
    paths: list[str] = field(default_factory=list)
    threshold: float | None = None
    threshold_rule: str = ""
    score_kind: str = "mse"
    val_scores: np.ndarray | None = None
    top_anomalous: list[ExtremeItem] = field(default_factory=list)
    top_normal: list[ExtremeItem] = field(default_factory=list)
    latent_codes: np.ndarray | None = None
    latent_labels: list[Any] | None = None
    metrics: dict[str, Any] | None = None
    #: The F1-optimal threshold (``value``, ``rule``, ``metrics``), shown as in `aetool score`'s
    #: summary: reported only, the threshold above decides.
    best_f1: dict[str, Any] | None = None
    #: Pixel-level ROC AUC against ground-truth masks (``roc_auc``, ``images_with_masks``).
    pixel: dict[str, Any] | None = None
    #: The scoring run's counts (``rows``, ``scored``, ``unreadable``, ...).
    counts: dict[str, Any] | None = None
    title: str = "aetool report"
    created: str | None = None

    def validation_scores(self) -> np.ndarray | None:
        """The validation scores given, else those recorded in the model metadata."""
        if self.val_scores is not None:
            return np.asarray(self.val_scores, dtype=np.float64)
        recorded = lookup(self.metadata, "validation", "scores", self.score_kind)
        if isinstance(recorded, list) and recorded:
            return np.asarray(recorded, dtype=np.float64)
        return None

    def has_labels(self) -> bool:
        """Whether at least one scored image has a known label."""
        return self.labels is not None and any(v is not None for v in self.labels)

    def has_both_classes(self) -> bool:
        """Whether the labels include a normal and an anomalous image (ROC needs both)."""
        known = {int(v) for v in self.labels or [] if v is not None}
        return known >= {0, 1}


def lookup(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d
