"""Denoise one image held in memory: colour space, tiled passes, ensemble, refinement.

:func:`denoise_array` takes a ``(C, H, W)`` float array, converts RGB to the
opponent colour space for a grayscale model (:mod:`aetool.denoise.color`),
runs the model whole or in tiles (:mod:`aetool.denoise.tiling`), optionally
averages over rotated and flipped views (the ensemble), and refines each plane.

Refinement. With ``refine``, each plane the model denoised is refined by
collaborative Wiener filtering of the noisy plane guided by the model's output
(:mod:`aetool.denoise.refine`, BM3D's second stage), at the plane's estimated
noise level (that of the noisy plane minus the model's output,
:func:`~aetool.denoise.noise_level.refine_sigma`), blended with the model's
output and skipped for planes whose estimated sigma is 30/255 or more. It
gains most on fine texture (BENCHMARKS.md gives PSNR and time). It runs on the
device that ran the model, in 510 px tiles of its own on large images (on the CPU,
tiles or bands of the plane side by side, one a thread).
"""

from __future__ import annotations

import numpy as np
import torch

from aetool.denoise.cancel import _check_cancel
from aetool.denoise.color import COLOR_MODES, _from_opponent, _to_opponent
from aetool.denoise.noise_level import refine_sigma
from aetool.denoise.refine import PATCH, refine_weight
from aetool.denoise.refine import refine as refine_plane
from aetool.denoise.tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    _denoise_one,
    _model_channels,
    _model_device,
)
from aetool.devices import fast_layout, resolve_device
from aetool.errors import ConfigError
from aetool.models.file import LoadedModel
from aetool.models.registry import AutoEncoder

__all__ = ["ENSEMBLE_SIZES", "denoise_array"]


@torch.no_grad()
def denoise_array(
    model: AutoEncoder | LoadedModel,
    image: np.ndarray,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    ensemble: int = 1,
    color: str = "opponent",
    refine: bool = False,
) -> np.ndarray:
    """Denoise one image of any size.

    Args:
        model: a trained model (or loaded model file).
        image: float ``(C, H, W)`` in [0, 1] with C 1 or 3 (or ``(H, W)``).
        tile: tile side for fully convolutional models (fixed-size models use
            their training size).
        overlap: overlap between neighbouring tiles, in pixels (at most half a tile).
        batch_size: tiles per forward pass; for fully convolutional models it
            sets a pixel budget per pass, ``batch_size * tile**2``: an image (each
            plane) that fits runs whole, and narrow edge tiles pack more per pass.
        device: where to run; default the model's device. The model's
            weights are laid out in place the fastest way for the device it is
            on (channels-last on the CPU, for aetool's ``conv`` and
            ``denoiser``: :func:`~aetool.devices.fast_layout`); values are
            unchanged and the model stays trainable.
        ensemble: 1, 2, 4 or 8: average the model's outputs over that many
            rotations/flips of the image (undone before averaging), N times
            the work and two more image-sized buffers. It helps models trained
            on flipped/rotated patches (the bundled denoiser and ``--patch-size``
            training); a model that never saw rotated images may get worse.
        color: for a grayscale model on an RGB image, ``opponent`` (denoise
            luminance and two colour differences) or ``channels`` (R, G and B
            one by one); see the module notes.
        refine: follow the model with collaborative Wiener filtering of the
            noisy image, the model's output as pilot (:func:`aetool.denoise.refine.refine`:
            BM3D's second stage, blended with the pilot), each plane at its own
            estimated noise level (:func:`~aetool.denoise.noise_level.refine_sigma`:
            the estimate of what the model took away), skipped for planes whose
            estimate is 30/255 or more (the luminance of a colour picture carries
            0.58 of its sigma). It is meant for Gaussian-like noise and gains most
            on fine texture (BENCHMARKS.md gives PSNR and time); it runs on the
            device that ran the model (on the CPU, on all of torch's threads).

    Returns:
        float32 array of the input's shape, in [0, 1].
    """
    return _denoise_arrays(
        model, [image], tile=tile, overlap=overlap, batch_size=batch_size, device=device,
        ensemble=ensemble, colors=[color], refines=[refine],
    )[0][0]  # fmt: skip


@torch.no_grad()
def _denoise_arrays(
    model: AutoEncoder | LoadedModel,
    images: list[np.ndarray],
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    ensemble: int = 1,
    colors: list[str],
    refines: list[bool],
) -> list[tuple[np.ndarray, bool]]:
    """:func:`denoise_array` of several images of one height and width, each with its own
    colour mode and refinement: for a one-channel model their planes go through the model
    together (so small images share forward passes, ``batch_size * tile**2`` pixels each),
    with the same result as one by one, every plane being the model's input on its own."""
    if isinstance(model, LoadedModel):
        model = model.model
    dev = resolve_device(device) if device is not None else _model_device(model)
    fast_layout(model, _model_device(model))
    prepared = [
        _prepare(model, image, tile, overlap, ensemble, color, refine)
        for image, color, refine in zip(images, colors, refines, strict=True)
    ]
    if len({x.shape[1:] for x, _, _ in prepared}) > 1:
        raise ConfigError("images denoised together must have one height and width")
    if _model_channels(model) == 1 and len(prepared) > 1:
        planes = np.concatenate([x for x, _, _ in prepared])
        stacked = _model_pass(model, planes, tile, overlap, batch_size, dev, ensemble)
        cuts = np.cumsum([len(x) for x, _, _ in prepared])[:-1]
        results = np.split(stacked, cuts)
    else:
        results = [_model_pass(model, x, tile, overlap, batch_size, dev, ensemble)
                   for x, _, _ in prepared]  # fmt: skip
    out = []
    for (x, squeeze, opponent), result, refine in zip(prepared, results, refines, strict=True):
        refined = _refine_planes(x, result, dev) if refine else False
        if opponent:
            result = np.clip(_from_opponent(result), 0.0, 1.0)
        out.append((np.ascontiguousarray(result[0] if squeeze else result), refined))
    return out


def _prepare(
    model: AutoEncoder,
    image: np.ndarray,
    tile: int,
    overlap: int,
    ensemble: int,
    color: str,
    refine: bool,
) -> tuple[np.ndarray, bool, bool]:
    """The (C, H, W) float32 planes the model sees, whether the input was 2-D, and whether
    they are in the opponent colour space."""
    x = np.asarray(image, dtype=np.float32)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ConfigError(f"expected a (C, H, W) image with 1 or 3 channels, got {x.shape}")
    _check_options(tile, overlap, ensemble, color, refine)
    opponent = color == "opponent" and x.shape[0] == 3 and _model_channels(model) == 1
    return (_to_opponent(x) if opponent else x), squeeze, opponent


def _model_pass(
    model: AutoEncoder,
    x: np.ndarray,
    tile: int,
    overlap: int,
    batch_size: int,
    dev: torch.device,
    ensemble: int,
) -> np.ndarray:
    """The model's output for (C, H, W) planes: whole or tiled, averaged over the ensemble."""
    result = _denoise_one(model, x, tile, overlap, batch_size, dev)
    if ensemble > 1:
        for k in range(1, ensemble):
            view = _denoise_one(model, _orient(x, k), tile, overlap, batch_size, dev)
            result += _orient(view, k, inverse=True)
        result /= ensemble
    return result


def _check_options(tile: int, overlap: int, ensemble: int, color: str, refine: bool) -> None:
    if tile < 8:
        raise ConfigError(f"tile size must be at least 8 pixels, not {tile}")
    if overlap < 0:
        raise ConfigError(f"tile overlap must be >= 0, not {overlap}")
    if ensemble not in ENSEMBLE_SIZES:
        raise ConfigError(f"ensemble must be one of 1, 2, 4, 8, not {ensemble}")
    if color not in COLOR_MODES:
        raise ConfigError(f"color must be one of {', '.join(COLOR_MODES)}, not {color!r}")
    if not isinstance(refine, (bool, np.bool_)):
        raise ConfigError(f"refine must be True or False, not {refine!r}")


def _refine_planes(noisy: np.ndarray, result: np.ndarray, dev: torch.device) -> bool:
    """Refine each plane of ``result`` in place (the model's output for ``noisy``) on
    ``dev`` where its estimated noise level allows; whether any plane changed."""
    refined = False
    for c in range(len(result)):
        sigma = refine_sigma(noisy[c], result[c])
        if refine_weight(sigma) > 0 and min(noisy.shape[1:]) >= 2 * PATCH:
            plane = refine_plane(noisy[c], result[c], sigma, check=_check_cancel, device=dev)
            result[c] = np.clip(plane, 0.0, 1.0)
            refined = True
    return refined


#: Accepted ``ensemble`` sizes (the first N of :data:`_ORIENTATIONS`).
ENSEMBLE_SIZES = (1, 2, 4, 8)


#: (quarter turns, flip) of each ensemble member, in order: the first N are used.
_ORIENTATIONS = [(0, False), (0, True), (2, False), (2, True), (1, False), (1, True),
                 (3, False), (3, True)]  # fmt: skip


def _orient(x: np.ndarray, k: int, inverse: bool = False) -> np.ndarray:
    """Ensemble member ``k``'s view of a (C, H, W) array, or (``inverse``) its undoing."""
    turns, flip = _ORIENTATIONS[k]
    if not inverse:
        y = np.rot90(x, turns, axes=(1, 2))
        return np.ascontiguousarray(y[:, :, ::-1] if flip else y)
    y = x[:, :, ::-1] if flip else x
    return np.rot90(y, -turns, axes=(1, 2))
