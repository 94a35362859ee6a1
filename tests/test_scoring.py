"""Tests for aetool.anomaly.scores: scores, thresholds, metrics, labels and masks."""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from PIL import Image

from aetool.anomaly.scores import (
    AUTO_MAD_K,
    MAD_TO_SIGMA,
    SCORE_KINDS,
    ScoreRow,
    Threshold,
    ThresholdSpec,
    best_f1_threshold,
    build_score_row,
    compute_metrics,
    error_maps,
    find_mask,
    fit_threshold,
    flag_anomalies,
    image_scores,
    infer_label,
    infer_labels,
    parse_threshold,
    percentile_rank,
    pixel_roc_auc,
    read_labels_csv,
)
from aetool.errors import ConfigError
from aetool.metrics import ssim_map

VAL = np.arange(1.0, 101.0)  # validation scores 1..100


# --- error maps and image scores -------------------------------------------


@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_identical_images_score_zero(kind: str) -> None:
    x = torch.rand(3, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    maps = error_maps(x, x.clone(), kind)
    assert maps.shape == (3, 16, 20)
    scores = image_scores(x, x.clone(), kind)
    assert scores.shape == (3,)
    assert torch.allclose(scores, torch.zeros(3), atol=1e-5)


def test_ssim_map_range_and_shape() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 12, 12, generator=g)
    y = torch.rand(2, 1, 12, 12, generator=g)
    s = ssim_map(x, y)
    assert s.shape == (2, 12, 12)
    assert float(s.max()) <= 1.0 + 1e-6
    assert float(s.mean()) < 0.5  # unrelated noise images are dissimilar
    assert torch.allclose(ssim_map(x, x), torch.ones(2, 12, 12), atol=1e-5)


def test_scores_work_on_tiny_images() -> None:
    x = torch.zeros(1, 1, 2, 3)
    y = torch.full((1, 1, 2, 3), 0.5)
    for kind in SCORE_KINDS:
        s = image_scores(x, y, kind)
        assert s.shape == (1,) and torch.isfinite(s).all() and float(s[0]) > 0


def test_max_local_is_more_sensitive_to_small_defects_than_mse() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, 64, 64, generator=g)
    clean = x + 0.02 * torch.randn(x.shape, generator=g)
    defect = clean.clone()
    defect[..., 30:34, 30:34] += 0.6  # 16 of 4096 pixels
    mse_ratio = float(image_scores(x, defect, "mse") / image_scores(x, clean, "mse"))
    local_ratio = float(image_scores(x, defect, "max-local") / image_scores(x, clean, "max-local"))
    assert mse_ratio > 1.2
    assert local_ratio > 3 * mse_ratio


def test_error_maps_rejects_unknown_kind_and_shape_mismatch() -> None:
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ConfigError, match="unknown score"):
        error_maps(x, x, "l1")
    with pytest.raises(ValueError, match="differ"):
        error_maps(x, torch.zeros(1, 1, 8, 9))


def test_error_maps_mse_value_and_half_precision() -> None:
    x = torch.zeros(1, 3, 4, 4)
    y = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float16)
    maps = error_maps(x, y, "mse")
    assert maps.dtype == torch.float32
    assert torch.allclose(maps, torch.full((1, 4, 4), 0.25))


# --- threshold parsing and fitting -----------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("auto", ThresholdSpec("auto", None, "auto")),
        (" AUTO ", ThresholdSpec("auto", None, "AUTO")),
        ("0.0123", ThresholdSpec("value", 0.0123, "0.0123")),
        ("1e-3", ThresholdSpec("value", 0.001, "1e-3")),
        (".5", ThresholdSpec("value", 0.5, ".5")),
        ("p99", ThresholdSpec("percentile", 99.0, "p99")),
        ("P99.5", ThresholdSpec("percentile", 99.5, "P99.5")),
        ("3sigma", ThresholdSpec("sigma", 3.0, "3sigma")),
        ("2.5 sigma", ThresholdSpec("sigma", 2.5, "2.5 sigma")),
    ],
)
def test_parse_threshold(spec: str, expected: ThresholdSpec) -> None:
    assert parse_threshold(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["", "p", "p101", "p-1", "pabc", "sigma", "-3sigma", "-1", "nan", "inf", "3sigmas", "0.1x"],
)
def test_parse_threshold_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match="p99") as info:
        parse_threshold(spec)
    assert "\n" not in str(info.value)


def test_fit_threshold_percentile_and_sigma_exact() -> None:
    p99 = fit_threshold("p99", VAL)
    assert p99.value == pytest.approx(99.01)
    assert p99.rule == "p99 of 100 validation scores"
    assert fit_threshold("p99.5", VAL).value == pytest.approx(99.505)
    assert fit_threshold("p50", VAL).value == pytest.approx(50.5)
    sig = fit_threshold("3sigma", VAL)
    # sample std of 1..100 = sqrt(100 * 101 / 12) = 29.011491975882016
    assert sig.value == pytest.approx(50.5 + 3 * 29.011491975882016)
    assert sig.rule == "mean + 3*std of 100 validation scores"


def test_fit_threshold_explicit_needs_no_validation_scores() -> None:
    t = fit_threshold("0.25", np.array([]))
    assert t == Threshold(0.25, "explicit")


def test_fit_threshold_auto_is_median_plus_mad() -> None:
    v = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # one outlier must not move it
    t = fit_threshold(parse_threshold("auto"), v)
    # median 3, |v - 3| = 2,1,0,1,97 -> MAD 1
    assert t.value == pytest.approx(3 + AUTO_MAD_K * MAD_TO_SIGMA * 1)
    assert t.rule == "auto: median + 4*1.4826*MAD of 5 validation scores"
    assert fit_threshold("auto", VAL).value == pytest.approx(50.5 + 4 * 1.4826 * 25)


def test_fit_threshold_auto_zero_mad_falls_back_to_std() -> None:
    v = np.array([2.0, 2.0, 2.0, 2.0, 4.0])
    t = fit_threshold("auto", v)
    assert t.value == pytest.approx(2.0 + 4 * np.std(v, ddof=1))
    assert "MAD is 0" in t.rule


def test_fit_threshold_ignores_non_finite_and_needs_scores() -> None:
    assert fit_threshold("p100", [1.0, np.nan, 3.0, np.inf]).value == 3.0
    with pytest.raises(ConfigError, match="numeric threshold"):
        fit_threshold("auto", [np.nan])
    with pytest.raises(ConfigError):
        fit_threshold("p99", [])


def test_flag_anomalies_is_strict() -> None:
    flags = flag_anomalies([1.0, 2.0, 3.0, np.nan], Threshold(2.0, "explicit"))
    assert flags.tolist() == [False, False, True, False]


# --- percentile rank -----------------------------------------------------------


def test_percentile_rank_exact_values() -> None:
    r = percentile_rank([0.5, 1.0, 50.0, 50.5, 100.0, 1e9, np.nan], VAL)
    assert r[:6].tolist() == [0.0, 1.0, 50.0, 50.0, 100.0, 100.0]
    assert math.isnan(r[6])
    # ties count as <=, and unsorted validation scores are fine
    assert percentile_rank(2.0, [2.0, 1.0, 2.0, 3.0]).item() == 75.0
    with pytest.raises(ConfigError):
        percentile_rank([1.0], [])


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


# --- labels --------------------------------------------------------------------


def test_infer_labels_mvtec_category_root() -> None:
    rels = [
        "train/good/000.png",
        "test/good/000.png",
        "test/broken_large/000.png",
        "test/Contamination/sub/001.png",
        "ground_truth/broken_large/000_mask.png",
        "readme.png",
    ]
    assert infer_labels(rels) == [0, 0, 1, 1, None, None]


def test_infer_labels_mvtec_test_root_and_dataset_root() -> None:
    assert infer_labels(["good/000.png", "crack/000.png", "GOOD/001.png"]) == [0, 1, 0]
    rels = ["bottle/test/good/0.png", "bottle/test/cut/0.png", "cable/test/bent/0.png"]
    # cable has no good folder in the set: unknown, not anomalous
    assert infer_labels(rels) == [0, 1, None]


def test_infer_labels_folder_layout_and_fallback() -> None:
    rels = ["normal/a.png", "abnormal/b.png", "mask/b.png", "ok/c.png"]
    assert infer_labels(rels) == [0, 1, 1, 0]
    # without a sibling good folder, an explicitly anomalous name still counts
    assert infer_labels(["abnormal/x.png", "other/y.png"]) == [1, None]
    assert infer_labels([PurePosixPath("normal/a.png"), PurePosixPath("defects/b.png")]) == [0, 1]
    assert infer_labels([]) == []


def test_infer_label_single_path() -> None:
    assert infer_label("test/good/000.png") == 0
    assert infer_label("data\\OK\\1.png") == 0
    assert infer_label("abnormal/1.png") == 1
    assert infer_label("test/crack/000.png") is None
    assert infer_label("good.png") is None


def test_read_labels_csv(tmp_path: Path) -> None:
    f = tmp_path / "labels.csv"
    f.write_text(
        "\ufeffpath,label,note\n./a/1.png,0,x\nb\\2.png,Anomaly,\n\nc.png, good \nd.png,1\n",
        encoding="utf-8",
    )
    assert read_labels_csv(f) == {"a/1.png": 0, "b/2.png": 1, "c.png": 0, "d.png": 1}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("path,label\na.png,maybe\n", "line 2: label 'maybe'"),
        ("path,label\n,1\n", "line 2: the path is empty"),
        ("path,label\na.png\n", "expected 'path,label'"),
        ("file,y\na.png,1\n", "header"),
        ("path,label\na.png,1\na.png,0\n", "line 3: 'a.png' already has label 1"),
        ("", "empty"),
    ],
)
def test_read_labels_csv_bad_rows(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "labels.csv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        read_labels_csv(f)


def test_read_labels_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_labels_csv(tmp_path / "nope.csv")


# --- masks ---------------------------------------------------------------------


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(path)
    return path


def test_find_mask_mvtec_layout(tmp_path: Path) -> None:
    cat = tmp_path / "bottle"
    _touch(cat / "test" / "good" / "000.png")
    _touch(cat / "test" / "broken" / "001.png")
    mask = _touch(cat / "ground_truth" / "broken" / "001_mask.png")
    assert find_mask("test/broken/001.png", cat) == mask
    assert find_mask("broken/001.png", cat / "test") == mask
    assert find_mask("001.png", cat / "test" / "broken") == mask
    assert find_mask("bottle/test/broken/001.png", tmp_path) == mask
    assert find_mask(cat / "test" / "broken" / "001.png", None) == mask
    assert find_mask("test/good/000.png", cat) is None
    assert find_mask("train/good/000.png", cat) is None


def test_find_mask_explicit_dir(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    m1 = _touch(masks / "abnormal" / "1_mask.png")
    m2 = _touch(masks / "abnormal" / "2.png")
    m3 = _touch(masks / "crack" / "3_mask.png")
    root = tmp_path / "imgs"
    assert find_mask("abnormal/1.png", root, masks) == m1
    assert find_mask("abnormal/2.jpg", root, masks) == m2
    assert find_mask("test/crack/3.png", root, masks) == m3
    assert find_mask("abnormal/9.png", root, masks) is None


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
    import aetool.anomaly.scores as scoring

    monkeypatch.setattr(scoring, "PIXEL_AUC_MAX_PIXELS", 500)
    rng = np.random.default_rng(3)
    maps = [rng.random((32, 32)).astype(np.float32) for _ in range(2)]
    masks = [(m > 0.7).astype(np.uint8) for m in maps]
    maps[1][0, 0] = 0.99  # a normal pixel above some anomalous ones
    masks[1][0, 0] = 0
    a = pixel_roc_auc(maps, masks)
    assert a == pixel_roc_auc(maps, masks)
    assert a is not None and 0.97 < a <= 1.0


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
