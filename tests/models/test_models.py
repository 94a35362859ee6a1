from __future__ import annotations

import pytest
import torch

from aetool.errors import ConfigError
from aetool.models.conv import conv_stages
from aetool.models.registry import create_model, list_models

SHAPES = [(1, 28, 28), (3, 8, 8), (1, 33, 17), (3, 64, 48)]


@pytest.mark.parametrize("arch", sorted(list_models()))
@pytest.mark.parametrize("shape", SHAPES)
def test_every_model_reconstructs_input_shape(arch: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = create_model(arch, channels=shape[0], height=shape[1], width=shape[2], latent_dim=8)
    x = torch.rand(2, *shape)
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1
    again = create_model(arch, **model.arch_args())
    again.load_state_dict(model.state_dict())
    assert torch.equal(again(x), y)


@pytest.mark.parametrize("arch", [a for a in sorted(list_models()) if a in ("dense", "conv")])
def test_vector_latent_has_latent_dim(arch: str) -> None:
    model = create_model(arch, channels=1, height=28, width=28, latent_dim=5)
    assert model.encode(torch.rand(3, 1, 28, 28)).shape == (3, 5)


def test_classic_conv_design() -> None:
    assert conv_stages(28, 28) == [(14, 14), (7, 7)]
    assert conv_stages(8, 8) == [(4, 4)]
    m = create_model("conv", channels=1, height=28, width=28, latent_dim=2)
    assert m.feature_shape == (64, 7, 7)


def test_dense_widths_scale_with_input() -> None:
    m = create_model("dense", channels=1, height=28, width=28, latent_dim=2)
    assert m.arch_args()["hidden"] == [256, 128]


def test_unknown_arch_and_tiny_image() -> None:
    with pytest.raises(ConfigError, match="unknown architecture"):
        create_model("nope")
    with pytest.raises(ConfigError, match="too small"):
        create_model("conv", channels=1, height=5, width=5)


def test_public_api_resolves() -> None:
    import aetool

    for name in aetool.__all__:
        assert getattr(aetool, name) is not None
    assert callable(aetool.train) and callable(aetool.score_images)
