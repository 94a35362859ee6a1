"""Tests for aetool.anomaly.evaluation: image metrics, best F1 and pixel ROC AUC."""

from __future__ import annotations

import numpy as np
import pytest

from aetool.anomaly.evaluation import best_f1_threshold, compute_metrics, pixel_roc_auc
from aetool.anomaly.thresholds import (
    Threshold,
)
from aetool.errors import ConfigError

VAL = np.arange(1.0, 101.0)  # validation scores 1..100


# --- metrics -------------------------------------------------------------------


def test_compute_metrics_hand_computed() -> None:
    scores = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    m = compute_metrics(scores, labels, 0.5)
    # pred = s > 0.5 -> [0,0,0,1, 0,1,1,1]
    assert m["confusion"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 3}
    assert m["precision"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    assert (m["n"], m["n_normal"], m["n_anomalous"], m["n_skipped"]) == (8, 4, 4, 0)
    # one inversion (0.6 normal above 0.4 anomaly) of 16 pairs
    assert m["roc_auc"] == pytest.approx(15 / 16)
    assert 0 < m["average_precision"] < 1


def test_compute_metrics_auc_perfect_and_reversed() -> None:
    labels = [0, 0, 0, 1, 1]
    assert compute_metrics([1, 2, 3, 4, 5], labels, 3.5)["roc_auc"] == 1.0
    rev = compute_metrics([5, 4, 3, 2, 1], labels, 3.5)
    assert rev["roc_auc"] == 0.0
    assert rev["confusion"] == {"tn": 1, "fp": 2, "fn": 2, "tp": 0}
    assert rev["f1"] == 0.0


def test_compute_metrics_single_class_and_unknown_labels(recwarn: pytest.WarningsRecorder) -> None:
    m = compute_metrics([0.1, 0.2, 0.9, 0.5, np.nan], [0, 0, 0, None, 0], Threshold(0.5, "x"))
    assert m["roc_auc"] is None and m["average_precision"] is None
    assert m["recall"] is None and m["f1"] is None
    assert m["precision"] == 0.0  # one false alarm, no true anomaly
    assert m["confusion"] == {"tn": 2, "fp": 1, "fn": 0, "tp": 0}
    assert (m["n"], m["n_skipped"], m["threshold"]) == (3, 2, 0.5)
    assert len(recwarn) == 0


def test_best_f1_threshold() -> None:
    scores = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    t = best_f1_threshold(scores, labels)
    # cut between 0.3 and 0.4 gives tp=4, fp=1 -> F1 8/9, the best
    assert t.value == pytest.approx(0.35)
    assert t.rule == "F1-optimal on labelled scores"
    assert compute_metrics(scores, labels, t)["f1"] == pytest.approx(8 / 9)
    # ties in score: the cut lies between distinct values only
    t2 = best_f1_threshold([1, 2, 2, 3], [0, 0, 1, 1])
    assert t2.value == pytest.approx(1.5)
    assert best_f1_threshold([5.0, 6.0], [0, 1]).value == pytest.approx(5.5)
    with pytest.raises(ConfigError, match="both"):
        best_f1_threshold([1, 2], [0, 0])


def test_best_f1_threshold_flags_all_when_needed() -> None:
    t = best_f1_threshold([1.0, 2.0, 3.0], [1, 0, 1])
    # flagging all: tp=2, fp=1 -> F1 0.8; flagging {3}: 2/3; {2,3}: 0.5
    assert t.value < 1.0
    assert compute_metrics([1.0, 2.0, 3.0], [1, 0, 1], t)["f1"] == pytest.approx(0.8)


# --- pixel ROC AUC -------------------------------------------------------------


def test_pixel_roc_auc_synthetic() -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:4, 2:4] = 255
    good_map = mask.astype(np.float32) / 255 + 0.1
    assert pixel_roc_auc([good_map], [mask]) == 1.0
    assert pixel_roc_auc([-good_map], [mask]) == 0.0
    # a 16x16 map against the 8x8 mask: nearest-neighbour upscaling
    big = np.kron(good_map, np.ones((2, 2), dtype=np.float32))
    assert pixel_roc_auc([big], [mask]) == 1.0
    # None = all-normal mask; its pixels count as negatives
    half = np.full((8, 8), 0.5, dtype=np.float32)  # ties with nothing in good_map
    auc = pixel_roc_auc([good_map, half], [mask, None])
    assert auc == 1.0
    assert pixel_roc_auc([good_map], [np.zeros((8, 8))]) is None
    with pytest.raises(ValueError):
        pixel_roc_auc([good_map], [])


def test_pixel_roc_auc_subsamples_deterministically(monkeypatch: pytest.MonkeyPatch) -> None:
    import aetool.anomaly.evaluation as evaluation

    monkeypatch.setattr(evaluation, "PIXEL_AUC_MAX_PIXELS", 500)
    rng = np.random.default_rng(3)
    maps = [rng.random((32, 32)).astype(np.float32) for _ in range(2)]
    masks = [(m > 0.7).astype(np.uint8) for m in maps]
    maps[1][0, 0] = 0.99  # a normal pixel above some anomalous ones
    masks[1][0, 0] = 0
    a = pixel_roc_auc(maps, masks)
    assert a == pixel_roc_auc(maps, masks)
    assert a is not None and 0.97 < a <= 1.0


def test_aupro_hand_computed_cases() -> None:
    """Regions {0,1} and {4}; normal pixels 0.5 and 0.1 (worked out in the comments)."""
    import numpy as np

    from aetool.anomaly.evaluation import aupro

    amap = [np.array([[0.9, 0.3, 0.5, 0.1, 0.2]])]
    mask = [np.array([[1, 1, 0, 0, 1]])]
    # thresholds 0.9: PRO 0.25 at FPR 0; 0.5: FPR 0.5; 0.3: PRO 0.5; 0.2: PRO 1; 0.1: FPR 1
    assert aupro(amap, mask, max_fpr=0.3) == pytest.approx(0.25)  # 0.3 * 0.25 / 0.3
    assert aupro(amap, mask, max_fpr=1.0) == pytest.approx(0.625)  # 0.5*0.25 + 0.5*1
    perfect = [np.array([[0.8, 0.6, 0.1, 0.7]])]
    assert aupro(perfect, [np.array([[1, 0, 0, 1]])]) == pytest.approx(1.0)
    assert np.isnan(aupro([np.zeros((2, 2))], [np.zeros((2, 2))]))
    with pytest.raises(ValueError):
        aupro(amap, mask, max_fpr=0)
