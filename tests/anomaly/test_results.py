"""Tests for aetool.anomaly.results: score rows."""

from __future__ import annotations

import numpy as np

from aetool.anomaly.results import ScoreRow, build_score_row
from aetool.anomaly.thresholds import (
    fit_threshold,
)

VAL = np.arange(1.0, 101.0)  # validation scores 1..100


# --- rows ------------------------------------------------------------------------


def test_score_row_as_dict_order() -> None:
    row = ScoreRow("a.png", 0.5, 0.4, True, 99.0, None, None, "p99", "mse")
    assert list(row.as_dict()) == [
        "path",
        "score",
        "threshold",
        "is_anomaly",
        "percentile",
        "error",
    ]
    assert list(row.as_dict(with_label=True))[-2:] == ["label", "error"]
    labelled = ScoreRow("b.png", 0.1, 0.4, False, 10.0, 0, None, "p99", "mse")
    assert labelled.as_dict()["label"] == 0
    assert "label" not in labelled.as_dict(with_label=False)


def test_build_score_row() -> None:
    t = fit_threshold("p99", VAL)
    row = build_score_row("x.png", 100.5, t, VAL, score_kind="ssim", label=1)
    assert (row.is_anomaly, row.percentile, row.threshold) == (True, 100.0, t.value)
    assert (row.rule, row.score_kind, row.label) == ("p99 of 100 validation scores", "ssim", 1)
    low = build_score_row("y.png", 10.0, t, VAL, score_kind="mse")
    assert (low.is_anomaly, low.percentile) == (False, 10.0)
    bad = build_score_row("z.png", None, t, VAL, score_kind="mse", error="cannot decode")
    assert bad.as_dict() == {
        "path": "z.png",
        "score": None,
        "threshold": t.value,
        "is_anomaly": None,
        "percentile": None,
        "error": "cannot decode",
    }
