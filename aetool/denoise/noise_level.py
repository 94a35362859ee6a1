"""Noise level estimates, in [0, 1] units (multiply by 255 for 8-bit levels).

``sigma_est`` in the denoising results is :func:`estimate_sigma` of the input:
the standard deviation of Gaussian noise, from the median absolute
finest-scale diagonal Haar wavelet coefficient (Donoho's MAD estimator),
averaged over colour channels (for float and 32-bit images mapped from their
own value range, a fraction of that range). :func:`refine_sigma` is the level
the refinement (:mod:`aetool.denoise.refine`) runs at.
"""

from __future__ import annotations

import numpy as np

__all__ = ["estimate_sigma", "refine_sigma"]

_MAD_TO_SIGMA = 1 / 0.6744897501960817


def estimate_sigma(image: np.ndarray) -> float:
    """Estimate the Gaussian noise level of an image in [0, 1] units.

    Donoho's estimator: the median absolute value of the finest diagonal Haar
    wavelet coefficients divided by 0.6745, averaged over channels.

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` float array in [0, 1].
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    h, w = (x.shape[1] // 2) * 2, (x.shape[2] // 2) * 2
    if h == 0 or w == 0:
        return 0.0
    x = x[:, :h, :w]
    hh = (x[:, 0::2, 0::2] - x[:, 0::2, 1::2] - x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) * 0.5
    per_channel = np.median(np.abs(hh).reshape(len(hh), -1), axis=1) * _MAD_TO_SIGMA
    return float(per_channel.mean())


def refine_sigma(noisy: np.ndarray, pilot: np.ndarray) -> float:
    """The noise level the refinement runs at: :func:`estimate_sigma` of ``noisy - pilot``.

    The wavelet estimate of the noisy plane itself counts fine texture as noise;
    with the denoiser's output taken away first, little texture is left in the
    residual, and the refinement scored higher on the tuning pictures
    (:mod:`aetool.denoise.refine`) than with the plain estimate.

    Args:
        noisy: ``(H, W)`` plane with its noise, in [0, 1].
        pilot: ``(H, W)`` the denoiser's output for it.
    """
    return estimate_sigma(np.asarray(noisy, np.float32) - np.asarray(pilot, np.float32))
