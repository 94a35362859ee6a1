"""The simulated-defect generator: coverage, reproducibility, masks, shapes."""

from __future__ import annotations

import numpy as np
import pytest

from aetool.training.defects import KINDS, perlin, perlin_mask, simulate_defects


def _normal(n: int = 24, size: int = 40, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.45 + 0.1 * np.sin(6 * xx) + 0.05 * yy
    x = base[None, None] + rng.normal(0, 0.01, (n, channels, size, size))
    return x.clip(0, 1).astype(np.float32)


def test_shapes_and_masks_mark_exactly_the_changed_pixels() -> None:
    x = _normal(channels=3)
    out, masks = simulate_defects(x, 1, p_anomaly=1.0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert masks.shape == (24, 1, 40, 40)
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert out.min() >= 0 and out.max() <= 1
    # the mask is exactly the pixels changed by more than 0.02; every image got a defect
    diff = np.abs(out - x).max(1)
    assert np.array_equal(masks[:, 0] == 1, diff > 0.02)
    assert diff[masks[:, 0] == 0].max() <= 0.02
    assert (masks.sum((1, 2, 3)) > 0).mean() >= 0.9


def test_coverage_fraction_is_in_range() -> None:
    out, masks = simulate_defects(_normal(n=60), 3, p_anomaly=1.0)
    cover = masks.mean((1, 2, 3))
    # a defect can leave a periodic image unchanged (a shifted copy of itself): rare
    assert (cover > 0).mean() >= 0.9 and cover.max() <= 0.6
    assert 0.003 < cover.mean() < 0.25


def test_share_of_defective_images_follows_p_anomaly() -> None:
    _, masks = simulate_defects(_normal(n=200, size=24), 5, p_anomaly=0.5)
    share = (masks.sum((1, 2, 3)) > 0).mean()
    assert 0.35 < share < 0.65
    same, none = simulate_defects(_normal(n=8), 5, p_anomaly=0.0)
    assert np.array_equal(same, _normal(n=8)) and none.sum() == 0


def test_same_seed_same_defects_other_seed_others() -> None:
    x = _normal()
    a1, m1 = simulate_defects(x, 42)
    a2, m2 = simulate_defects(x, 42)
    b, mb = simulate_defects(x, 43)
    assert np.array_equal(a1, a2) and np.array_equal(m1, m2)
    assert not np.array_equal(m1, mb)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_alone_changes_the_image_inside_its_mask(kind: str) -> None:
    x = _normal(n=6, size=48)
    sources = [np.zeros((3, 20, 30), np.float32)]  # other size and channels: tiled, averaged
    out, masks = simulate_defects(x, 7, p_anomaly=1.0, weights={kind: 1.0}, sources=sources)
    assert masks.sum() > 0
    assert np.abs(out - x).max(1)[masks[:, 0] == 0].max() <= 0.02


def test_perlin_noise_and_region_size() -> None:
    rng = np.random.default_rng(0)
    n = perlin((37, 50), (4, 8), rng)
    assert n.shape == (37, 50) and -1.5 < n.min() < 0 < n.max() < 1.5
    m = perlin_mask(64, 64, np.random.default_rng(1))
    assert 0.002 <= m.mean() <= 0.25
