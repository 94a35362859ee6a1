"""Scoring results: one :class:`ScoreRow` per scored (or unreadable) image.

A row carries the score and everything a reader of the output needs to
judge it without the model: the threshold and the rule that set it, whether
the score passes it, and its rank among the model's validation scores. Rows
are plain data; :mod:`aetool.rows` writes them as CSV, JSONL or a table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aetool.anomaly.thresholds import Threshold, finite_scores, percentile_rank

__all__ = ["ScoreRow", "build_score_row"]


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


def score_columns(with_label: bool, with_info: bool = False) -> list[str]:
    """The column names of :meth:`ScoreRow.as_dict`, for a header written before any row."""
    return [
        "path", "score", "threshold", "is_anomaly", "percentile",
        *(["label"] if with_label else []), "error",
        *(["score_kind", "rule"] if with_info else []),
    ]  # fmt: skip


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
        if val_scores is not None and finite_scores(val_scores).size:
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
