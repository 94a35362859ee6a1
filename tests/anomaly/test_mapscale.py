"""Tests for aetool.anomaly.mapscale: one colour scale per model, here and in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aetool.anomaly.mapscale import MapScale, map_scale, map_statistics
from aetool.models.file import read_metadata
from aetool.report.data import ExtremeItem, ReportData
from aetool.report.sections import report_scale


def test_training_records_map_statistics(score_model: Path) -> None:
    meta = read_metadata(score_model)
    maps = meta["validation"]["maps"]
    assert set(maps) == {"mse", "ssim", "max-local"}
    for kind, stats in maps.items():
        assert 0 < stats["p99"] <= stats["p999"] <= stats["max"], kind
        scale = map_scale(meta, kind)
        assert scale == MapScale(stats["max"], stats["p999"], "validation error maps")
    # The largest smoothed validation pixel is the largest max-local validation score.
    assert maps["max-local"]["max"] == pytest.approx(max(meta["validation"]["scores"]["max-local"]))


def test_report_uses_the_model_scale_not_the_images_shown(score_model: Path) -> None:
    meta = read_metadata(score_model)
    hot = ExtremeItem("a.png", 1.0, np.zeros((1, 4, 4)), np.full((4, 4), 50.0))
    data = ReportData(metadata=meta, score_kind="ssim", top_anomalous=[hot])
    assert report_scale(data) == map_scale(meta, "ssim")
    # Without recorded statistics or scores: the largest error shown.
    assert report_scale(ReportData(metadata={}, top_anomalous=[hot])).vmax == 50.0


def test_old_model_files_fall_back() -> None:
    old = {"validation": {"scores": {"max-local": [0.01, 0.03, 0.02], "mse": [0.001]}}}
    assert map_scale(old, "mse") == MapScale(0.03, None, "validation max-local scores")
    assert map_scale(old, "ssim").vmax == 1.0
    assert map_scale({}, "mse").vmax is None


def test_map_statistics_quantiles() -> None:
    values = np.arange(1000, dtype=np.float32)
    stats = map_statistics([values[:500], values[500:], np.array([np.nan])], [499.0, 999.0])
    assert stats == {
        "p99": pytest.approx(np.quantile(values, 0.99)),
        "p999": pytest.approx(np.quantile(values, 0.999)),
        "max": 999.0,
    }
