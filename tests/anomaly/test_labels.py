"""Tests for aetool.anomaly.labels: folder labels, labels CSV and ground-truth masks."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from aetool.anomaly.labels import find_mask, infer_label, infer_labels, read_labels_csv
from aetool.errors import ConfigError

VAL = np.arange(1.0, 101.0)  # validation scores 1..100


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
