"""Tests for aetool.report.plots: grids, heatmaps and the matplotlib PNG plots."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from PIL import Image

from aetool.report import plots


def _decode(png: bytes) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def _not_blank(img: Image.Image) -> None:
    arr = np.asarray(img.convert("L"), dtype=np.float64)
    assert arr.std() > 5, "plot looks blank"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_image_grid_dimensions_exact_without_labels(rng):
    rows = [rng.random((5, 1, 8, 8)), rng.random((3, 1, 8, 8))]
    grid = plots.image_grid(rows, None, scale_to=32)
    pad = plots.GRID_PAD
    assert grid.size == (pad + 5 * (32 + pad), pad + 2 * (32 + pad))
    assert grid.mode == "RGB"


def test_image_grid_upscales_small_images_with_nearest():
    img = np.zeros((1, 1, 8, 8), dtype=np.float32)
    img[0, 0, :4, :4] = 1.0  # top-left quadrant white
    grid = np.asarray(plots.image_grid([img], None, scale_to=64))
    pad = plots.GRID_PAD
    cell = grid[pad : pad + 64, pad : pad + 64, 0]
    # NEAREST: two flat blocks, no interpolated grey edge between them.
    assert set(np.unique(cell)) == {0, 255}
    assert (cell[:32, :32] == 255).all() and (cell[32:, :] == 0).all()


def test_image_grid_labels_add_a_column_and_keep_height(rng):
    rows = [rng.random((4, 3, 10, 20)), rng.random((4, 3, 10, 20))]
    plain = plots.image_grid(rows, None, scale_to=40)
    labelled = plots.image_grid(rows, ["input", "reconstruction"], scale_to=40)
    # Aspect ratio kept: 20x10 images become 40x20 cells.
    assert plain.size == (plots.GRID_PAD + 4 * (40 + plots.GRID_PAD), plots.GRID_PAD + 2 * 24)
    assert labelled.height == plain.height
    assert labelled.width > plain.width + 40  # room for "reconstruction"


def test_image_grid_colour_is_kept(rng):
    red = np.zeros((1, 3, 4, 4), dtype=np.float32)
    red[0, 0] = 1.0
    px = np.asarray(plots.image_grid([red], None, scale_to=16))[
        plots.GRID_PAD + 2, plots.GRID_PAD + 2
    ]
    assert tuple(px) == (255, 0, 0)


def test_image_grid_rejects_bad_input(rng):
    with pytest.raises(ValueError):
        plots.image_grid([])
    with pytest.raises(ValueError):
        plots.image_grid([rng.random((2, 2, 8, 8))])  # 2 channels
    with pytest.raises(ValueError):
        plots.image_grid([rng.random((2, 1, 8, 8))], ["a", "b"])


def test_reconstruction_grid_rows_and_columns(rng):
    x = rng.random((12, 1, 8, 8))
    plain = plots.reconstruction_grid(x, x, n=8, scale_to=24)
    noisy = plots.reconstruction_grid(x, x, noisy=x, n=8, scale_to=24)
    pad = plots.GRID_PAD
    assert plain.height == pad + 2 * (24 + pad)
    assert noisy.height == pad + 3 * (24 + pad)
    # 8 columns shown even though 12 images were given.
    few = plots.image_grid([x[:8]], None, scale_to=24)
    assert plain.width - plots.image_grid([x[:8]], ["reconstruction"], scale_to=24).width == 0
    assert few.width == pad + 8 * (24 + pad)


def test_heatmap_overlay_size_and_hot_region():
    image = np.full((1, 16, 12), 0.5, dtype=np.float32)
    err = np.zeros((16, 12), dtype=np.float32)
    err[2:6, 3:7] = 1.0
    out = plots.heatmap_overlay(image, err)
    assert out.size == (12, 16)  # (W, H)
    arr = np.asarray(out, dtype=np.int32)
    hot, cold = arr[3, 4], arr[12, 9]
    assert hot[0] > cold[0] + 80  # red where the error is
    assert cold[2] > cold[0]  # bluish where it is not
    # A larger vmax cools the same error down.
    cooler = np.asarray(plots.heatmap_overlay(image, err, vmax=10.0), dtype=np.int32)
    assert cooler[3, 4, 0] < hot[0]


def test_heatmap_overlay_rgb_and_shape_mismatch(rng):
    out = plots.heatmap_overlay(rng.random((3, 8, 8)), rng.random((8, 8)))
    assert out.size == (8, 8) and out.mode == "RGB"
    with pytest.raises(ValueError):
        plots.heatmap_overlay(rng.random((1, 8, 8)), rng.random((4, 4)))


def test_heatmap_overlay_zero_error_is_finite():
    out = plots.heatmap_overlay(np.ones((1, 4, 4)), np.zeros((4, 4)))
    assert np.asarray(out).shape == (4, 4, 3)


def test_loss_curve_png():
    img = _decode(plots.loss_curve_png([1.0, 0.5, 0.3, 0.2], [1.1, 0.6, 0.4, 0.35], best_epoch=4))
    assert img.size == (640, 360)
    _not_blank(img)
    empty = _decode(plots.loss_curve_png([], []))
    assert empty.size == (640, 360)


def test_score_histogram_png_labelled_and_unlabelled(rng):
    scores = np.concatenate([rng.normal(1, 0.1, 50), rng.normal(2, 0.2, 10)])
    labels = [0] * 50 + [1] * 10
    img = _decode(plots.score_histogram_png(scores, labels, threshold=1.5, score_kind="mse"))
    assert img.width > 300 and img.height > 200
    _not_blank(img)
    img = _decode(
        plots.score_histogram_png(scores, None, threshold=1.5, val_scores=rng.normal(1, 0.1, 40))
    )
    assert img.width > 300 and img.height > 200
    # Identical scores must not break the bins.
    _decode(plots.score_histogram_png(np.ones(5), None, threshold=1.0))


def test_roc_pr_png(rng):
    scores = np.concatenate([rng.normal(0, 1, 40), rng.normal(2, 1, 20)])
    labels: list[int | None] = [0] * 40 + [1] * 20
    labels[0] = None  # unknown labels are left out, not an error
    img = _decode(plots.roc_pr_png(scores, labels))
    assert img.width > 2 * img.height * 0.9  # two panels side by side
    _not_blank(img)
    with pytest.raises(ValueError, match="both"):
        plots.roc_pr_png(scores[:40], [0] * 40)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_latent_map_png(rng, k):
    codes = rng.normal(size=(60, k))
    labels = ["cat"] * 20 + ["dog"] * 20 + [None] * 20
    img = _decode(plots.latent_map_png(codes, labels))
    assert img.width > 300 and img.height > 300
    _not_blank(img)
    _decode(plots.latent_map_png(codes, None))


def test_latent_map_png_rejects_bad_shape(rng):
    with pytest.raises(ValueError):
        plots.latent_map_png(rng.normal(size=(10,)))
    with pytest.raises(ValueError):
        plots.latent_map_png(rng.normal(size=(10, 3)), ["a"] * 9)


def test_plots_are_thread_safe(rng):
    """No pyplot state: plots drawn concurrently do not bleed into each other."""
    results: dict[int, bytes] = {}

    def draw(i: int) -> None:
        results[i] = plots.loss_curve_png([float(i + 1)] * 3, [])

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(_decode(png).size == (640, 360) for png in results.values())


def test_save_png_is_atomic_and_accepts_images_and_bytes(tmp_path, rng):
    grid = plots.image_grid([rng.random((2, 1, 8, 8))], None, scale_to=16)
    a = plots.save_png(grid, tmp_path / "sub" / "grid.png")
    assert _decode(a.read_bytes()).size == grid.size
    b = plots.save_png(plots.loss_curve_png([1.0, 0.5], [0.9, 0.6]), tmp_path / "loss.png")
    assert _decode(b.read_bytes()).size == (640, 360)
    plots.save_png(grid, a)  # overwrite in place
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["grid.png", "loss.png", "sub"]
    umask = os.umask(0)
    os.umask(umask)
    assert a.stat().st_mode & 0o777 == 0o666 & ~umask


def test_latent_map_of_identical_codes_has_no_nan_axis_labels() -> None:
    import warnings

    from aetool.report.plots import latent_map_png

    z = np.ones((4, 5), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's division warning would fail here
        png = latent_map_png(z, ["a", "a", "b", "b"], title="same")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
