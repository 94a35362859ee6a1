"""Reconstruction error maps and per-image anomaly scores.

A score is higher for more anomalous images. Three kinds are offered
(:data:`SCORE_KINDS`): the mean squared error, one minus the mean SSIM, and
the maximum of the smoothed squared-error map, which keeps a small defect
that a mean over the whole image would wash out. Inputs and reconstructions
are ``(N, C, H, W)`` tensors in [0, 1].
"""

from __future__ import annotations

from torch import Tensor

from aetool.errors import ConfigError
from aetool.metrics import gaussian_blur, ssim_map

__all__ = ["SCORE_KINDS", "error_maps", "image_scores", "reduce_maps"]

#: Score kinds: per-image mean squared error, 1 - mean SSIM, and the maximum
#: of the smoothed squared-error map (small defects a mean washes out).
SCORE_KINDS = ("mse", "ssim", "max-local")


def error_maps(x: Tensor, recon: Tensor, kind: str = "mse") -> Tensor:
    """Per-pixel error maps ``(N, H, W)`` for a score kind (higher = more anomalous).

    Inputs are ``(N, C, H, W)`` in [0, 1]; they are compared in float32 so
    half-precision reconstructions do not lose the small SSIM constants.
    """
    if x.shape != recon.shape:
        raise ValueError(f"inputs {tuple(x.shape)} and reconstructions {tuple(recon.shape)} differ")
    x, recon = x.float(), recon.float()
    if kind == "mse":
        return ((x - recon) ** 2).mean(dim=1)
    if kind == "ssim":
        return 1 - ssim_map(x, recon)
    if kind == "max-local":
        sq = ((x - recon) ** 2).mean(dim=1, keepdim=True)
        return gaussian_blur(sq, 5, 1.0)[:, 0]
    raise ConfigError(f"unknown score {kind!r}; choose one of: {', '.join(SCORE_KINDS)}")


def reduce_maps(maps: Tensor, kind: str = "mse") -> Tensor:
    """One score per error map ``(N,)``: the maximum for ``max-local``, else the mean."""
    if kind == "max-local":
        return maps.flatten(1).amax(dim=1)
    return maps.flatten(1).mean(dim=1)


def image_scores(x: Tensor, recon: Tensor, kind: str = "mse") -> Tensor:
    """One anomaly score per image ``(N,)`` from inputs and reconstructions.

    ``mse`` and ``ssim`` average their error map; ``max-local`` takes the
    maximum of the 5x5-smoothed squared-error map.
    """
    return reduce_maps(error_maps(x, recon, kind), kind)
