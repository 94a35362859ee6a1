"""``dense``: the classic fully connected autoencoder.

The image is flattened and passed through linear layers down to the latent
code and back; hidden widths scale with the input size. It only works at its
training size.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from aetool.models.registry import AutoEncoder, register_model

__all__ = ["DenseAutoEncoder"]


def _pow2_near(x: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, 2 ** round(math.log2(max(x, 1.0))))))


@register_model("dense", "fully connected encoder/decoder (784-256-128-k for 28x28)")
class DenseAutoEncoder(AutoEncoder):
    """The classic fully connected autoencoder.

    Hidden widths scale with the input: about a third of the input size,
    rounded to a power of two, then half of that (784 -> 256 -> 128 -> k).
    """

    def __init__(
        self,
        channels: int = 1,
        height: int = 28,
        width: int = 28,
        latent_dim: int = 16,
        hidden: list[int] | None = None,
    ) -> None:
        super().__init__()
        d = channels * height * width
        if hidden is None:
            h1 = _pow2_near(d / 3, 32, 1024)
            hidden = [h1, max(16, h1 // 2)]
        self._arch_args = dict(
            channels=channels,
            height=height,
            width=width,
            latent_dim=latent_dim,
            hidden=list(hidden),
        )
        self.shape = (channels, height, width)
        enc: list[nn.Module] = [nn.Flatten()]
        prev = d
        for h in hidden:
            enc += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            prev = h
        enc.append(nn.Linear(prev, latent_dim))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        prev = latent_dim
        for h in reversed(hidden):
            dec += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            prev = h
        dec += [nn.Linear(prev, d), nn.Sigmoid(), nn.Unflatten(1, self.shape)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)
