"""Tests for aetool.anomaly.pipeline, options and summary: the streaming scoring run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aetool.anomaly.evaluation import compute_metrics
from aetool.anomaly.labels import infer_labels
from aetool.anomaly.options import ScoreOptions
from aetool.anomaly.pipeline import ScoreRun, score_images
from aetool.anomaly.results import build_score_row
from aetool.anomaly.scores import image_scores
from aetool.anomaly.summary import ScoreSummary
from aetool.anomaly.thresholds import Threshold, percentile_rank
from aetool.data.inputs import ImageRef, collect_images
from aetool.errors import ConfigError, ImageError, NoImagesError, OutputError
from aetool.models.file import LoadedModel, load_model
from aetool.models.registry import create_model


@pytest.fixture(scope="module")
def loaded(score_model: Path) -> LoadedModel:
    return load_model(score_model)


def test_rows_match_a_direct_computation(score_tree: Path, loaded: LoadedModel) -> None:
    folder = score_tree / "test" / "blob"
    run = score_images([folder], loaded, device="cpu", batch_size=3)
    rows = list(run)
    files = sorted(folder.glob("*.png"))
    assert [r.path for r in rows] == [str(p) for p in files]
    x = torch.from_numpy(
        np.stack([np.asarray(Image.open(p), dtype=np.float32)[None] / 255 for p in files])
    )
    with torch.no_grad():
        expected = image_scores(x, loaded.model(x), "mse").numpy()
    assert np.allclose([r.score for r in rows], expected, rtol=1e-4, atol=1e-7)
    val = loaded.validation_scores("mse")
    assert rows[0].percentile == pytest.approx(float(percentile_rank(rows[0].score, val)))
    assert all(r.threshold == run.threshold.value and r.rule == run.threshold.rule for r in rows)
    assert all(r.label is None for r in rows)  # a defect folder alone has no good/ anchor
    assert run.summary.report()["counts"]["scored"] == 8


def test_streams_lazily(score_tree: Path, loaded: LoadedModel) -> None:
    calls: list[tuple[int, int]] = []
    run = score_images(
        [score_tree / "train"],
        loaded,
        device="cpu",
        batch_size=8,
        progress=lambda d, n: calls.append((d, n)),
    )
    first = next(run)
    assert first.score is not None and calls == []  # nothing beyond the first batch scored
    rest = list(run)
    assert len(rest) == 47 and calls[-1] == (48, 48) and len(calls) == 6


def test_collect_images_excludes_masks_and_roots_files(score_tree: Path) -> None:
    refs, missing, excluded = collect_images([score_tree])
    assert excluded == 16 and missing == []
    assert len(refs) == 80 and not any("ground_truth" in r.relpath for r in refs)
    files = [score_tree / "test" / "good" / "img000.png", score_tree / "test" / "blob" / "000.png"]
    refs2, missing2, _ = collect_images([*files, score_tree / "nope.png"])
    assert [r.relpath for r in refs2] == ["good/img000.png", "blob/000.png"]
    assert missing2 == [str(score_tree / "nope.png")]
    assert infer_labels([r.relpath for r in refs2]) == [0, 1]


def test_missing_and_unreadable_rows_and_strict(
    tmp_path: Path, score_tree: Path, loaded: LoadedModel
) -> None:
    shutil.copy(score_tree / "test" / "good" / "img000.png", tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    warned: list[str] = []
    run = score_images(
        [tmp_path / "ghost.png", tmp_path], loaded, device="cpu", warn=lambda p, r: warned.append(r)
    )
    rows = list(run)
    assert [(Path(r.path).name, r.score is None) for r in rows] == [
        ("ghost.png", True),
        ("a.png", False),
        ("b.png", True),
    ]
    assert rows[2].error == "empty file (0 bytes)" and rows[2].is_anomaly is None
    assert warned == ["no such file or folder", "empty file (0 bytes)"]
    rep = run.summary.report()
    assert rep["counts"]["unreadable"] == 2 and rep["counts"]["missing"] == 1
    with pytest.raises(ImageError, match="ghost.png"):
        score_images([tmp_path / "ghost.png", tmp_path], loaded, strict=True)
    with pytest.raises(ImageError, match="b.png"):
        list(score_images([tmp_path], loaded, device="cpu", strict=True))


def test_setup_errors_raise_before_any_row(
    tmp_path: Path, score_tree: Path, loaded: LoadedModel
) -> None:
    (tmp_path / "empty").mkdir()
    shutil.copy(score_tree / "test" / "good" / "img000.png", tmp_path / "a.png")
    with pytest.raises(NoImagesError):
        score_images([tmp_path / "empty"], loaded)
    with pytest.raises(ConfigError, match="unknown score"):
        score_images([tmp_path], loaded, score_kind="psnr")
    with pytest.raises(ConfigError, match="invalid threshold"):
        score_images([tmp_path], loaded, threshold="lots")
    with pytest.raises(OutputError):
        score_images([tmp_path], loaded, heatmap_dir=tmp_path / "x")


def test_given_threshold_and_labels(score_tree: Path, loaded: LoadedModel) -> None:
    folder = score_tree / "test" / "good"
    labels = {"img000.png": 1, str(folder / "img001.png"): 1}
    run = score_images(
        [folder], loaded, device="cpu", threshold=Threshold(0.0, "zero"), labels=labels
    )
    rows = list(run)
    assert all(r.is_anomaly and r.rule == "zero" for r in rows)
    assert [r.label for r in rows[:3]] == [1, 1, None]
    rep = run.summary.report()
    assert rep["labels"]["source"] == "labels file" and rep["labels"]["known"] == 2
    assert rep["metrics"]["n"] == 2 and rep["best_f1"] is None  # one class only


def test_summary_standalone_matches_compute_metrics() -> None:
    t = Threshold(0.5, "explicit")
    scores = [0.1, 0.2, 0.6, 0.9, 0.4, 0.7]
    labels = [0, 0, 1, 1, 1, None]
    s = ScoreSummary(t, "mse", "0.5")
    for i, (sc, lab) in enumerate(zip(scores, labels, strict=True)):
        s.add(build_score_row(f"{i}.png", sc, t, None, score_kind="mse", label=lab))
    s.add(build_score_row("bad.png", None, t, None, score_kind="mse", error="broken"))
    rep = s.report()
    assert rep["counts"] == {
        "rows": 7,
        "scored": 6,
        "unreadable": 1,
        "anomalies": 3,
        "normal": 3,
    }
    assert rep["metrics"] == compute_metrics(scores, labels, t)
    assert rep["metrics"]["confusion"] == {"tn": 2, "fp": 0, "fn": 1, "tp": 2}
    assert rep["best_f1"]["metrics"]["f1"] == 1.0 and 0.2 < rep["best_f1"]["value"] < 0.4
    assert rep["pixel"] is None and rep["unreadable"] == [{"path": "bad.png", "error": "broken"}]
    assert s.report() == rep  # report() does not consume state


def test_pixel_auc_from_masks_dir(tmp_path: Path, score_tree: Path, loaded: LoadedModel) -> None:
    # The same masks, in a separate folder mirroring relative paths.
    masks = tmp_path / "masks"
    shutil.copytree(score_tree / "ground_truth", masks)
    run = score_images([score_tree / "test"], loaded, device="cpu", masks_dir=masks)
    list(run)
    px = run.summary.report()["pixel"]
    assert px["images_with_masks"] == 16 and px["images"] == 32 and px["roc_auc"] > 0.9


def test_native_size_model_scores_each_image_at_its_size(tmp_path: Path) -> None:
    # An untrained denoiser is the identity: every score is ~0, at any image size.
    net = create_model("denoiser", channels=1, height=16, width=16)
    meta = {
        "preprocessing": {"channels": 1, "height": None, "width": None, "resize": "stretch",
                          "alpha_background": "black", "patch_size": 16},
        "validation": {"scores": {"mse": [0.0, 1e-4], "ssim": [0.0], "max-local": [1e-3]}},
        "training": {"noise": "gaussian:0.1"},
    }  # fmt: skip
    model = LoadedModel(net.eval(), meta, tmp_path / "m.safetensors", {})
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (20, 36)), ("b.png", (33, 17, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / name)
    out = tmp_path.parent / f"{tmp_path.name}-heat"
    run = score_images([tmp_path], model, device="cpu", heatmap_dir=out)
    rows = list(run)
    assert [r.score for r in rows] == pytest.approx([0.0, 0.0], abs=1e-10)
    assert run.summary.report()["denoising_model"] is True
    with Image.open(out / "a.png") as a, Image.open(out / "b.png") as b:
        # Panels of cells at each image's own size, enlarged 8x (to at least 256 px).
        assert a.height == 20 * 8 + 28 and b.height == 33 * 8 + 28
        assert 3 * 36 * 8 < a.width < 4 * 36 * 8 and 3 * 17 * 8 < b.width < 4 * 17 * 8


def test_image_refs_are_accepted(score_tree: Path, loaded: LoadedModel) -> None:
    p = score_tree / "test" / "good" / "img003.png"
    rows = list(score_images([ImageRef(p, "x/good/img003.png")], loaded, device="cpu"))
    assert len(rows) == 1 and rows[0].label == 0 and rows[0].score is not None


def test_options_object_and_keyword_overrides_agree(score_tree: Path, loaded: LoadedModel) -> None:
    opts = ScoreOptions(score_kind="max-local", threshold="p90", batch_size=5, device="cpu")
    by_options = [
        r.as_dict(with_info=True) for r in score_images([score_tree / "test"], loaded, opts)
    ]
    by_keywords = [
        r.as_dict(with_info=True)
        for r in score_images(
            [score_tree / "test"],
            loaded,
            score_kind="max-local",
            threshold="p90",
            batch_size=5,
            device="cpu",
        )
    ]
    assert by_options == by_keywords
    assert by_options[0]["score_kind"] == "max-local" and by_options[0]["rule"].startswith("p90")
    # Overrides win over the options object, which is left unchanged.
    run = score_images([score_tree / "test"], loaded, opts, threshold=0.5)
    assert run.threshold == Threshold(0.5, "explicit") and opts.threshold == "p90"
    direct = ScoreRun([score_tree / "test"], loaded, opts)
    assert [r.as_dict(with_info=True) for r in direct] == by_options
    with pytest.raises(TypeError):
        score_images([score_tree / "test"], loaded, no_such_option=1)


def test_score_options_check() -> None:
    ScoreOptions().check()
    with pytest.raises(ConfigError, match="unknown score 'psnr'"):
        ScoreOptions(score_kind="psnr").check()
    with pytest.raises(ConfigError, match="batch size must be at least 1"):
        ScoreOptions(batch_size=0).check()
