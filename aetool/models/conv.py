"""``conv``: the convolutional autoencoder with a dense bottleneck.

Stride-2 convolutions shrink the image stage by stage, a linear layer maps the
last feature map to the latent code, and transposed convolutions mirror the
encoder back to the input size (odd sizes restored exactly by their output
padding). The dense bottleneck fixes the input size to the training size.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from aetool.errors import ConfigError
from aetool.models.registry import AutoEncoder, register_model

__all__ = ["ConvAutoEncoder", "conv_stages"]


def conv_stages(height: int, width: int, min_side: int = 4) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 stage: halve while the short side stays >= min_side.

    28x28 gives [(14, 14), (7, 7)] (the classic design); 8x8 gives [(4, 4)].
    """
    sizes: list[tuple[int, int]] = []
    h, w = height, width
    while min(h, w) / 2 >= min_side and len(sizes) < 7:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        sizes.append((h, w))
    return sizes


@register_model("conv", "strided-conv encoder, transposed-conv decoder, dense bottleneck")
class ConvAutoEncoder(AutoEncoder):
    """Convolutional autoencoder with a dense bottleneck of ``latent_dim``.

    Each stage is a 3x3 stride-2 convolution (28 -> 14 -> 7); stages are added
    while the short side stays at least 4 pixels, channels double from
    ``base_channels`` up to 256. The decoder mirrors it with transposed
    convolutions whose output padding restores odd sizes exactly.
    """

    channels_last_ok = True  # flatten/unflatten only; Linear outputs are viewed

    def __init__(
        self,
        channels: int = 1,
        height: int = 28,
        width: int = 28,
        latent_dim: int = 16,
        base_channels: int = 32,
    ) -> None:
        super().__init__()
        self._arch_args = dict(
            channels=channels,
            height=height,
            width=width,
            latent_dim=latent_dim,
            base_channels=base_channels,
        )
        sizes = conv_stages(height, width)
        if not sizes:
            raise ConfigError(
                f"image size {height}x{width} is too small for the conv model (needs at least 7x7)"
            )
        chans = [min(256, base_channels * 2**i) for i in range(len(sizes))]
        enc: list[nn.Module] = []
        prev = channels
        for c in chans:
            enc += [nn.Conv2d(prev, c, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            prev = c
        self.features = nn.Sequential(*enc)
        fh, fw = sizes[-1]
        self.feature_shape = (chans[-1], fh, fw)
        flat = chans[-1] * fh * fw
        self.to_latent = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, flat), nn.ReLU(inplace=True))
        dec: list[nn.Module] = []
        targets = [(height, width)] + sizes[:-1]  # size each decoder stage must produce
        out_chans = [channels] + chans[:-1]
        for i in reversed(range(len(sizes))):
            th, tw = targets[i]
            op = (1 - th % 2, 1 - tw % 2)  # (in-1)*2 - 2 + 3 + op == target
            dec.append(
                nn.ConvTranspose2d(chans[i], out_chans[i], 3, 2, padding=1, output_padding=op)
            )
            dec.append(nn.ReLU(inplace=True) if i > 0 else nn.Sigmoid())
        self.reconstruct = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> Tensor:
        return self.to_latent(self.features(x).flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        return self.reconstruct(self.from_latent(z).view(-1, *self.feature_shape))
