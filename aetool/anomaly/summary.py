"""The summary of a scoring run: counts, threshold, labels and metrics as plain data.

:class:`ScoreSummary` keeps two numbers per scored image (score and label)
and a subsample of error-map pixels for pixel ROC AUC, so a run of any size
can be summarised at the end without holding its rows. ``report()`` is what
``aetool score --report`` writes as JSON and what ``aetool report`` renders.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

from aetool.anomaly.evaluation import aupro, best_f1_threshold, compute_metrics, pixel_roc_auc
from aetool.anomaly.results import ScoreRow
from aetool.anomaly.thresholds import Threshold

__all__ = ["ScoreSummary"]


class ScoreSummary:
    """Collects rows (two numbers each) and computes the scoring report.

    Usable on its own: ``add`` every :class:`ScoreRow`, optionally
    ``add_pixels`` for pixel-level AUC, then ``report()``.

    Args:
        threshold: the threshold that decides ``is_anomaly``.
        score_kind: the score used (one of :data:`~aetool.anomaly.scores.SCORE_KINDS`).
        spec: the threshold rule as the user wrote it (``auto``, ``p99``, ...).
    """

    def __init__(self, threshold: Threshold, score_kind: str = "mse", spec: str = "auto") -> None:
        self.threshold = threshold
        self.score_kind = score_kind
        self.spec = spec
        self.scores = array("d")
        self.labels = array("b")  # -1 = unknown
        self.flagged = 0
        self.unreadable: list[dict[str, str]] = []
        self.info: dict[str, Any] = {}
        self._pix_values: list[np.ndarray] = []
        self._pix_truth: list[np.ndarray] = []
        self._region_maps: list[tuple[np.ndarray, np.ndarray]] = []
        self.pixel_images = 0
        self.pixel_masks = 0

    def add(self, row: ScoreRow) -> None:
        """Count one output row."""
        if row.score is None or row.error is not None:
            self.unreadable.append({"path": row.path, "error": row.error or "no score"})
            return
        self.scores.append(row.score)
        self.labels.append(-1 if row.label is None else int(row.label))
        self.flagged += bool(row.is_anomaly)

    def add_pixels(self, values: np.ndarray, truth: np.ndarray, has_mask: bool) -> None:
        """Add (already subsampled) error-map values and their mask truth for pixel AUC."""
        self._pix_values.append(np.asarray(values, dtype=np.float32).ravel())
        self._pix_truth.append(np.asarray(truth, dtype=bool).ravel())
        self.pixel_images += 1
        self.pixel_masks += bool(has_mask)

    def add_region_map(self, amap: np.ndarray, truth: np.ndarray) -> None:
        """Add a (possibly strided-down) whole map and its mask for AUPRO."""
        self._region_maps.append((np.asarray(amap, np.float32), np.asarray(truth, bool)))

    @property
    def n_scored(self) -> int:
        return len(self.scores)

    def report(self) -> dict[str, Any]:
        """The report as plain JSON-serialisable data.

        Keys: ``score_kind``; ``counts`` (``rows``, ``scored``, ``unreadable``,
        ``anomalies``, ``normal``, plus any extra counts the pipeline set);
        ``threshold`` (``value``, ``rule``, ``spec``, ``decides_is_anomaly``);
        ``labels`` (``known``, ``normal``, ``anomalous``, ``source``);
        ``metrics`` (:func:`~aetool.anomaly.evaluation.compute_metrics` at the threshold,
        or ``None`` without labels); ``best_f1`` (the F1-optimal threshold, its
        rule and metrics, reported only, or ``None``); ``pixel`` (``roc_auc``,
        ``images``, ``images_with_masks``, ``pixels``, ``aupro`` up to FPR 0.3, or ``None``);
        ``unreadable`` (path and error of every unreadable file); and
        whatever the pipeline put in ``info`` (model, shard, ...).
        """
        scores = np.frombuffer(self.scores, dtype=np.float64) if self.scores else np.empty(0)
        lab = np.frombuffer(self.labels, dtype=np.int8) if self.labels else np.empty(0, np.int8)
        known = lab >= 0
        labels: list[int | None] = [None if v < 0 else int(v) for v in lab]
        n_pos = int((lab == 1).sum())
        n_neg = int((lab == 0).sum())
        metrics = compute_metrics(scores, labels, self.threshold) if known.any() else None
        best = None
        if n_pos and n_neg:
            t = best_f1_threshold(scores, labels)
            best = {
                "value": t.value,
                "rule": t.rule,
                "decides_is_anomaly": False,
                "metrics": compute_metrics(scores, labels, t),
            }
        pixel = None
        if self.pixel_masks:
            auc = pixel_roc_auc(
                [v[None] for v in self._pix_values], [t[None] for t in self._pix_truth]
            )
            pixel = {
                "roc_auc": auc,
                "map": self.score_kind,
                "images": self.pixel_images,
                "images_with_masks": self.pixel_masks,
                "pixels": int(sum(v.size for v in self._pix_values)),
                "aupro": None,
            }
            if self._region_maps:
                value = aupro([m for m, _ in self._region_maps], [t for _, t in self._region_maps])
                pixel["aupro"] = value if np.isfinite(value) else None
        counts = {
            "rows": self.n_scored + len(self.unreadable),
            "scored": self.n_scored,
            "unreadable": len(self.unreadable),
            "anomalies": self.flagged,
            "normal": self.n_scored - self.flagged,
        }
        counts.update(self.info.get("counts", {}))
        out: dict[str, Any] = {
            "score_kind": self.score_kind,
            "counts": counts,
            "threshold": {
                "value": self.threshold.value,
                "rule": self.threshold.rule,
                "spec": self.spec,
                "decides_is_anomaly": True,
            },
            "labels": {
                "known": int(known.sum()),
                "normal": n_neg,
                "anomalous": n_pos,
                "source": self.info.get("label_source"),
            },
            "metrics": metrics,
            "best_f1": best,
            "pixel": pixel,
            "unreadable": list(self.unreadable),
        }
        out.update({k: v for k, v in self.info.items() if k not in ("label_source", "counts")})
        return out
