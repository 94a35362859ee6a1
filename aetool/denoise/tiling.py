"""The model's pass over an image of any size: whole, or in overlapping blended tiles.

Fully convolutional models run on the whole image when it has no more pixels
than one batch of tiles (``batch_size * tile**2``: 8 tiles of 256 px by
default, so up to 724x724), else on overlapping ``tile`` x ``tile`` tiles.
Fixed-size models (``conv``, ``dense``) always run on tiles of their training
size. Tiles overlap by ``overlap`` pixels (at most half a tile) and are
blended with a separable window that is zero for the outer quarter of the
overlap (where zero padding makes a tile's output unreliable) and rises
smoothly (raised cosine) to one; each pixel is the weighted mean of the tiles
covering it, so there are no seams and peak memory depends on the tile size,
not on the image size (apart from the image itself and one float32 output).
Images smaller than a fixed model's input are reflect-padded and cropped back.
A grayscale model denoises each plane of a multi-channel array; an RGB model
denoises a grayscale image replicated to three channels, and the result is
averaged back to one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from aetool.denoise.cancel import _check_cancel
from aetool.errors import ConfigError
from aetool.models.registry import AutoEncoder

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE"]

DEFAULT_TILE = 256


DEFAULT_OVERLAP = 32


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    return list(range(0, length - tile, stride)) + [length - tile]


def _window(n: int, length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """1-D blending weights for one tile: zero margin, raised-cosine ramp, flat middle."""
    w = np.ones(length, dtype=np.float32)
    ov = min(overlap, length // 2)
    if n == 1 or ov < 1:
        return w
    margin = ov // 4
    ramp_len = ov - margin
    t = (np.arange(ramp_len, dtype=np.float32) + 0.5) / ramp_len
    ramp = np.sin(0.5 * np.pi * t) ** 2
    rising = np.concatenate([np.zeros(margin, np.float32), ramp])
    if not first:
        w[:ov] = rising
    if not last:
        w[length - ov :] = np.minimum(w[length - ov :], rising[::-1])
    return w


def _model_channels(model: AutoEncoder) -> int:
    return int(model.arch_args().get("channels", 1))


def _model_size(model: AutoEncoder) -> tuple[int, int]:
    args = model.arch_args()
    return int(args.get("height", 28)), int(args.get("width", 28))


def _denoise_one(
    model: AutoEncoder,
    x: np.ndarray,
    tile: int,
    overlap: int,
    batch_size: int,
    dev: torch.device,
) -> np.ndarray:
    """The tiled (or whole-image) pass of :func:`denoise_array` on a (C, H, W) array."""
    c_img, h, w = x.shape
    c_mod = _model_channels(model)
    # Stack of model inputs (G, c_mod, H, W): one per channel, or the gray plane replicated.
    if c_img == c_mod:
        stack = x[None]
    elif c_mod == 1:
        stack = x[:, None]
    elif c_img == 1:
        stack = np.repeat(x[None], c_mod, axis=1)
    else:
        raise ConfigError(f"cannot denoise a {c_img}-channel image with a {c_mod}-channel model")

    # One forward pass holds at most `budget` pixels per plane: a batch of tiles, or whole
    # images when one fits (a 512x512 picture in one pass rather than nine 256 px tiles).
    budget = max(1, batch_size) * tile * tile
    if model.fully_convolutional:
        th, tw = (h, w) if h * w <= budget else (min(tile, h), min(tile, w))
        per_pass = max(1, budget // (th * tw))
    else:
        th, tw = _model_size(model)
        per_pass = max(1, batch_size)
    pad_h, pad_w = max(0, th - h), max(0, tw - w)
    if pad_h or pad_w:  # smaller than a fixed-size model's input: pad, run, crop
        mode: Literal["reflect", "edge"] = "reflect" if h > 1 and w > 1 else "edge"
        stack = np.pad(stack, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode=mode)
    hp, wp = stack.shape[2:]
    ov_h, ov_w = min(overlap, th // 2), min(overlap, tw // 2)
    ys, xs = _starts(hp, th, ov_h), _starts(wp, tw, ov_w)
    wy = [_window(len(ys), th, ov_h, i == 0, i == len(ys) - 1) for i in range(len(ys))]
    wx = [_window(len(xs), tw, ov_w, j == 0, j == len(xs) - 1) for j in range(len(xs))]

    out = np.zeros(stack.shape, dtype=np.float32)
    jobs = [(g, i, j) for g in range(len(stack)) for i in range(len(ys)) for j in range(len(xs))]
    was_training = model.training
    model.eval()
    try:
        for k in range(0, len(jobs), per_pass):
            _check_cancel()
            chunk = jobs[k : k + per_pass]
            batch = np.stack(
                [stack[g, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] for g, i, j in chunk]
            )
            pred = model(torch.from_numpy(batch).to(dev)).float().cpu().numpy()
            for (g, i, j), p in zip(chunk, pred, strict=True):
                weight = wy[i][:, None] * wx[j][None, :]
                out[g, :, ys[i] : ys[i] + th, xs[j] : xs[j] + tw] += p * weight
    finally:
        model.train(was_training)
    # The window is separable and each row (column) of tiles shares its y (x) weights,
    # so the weight sum is the outer product of the 1-D sums: no full-size weight map.
    sy = np.zeros(hp, np.float32)
    sx = np.zeros(wp, np.float32)
    for i, y0 in enumerate(ys):
        sy[y0 : y0 + th] += wy[i]
    for j, x0 in enumerate(xs):
        sx[x0 : x0 + tw] += wx[j]
    out /= sy[:, None] * sx[None, :]
    np.clip(out, 0.0, 1.0, out=out)
    out = out[:, :, :h, :w]
    if c_img == c_mod:
        return out[0]
    if c_mod == 1:
        return out[:, 0]
    return out[0].mean(axis=0, keepdims=True)


def _model_device(model: AutoEncoder) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
