"""Tests for the fully convolutional denoiser architecture."""

from __future__ import annotations

import pytest
import torch

from aetool.errors import ConfigError
from aetool.models.registry import create_model, list_models

SMALL = dict(base_channels=8, depth=3, max_channels=16, convs_per_level=1, bottleneck_convs=1)


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    # The last layer starts at zero (identity model); give every weight a value.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def test_registered() -> None:
    assert "denoiser" in list_models()
    model = create_model("denoiser")
    assert model.fully_convolutional is True
    assert model.has_vector_latent is False


@pytest.mark.parametrize(
    ("shape", "channels"),
    [((1, 1, 37, 53), 1), ((2, 3, 64, 64), 3), ((1, 1, 5, 3), 1), ((1, 3, 8, 9), 3)],
)
def test_forward_shape_range(shape: tuple[int, int, int, int], channels: int) -> None:
    torch.manual_seed(0)
    model = _randomised(create_model("denoiser", channels=channels, **SMALL))
    x = torch.rand(shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_untrained_model_is_identity_on_valid_input() -> None:
    model = create_model("denoiser", **SMALL).eval()
    x = torch.rand(1, 1, 20, 30)
    with torch.no_grad():
        assert torch.equal(model(x), x)


def test_out_of_range_input_is_clamped() -> None:
    model = _randomised(create_model("denoiser", **SMALL))
    x = torch.randn(1, 1, 32, 32) * 2
    with torch.no_grad():
        y = model(x)
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_arch_args_round_trip() -> None:
    model = _randomised(create_model("denoiser", channels=3, height=48, width=40, **SMALL))
    args = model.arch_args()
    assert args["channels"] == 3 and args["height"] == 48 and args["latent_dim"] == 16
    clone = create_model("denoiser", **args)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


def test_encode_decode_matches_forward() -> None:
    model = _randomised(create_model("denoiser", **SMALL))
    x = torch.rand(2, 1, 32, 40)  # multiples of 2**depth: no crop needed
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape[0] == 2 and z.shape[-2:] == (4, 5)
        torch.testing.assert_close(model.decode(z), model(x))


def test_gradients_flow() -> None:
    model = create_model("denoiser", **SMALL)
    x = torch.rand(2, 1, 24, 24)
    loss = (model(x + 0.1 * torch.randn_like(x)) - x).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        create_model("denoiser", depth=0)
    with pytest.raises(ConfigError):
        create_model("denoiser", not_an_arg=1)
