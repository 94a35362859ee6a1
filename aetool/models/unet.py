"""``denoiser``: the fully convolutional residual U-Net denoiser.

``denoiser`` is a small residual U-Net: a strided-convolution encoder, a
transposed-convolution decoder with additive skip connections, and a last
layer that predicts the noise, so the output is ``clamp(x - noise, 0, 1)``.
It has no dense layer and no batch norm, so one set of weights runs on images
of any size (inputs are reflect-padded to a multiple of ``2**depth`` and the
output is cropped back), and it behaves the same in train and eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aetool.errors import ConfigError
from aetool.models.registry import AutoEncoder, register_model

__all__ = ["UNetDenoiser"]


def _conv_stack(cin: int, cout: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


@register_model(
    "denoiser",
    "residual U-Net denoiser: strided-conv encoder, skip connections, any image size",
)
class UNetDenoiser(AutoEncoder):
    """Residual U-Net for image denoising, fully convolutional.

    Level 0 works at full resolution with ``base_channels`` channels; each of
    the ``depth`` encoder stages halves the resolution with a 3x3 stride-2
    convolution and doubles the width (capped at ``max_channels``), followed
    by ``convs_per_level - 1`` more 3x3 convolutions (``bottleneck_convs`` at
    the deepest level). The decoder upsamples with 2x2 stride-2 transposed
    convolutions, adds the encoder features of the same level and applies
    ``convs_per_level`` convolutions. The final 3x3 convolution predicts the
    noise, initialised to zero so an untrained model is the identity.

    ``height``, ``width`` and ``latent_dim`` are accepted for registry
    compatibility and recorded, but the model works on any spatial size.

    ``encode`` returns one tensor holding every encoder level (and the padded
    input), each folded to the bottleneck resolution with pixel-unshuffle;
    ``decode`` unfolds it and runs the decoder, returning an image of the
    padded size. ``forward`` also crops back to the input size, so
    ``forward(x) == decode(encode(x))`` exactly when H and W are multiples of
    ``2**depth``.
    """

    fully_convolutional = True
    has_vector_latent = False
    channels_last_ok = True

    def __init__(
        self,
        channels: int = 1,
        height: int = 64,
        width: int = 64,
        latent_dim: int = 16,
        base_channels: int = 32,
        depth: int = 3,
        max_channels: int = 128,
        convs_per_level: int = 2,
        bottleneck_convs: int = 3,
    ) -> None:
        super().__init__()
        if channels < 1 or base_channels < 1 or depth < 1 or convs_per_level < 1:
            raise ConfigError(
                "denoiser needs channels, base_channels, depth and convs_per_level >= 1"
            )
        if bottleneck_convs < 0 or max_channels < 1:
            raise ConfigError("denoiser needs bottleneck_convs >= 0 and max_channels >= 1")
        self._arch_args: dict[str, Any] = dict(
            channels=channels,
            height=height,
            width=width,
            latent_dim=latent_dim,
            base_channels=base_channels,
            depth=depth,
            max_channels=max_channels,
            convs_per_level=convs_per_level,
            bottleneck_convs=bottleneck_convs,
        )
        self.channels = channels
        self.depth = depth
        self.widths = [min(max_channels, base_channels * 2**i) for i in range(depth + 1)]
        w = self.widths
        self.head = _conv_stack(channels, w[0], convs_per_level)
        self.down = nn.ModuleList()
        for i in range(1, depth + 1):
            n_extra = bottleneck_convs if i == depth else convs_per_level - 1
            self.down.append(
                nn.Sequential(
                    nn.Conv2d(w[i - 1], w[i], 3, stride=2, padding=1),
                    nn.ReLU(inplace=True),
                    *_conv_stack(w[i], w[i], n_extra),
                )
            )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(w[i], w[i - 1], 2, stride=2) for i in range(depth, 0, -1)
        )
        self.fuse = nn.ModuleList(
            _conv_stack(w[i - 1], w[i - 1], convs_per_level) for i in range(depth, 0, -1)
        )
        self.tail = nn.Conv2d(w[0], channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        if self.tail.bias is not None:  # always: a Conv2d has a bias unless told otherwise
            nn.init.zeros_(self.tail.bias)

    # -- internals -----------------------------------------------------------------

    def _pad(self, x: Tensor) -> Tensor:
        m = 2**self.depth
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph == 0 and pw == 0:
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def _encoder(self, x: Tensor) -> list[Tensor]:
        feats = [self.head(x)]
        for stage in self.down:
            feats.append(stage(feats[-1]))
        return feats

    def _decoder(self, x: Tensor, feats: list[Tensor]) -> Tensor:
        h = feats[-1]
        for k, (up, fuse) in enumerate(zip(self.up, self.fuse, strict=True)):
            h = fuse(up(h) + feats[-2 - k])
        noise = self.tail(h)
        return (x - noise).clamp(0.0, 1.0)

    # -- AutoEncoder API -----------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        xp = self._pad(x)
        feats = self._encoder(xp)
        parts = [F.pixel_unshuffle(xp, 2**self.depth)]
        parts += [
            F.pixel_unshuffle(f, 2 ** (self.depth - i)) if i < self.depth else f
            for i, f in enumerate(feats)
        ]
        return torch.cat(parts, dim=1)

    def decode(self, z: Tensor) -> Tensor:
        sizes = [self.channels * 4**self.depth]
        sizes += [c * 4 ** (self.depth - i) for i, c in enumerate(self.widths)]
        if z.shape[1] != sum(sizes):
            raise ConfigError(f"denoiser code has {z.shape[1]} channels, expected {sum(sizes)}")
        parts = torch.split(z, sizes, dim=1)
        xp = F.pixel_shuffle(parts[0], 2**self.depth)
        feats = [
            F.pixel_shuffle(p, 2 ** (self.depth - i)) if i < self.depth else p
            for i, p in enumerate(parts[1:])
        ]
        return self._decoder(xp, feats)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        xp = self._pad(x)
        out = self._decoder(xp, self._encoder(xp))
        return out[..., :h, :w]
