"""``draem``: a discriminative defect-segmentation network trained on simulated defects.

After DRAEM (Zavrtanik et al., ICCV 2021): a U-Net sees an image and predicts,
per pixel, the probability that it belongs to a defect. It is trained from
normal images alone, on copies with simulated defects pasted in
(:mod:`aetool.training.defects`) and their masks as targets
(:mod:`aetool.training.draem`). The optional reconstructive subnetwork of the
paper (an encoder-decoder restoring the normal image, whose output the U-Net
sees beside the input) is built with ``reconstructive=True``; without it the
model trains about three times as many steps in the same CPU time, which on
the benchmarks gave the better model within a fixed budget (BENCHMARKS.md).

Both networks start with a lossless pixel-unshuffle (space-to-depth by
``unshuffle``), so no convolution runs at full resolution: most of the
speed-up on a CPU. Any input size works; it is padded by reflection to a
multiple of ``unshuffle * 2**depth`` and the map cropped back.

With ``flip_average`` the map is the mean of the maps of the image and of its
left-right and up-down mirror images (test-time augmentation; what ``aetool
train`` builds): on held-out ELPV cells it ranked real defects higher for
every model tried (BENCHMARKS.md, issue 17) at three times the inference cost.
With ``centred_score`` (also what ``aetool train`` builds) the image score
subtracts the map's mean from the mean of its top 1%: a normal cell whose
grain makes the whole map warm scores lower than a local defect.

``forward`` returns the reconstruction (the input itself without the
reconstructive subnetwork), so the reconstruction-error score kinds stay
defined; :meth:`DraemModel.anomaly_map` is what scoring uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aetool.models.registry import AutoEncoder, register_model

__all__ = ["DraemModel"]


def _block(ci: int, co: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(ci, co, 3, padding=1, bias=False),
        nn.BatchNorm2d(co),
        nn.ReLU(inplace=True),
        nn.Conv2d(co, co, 3, padding=1, bias=False),
        nn.BatchNorm2d(co),
        nn.ReLU(inplace=True),
    )


def _widths(base: int, depth: int) -> list[int]:
    return [base * min(2**i, 8) for i in range(depth + 1)]


class _Reconstructive(nn.Module):
    """Encoder-decoder without skips: restores a normal image from a defective one."""

    def __init__(self, channels: int, base: int, depth: int, unshuffle: int) -> None:
        super().__init__()
        self.u = unshuffle
        ch = _widths(base, depth)
        first = _block(channels * unshuffle**2, ch[0])
        self.enc = nn.ModuleList([first] + [_block(ch[i], ch[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList(
            [nn.Conv2d(ch[i + 1], ch[i + 1], 3, padding=1) for i in reversed(range(depth))]
        )
        self.dec = nn.ModuleList([_block(ch[i + 1], ch[i]) for i in reversed(range(depth))])
        self.out = nn.Conv2d(ch[0], channels * unshuffle**2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.enc[0](F.pixel_unshuffle(x, self.u))
        for e in self.enc[1:]:
            h = e(F.max_pool2d(h, 2))
        for up, dec in zip(self.up, self.dec, strict=True):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = dec(F.relu(up(h)))
        return torch.sigmoid(F.pixel_shuffle(self.out(h), self.u))


class _Discriminative(nn.Module):
    """U-Net from the input (and reconstruction) to one defect logit per pixel."""

    def __init__(self, in_ch: int, base: int, depth: int, unshuffle: int) -> None:
        super().__init__()
        self.u = unshuffle
        ch = _widths(base, depth)
        first = _block(in_ch * unshuffle**2, ch[0])
        self.enc = nn.ModuleList([first] + [_block(ch[i], ch[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList(
            [nn.Conv2d(ch[i + 1], ch[i], 3, padding=1) for i in reversed(range(depth))]
        )
        self.dec = nn.ModuleList([_block(2 * ch[i], ch[i]) for i in reversed(range(depth))])
        self.out = nn.Conv2d(ch[0], unshuffle**2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        h = F.pixel_unshuffle(x, self.u)
        for i, e in enumerate(self.enc):
            h = e(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            h = F.relu(up(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)))
            h = dec(torch.cat([h, skips.pop()], 1))
        return F.pixel_shuffle(self.out(h), self.u)


@register_model("draem", "defect segmentation trained on simulated defects (DRAEM)")
class DraemModel(AutoEncoder):
    """Defect-segmentation U-Net (plus optional reconstructive network).

    Args:
        channels: image channels.
        height, width: the training size (recorded; any size is accepted).
        latent_dim: unused (kept so every architecture takes the same arguments).
        base_channels: width of the first stage; doubles per stage up to 8x.
        depth: pooling stages.
        unshuffle: space-to-depth factor of the first layer.
        reconstructive: also build the reconstructive subnetwork.
        flip_average: :meth:`anomaly_map` averages the maps of the image and of its
            mirror images.
        centred_score: the image score (``--score model``) is the mean of the
            map's top 1% less the map's mean (:func:`aetool.anomaly.scores.reduce_maps`).
    """

    fully_convolutional = True
    has_vector_latent = False
    channels_last_ok = True

    def __init__(
        self,
        channels: int = 1,
        height: int = 128,
        width: int = 128,
        latent_dim: int = 16,
        base_channels: int = 16,
        depth: int = 4,
        unshuffle: int = 2,
        reconstructive: bool = False,
        flip_average: bool = False,
        centred_score: bool = False,
    ) -> None:
        super().__init__()
        self._arch_args = dict(
            channels=channels, height=height, width=width, latent_dim=latent_dim,
            base_channels=base_channels, depth=depth, unshuffle=unshuffle,
            reconstructive=reconstructive, flip_average=flip_average,
            centred_score=centred_score,
        )  # fmt: skip
        self.flip_average = flip_average
        self.centred_score = centred_score
        self.multiple = unshuffle * 2**depth
        self.rec = (
            _Reconstructive(channels, base_channels, depth, unshuffle) if reconstructive else None
        )
        seg_in = 2 * channels if reconstructive else channels
        self.seg = _Discriminative(seg_in, base_channels, depth, unshuffle)

    def _pad(self, x: Tensor) -> tuple[Tensor, int, int]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return x, h, w

    def outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction, defect logits ``(N, 1, H, W)``) for a batch in [0, 1]."""
        xp, h, w = self._pad(x)
        if self.rec is not None:
            recon = self.rec(xp)
            logits = self.seg(torch.cat([xp, recon], 1))
            return recon[..., :h, :w], logits[..., :h, :w]
        return x, self.seg(xp)[..., :h, :w]

    def forward(self, x: Tensor) -> Tensor:
        return self.outputs(x)[0]

    def anomaly_map(self, x: Tensor) -> Tensor:
        """Per-pixel defect probability ``(N, 1, H, W)`` in [0, 1]."""
        p = torch.sigmoid(self.outputs(x)[1].float())
        if not self.flip_average:
            return p
        for dims in ((-1,), (-2,)):
            p = p + torch.sigmoid(self.outputs(x.flip(dims))[1].float()).flip(dims)
        return p / 3
