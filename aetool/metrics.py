"""Image quality metrics: PSNR, SSIM and the per-pixel SSIM map.

Shared by denoising (PSNR/SSIM of a result against a clean reference),
anomaly scoring (``1 - ssim_map`` as an error map, :func:`gaussian_blur` for
the smoothed local error) and the training loss. All take images in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PSNR_CAP", "gaussian_blur", "psnr", "ssim", "ssim_map"]

#: PSNR of identical images (the MSE is floored so the value stays finite).
PSNR_CAP = 100.0


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (capped at 100 dB)."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(image, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return min(PSNR_CAP, 10 * math.log10(1.0 / max(mse, 1e-10)))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """Mean SSIM (7x7 Gaussian window, sigma 1.5) for ``(C, H, W)`` images in [0, 1]."""
    a = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    return float(ssim_map(a[None], b[None]).mean())


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_blur(x: Tensor, size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur per channel with reflect padding (same size out)."""
    # A plain int, so an exported graph (aetool.models.export) gets a constant kernel shape.
    c = int(x.shape[1])
    # Shrink the window on tiny images: reflect padding needs pad < side.
    smallest = min(x.shape[-2:])
    if smallest < size:
        size = max(2 * (smallest // 2) - 1, 1)
    g = _gaussian_window(size, sigma, x.device, x.dtype)
    pad = size // 2
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, size), groups=c)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, size, 1), groups=c)
    return x


def ssim_map(x: Tensor, y: Tensor, window: int = 7, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM between two batches of images in [0, 1], averaged over channels.

    Returns ``(N, H, W)``; same-size output (reflect padding) so it doubles as
    an error map.
    """
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = gaussian_blur(x, window, sigma), gaussian_blur(y, window, sigma)
    sxx = gaussian_blur(x * x, window, sigma) - mu_x**2
    syy = gaussian_blur(y * y, window, sigma) - mu_y**2
    sxy = gaussian_blur(x * y, window, sigma) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean(dim=1)
