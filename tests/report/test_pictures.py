"""Tests for aetool.report.pictures heatmap panels and aetool.report.charts colours."""

from __future__ import annotations

import numpy as np
import pytest

from aetool.report import charts, pictures


def test_contour_is_the_inside_boundary() -> None:
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    edge = pictures.contour(m)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any() and edge[1, 1:5].all()
    full = pictures.contour(np.ones((3, 3), bool))
    assert full.sum() == 8 and not full[1, 1]  # regions touching the border are closed


def test_panel_cells_colour_bar_and_contour() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((1, 8, 8))
    err = np.zeros((8, 8))
    err[2:5, 3:6] = 0.5
    mask = err > 0
    panel = pictures.heatmap_panel(image, err, vmax=0.4, pixel_threshold=0.2, mask=mask)
    pad, k = pictures.GRID_PAD, 32  # 8 px enlarged 32x to 256
    assert panel.height == 8 * k + 20 + 2 * pad
    px = np.asarray(panel)
    top = 20 + pad
    cell = lambda i: px[top : top + 8 * k, pad + i * (8 * k + pad) :][:, : 8 * k]  # noqa: E731
    # image (nearest neighbour), ground truth, map, overlay
    np.testing.assert_array_equal(cell(0)[::k, ::k, 0], np.round(image[0] * 255).astype(np.uint8))
    assert (cell(1)[::k, ::k, 0] > 127).tolist() == mask.tolist()
    heat = cell(2)
    assert heat[3 * k + k // 2, 4 * k + k // 2, 0] > 150  # hot inside: red
    assert heat[7 * k, 0, 2] > heat[7 * k, 0, 0]  # cold outside: blue
    # White contour along the hot square's edge, on the map and on the overlay.
    assert (heat[2 * k, 3 * k : 6 * k] == 255).all()
    assert (cell(3)[2 * k, 3 * k : 6 * k] == 255).all()
    assert not (heat[3 * k + 5, 4 * k + 5] == 255).all()
    # The colour bar right of the cells: hottest colour at its top, coldest at its bottom.
    bar_x = pad + 4 * (8 * k + pad) + 4
    assert px[top + 7, bar_x, 0] > px[top + 7, bar_x, 2]
    assert px[top + 8 * k - 8, bar_x, 2] > px[top + 8 * k - 8, bar_x, 0]
    # Without a mask: three cells; without a threshold: no white contour.
    plain = np.asarray(pictures.heatmap_panel(image, err, vmax=0.4))
    assert plain.shape[1] < px.shape[1] - 8 * k
    assert not (plain[top + 2 * k, pad + 2 * (8 * k + pad) + 3 * k] == 255).all()


def test_panel_bounds_cell_size() -> None:
    big = pictures.heatmap_panel(np.zeros((1, 2000, 1000)), np.zeros((2000, 1000)), min_size=64)
    assert big.height == pictures.PANEL_MAX_SIZE + 28
    with pytest.raises(ValueError, match="does not match"):
        pictures.heatmap_panel(np.zeros((1, 8, 8)), np.zeros((4, 4)))


def test_label_colours_agree_across_charts() -> None:
    others = iter(["c1", "c2"])
    assert charts._label_color("normal", others) == charts.NORMAL_COLOR
    assert charts._label_color("0", others) == charts.NORMAL_COLOR
    assert charts._label_color("anomaly", others) == charts.ANOMALY_COLOR
    assert charts._label_color("1", others) == charts.ANOMALY_COLOR
    assert charts._label_color("unlabeled", others) == charts.OTHER_COLOR
    assert charts._label_color("crack", others) == "c1"
    # Neither the normal blue nor the anomalous red is a class colour.
    from matplotlib.colors import to_rgba

    palette = {tuple(np.round(c, 3)) for c in charts._CLASS_PALETTE}
    for name in (charts.NORMAL_COLOR, charts.ANOMALY_COLOR, "tab:blue", "tab:red"):
        assert tuple(np.round(to_rgba(name), 3)) not in palette
