"""The opponent colour space a grayscale model denoises an RGB image in.

Luminance (R+G+B)/3 and two colour differences (R-B)/2 and (R-2G+B)/4, offset
into [0, 1]. The three are orthogonal, so independent noise of equal sigma in
R, G and B stays independent, while the colour differences of natural images
are smooth and the luminance carries a third of the noise variance; the model
then removes more noise than on R, G and B one by one
(``benchmarks/denoise_color.py``, BENCHMARKS.md). ``color="channels"``
denoises R, G and B separately, for images whose channels are unrelated
measurements (fluorescence stains, multispectral bands), and for JPEGs stored
with subsampled colour (4:2:0, 4:2:2; most encoders' default): the
subsampling averages the colour noise away, so what is left is shared by R, G
and B, and there the opponent space loses. ``color="auto"`` (the default of
:func:`~aetool.denoise.pipeline.denoise_images` and ``aetool denoise``) picks
``channels`` for such JPEGs and ``opponent`` otherwise;
:func:`~aetool.denoise.array.denoise_array`, which sees only pixels, defaults
to ``opponent``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLOR_MODES"]

#: ``color`` choices: how a grayscale model treats an RGB image.
COLOR_MODES = ("opponent", "channels")


#: RGB -> (luminance, R-B, R-2G+B) scaled so each lies in [0, 1] after :data:`_OPP_OFFSET`.
_OPP = np.array([[1 / 3, 1 / 3, 1 / 3], [1 / 2, 0, -1 / 2], [1 / 4, -1 / 2, 1 / 4]])


_OPP_INV = np.linalg.inv(_OPP)


_OPP_OFFSET = np.array([0.0, 0.5, 0.5])


def _to_opponent(x: np.ndarray) -> np.ndarray:
    """(3, H, W) RGB in [0, 1] -> opponent planes, each in [0, 1]."""
    z = np.tensordot(_OPP.astype(np.float32), x, axes=1)
    z += _OPP_OFFSET.astype(np.float32)[:, None, None]
    return z


def _from_opponent(z: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_to_opponent` (not clipped)."""
    z = z - _OPP_OFFSET.astype(np.float32)[:, None, None]
    return np.tensordot(_OPP_INV.astype(np.float32), z, axes=1)
