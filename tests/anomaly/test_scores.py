"""Tests for aetool.anomaly.scores: error maps and per-image scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aetool.anomaly.scores import SCORE_KINDS, error_maps, image_scores, reduce_maps
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


def test_model_score_is_the_top_share_and_centred_subtracts_the_maps_mean() -> None:
    # 10x10 maps: a busy one (0.4 everywhere, one 0.9 pixel) and a quiet one (0.0
    # everywhere, one 0.9 pixel); the top 1% of 100 pixels is that one pixel.
    busy = torch.full((10, 10), 0.4)
    busy[3, 4] = 0.9
    quiet = torch.zeros(10, 10)
    quiet[7, 1] = 0.9
    maps = torch.stack([busy, quiet])
    assert reduce_maps(maps, "model").tolist() == pytest.approx([0.9, 0.9])
    # centred: 0.9 - mean; busy mean = (99 * 0.4 + 0.9) / 100, quiet mean = 0.009
    want = [0.9 - (99 * 0.4 + 0.9) / 100, 0.9 - 0.009]
    assert reduce_maps(maps, "model", centred=True).tolist() == pytest.approx(want)
    # 250 pixels: the top 1% is ceil(2.5) = 3 pixels
    m = torch.zeros(1, 250)
    m[0, :3] = torch.tensor([1.0, 0.5, 0.3])
    assert reduce_maps(m, "model").item() == pytest.approx(0.6)
    assert reduce_maps(m, "model", centred=True).item() == pytest.approx(0.6 - 1.8 / 250)
