"""Simulated defects for training defect-segmentation models from normal images alone.

:func:`simulate_defects` pastes one or two defects into a random share of a
batch of normal images and returns the defective copies with their masks, the
targets the segmentation network learns (DRAEM, Zavrtanik et al., ICCV 2021).
No external data is needed; ``sources`` (``--anomaly-source DIR``) adds
images whose content fills some regions.

Defect kinds (:data:`KINDS`), each drawn with its weight in :data:`DEFAULT_WEIGHTS`:

- ``dark``: a Perlin-noise-shaped region darkened (inactive areas);
- ``blend``: a Perlin region filled with another image (of the batch, or a
  source image), flipped, blended with the original;
- ``self``: a Perlin region filled with a shifted, contrast-changed copy of
  the same image;
- ``texture``: a Perlin region filled with a procedural noise texture;
- ``scar``: a thin branching crack (random walk), 1 to 5 pixels wide;
- ``line``: a thin straight line, dark or bright (scratches, interruptions);
- ``cutpaste``: a rectangle (sometimes a thin strip) copied elsewhere.

Perlin regions are often cut to a random disc so defects stay local; masks
count only pixels that really changed. Everything is numpy and reproducible:
the same seed (or generator state) gives the same defects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["DEFAULT_WEIGHTS", "KINDS", "perlin", "perlin_mask", "simulate_defects"]

KINDS = ("dark", "blend", "self", "texture", "scar", "line", "cutpaste")
DEFAULT_WEIGHTS = {
    "dark": 0.2, "blend": 0.1, "self": 0.1, "texture": 0.1, "scar": 0.3, "line": 0.1,
    "cutpaste": 0.1,
}  # fmt: skip
#: A pixel belongs to a defect's mask when it changed by more than this (of [0, 1]).
CHANGED = 0.02
#: A Perlin region covers this share of the image, at least and at most.
REGION_FRACTION = (0.002, 0.25)


def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin noise of any ``shape`` (about [-1, 1]); ``res`` lattice periods per axis."""
    h, w = shape
    ry, rx = res
    dy, dx = math.ceil(h / ry), math.ceil(w / rx)
    gy, gx = np.meshgrid(
        np.arange(dy * ry) / dy % 1.0, np.arange(dx * rx) / dx % 1.0, indexing="ij"
    )
    ang = 2 * math.pi * rng.random((ry + 1, rx + 1))
    g = np.stack([np.cos(ang), np.sin(ang)], -1)

    def corner(oy: int, ox: int) -> np.ndarray:
        gr = g[oy : oy + ry, ox : ox + rx]
        gr = np.repeat(np.repeat(gr, dy, 0), dx, 1)
        return (gy - oy) * gr[..., 0] + (gx - ox) * gr[..., 1]

    ty, tx = _fade(gy), _fade(gx)
    n0 = corner(0, 0) + ty * (corner(1, 0) - corner(0, 0))
    n1 = corner(0, 1) + ty * (corner(1, 1) - corner(0, 1))
    return (math.sqrt(2) * (n0 + tx * (n1 - n0)))[:h, :w]


def _box1d(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float64)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return (hi - lo) / (2 * r + 1)


def _blur(a: np.ndarray, r: int) -> np.ndarray:
    """Box blur applied twice (close to Gaussian), radius ``r``, edges replicated."""
    for _ in range(2):
        a = _box1d(_box1d(a, r, 0), r, 1)
    return a.astype(np.float32)


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    if r < 1:
        return m
    from scipy import ndimage

    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return ndimage.binary_dilation(m > 0, yy**2 + xx**2 <= r * r + r).astype(np.float32)


def perlin_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A binary Perlin-shaped region covering :data:`REGION_FRACTION` of the image."""
    lo, hi = REGION_FRACTION
    m = np.zeros((h, w), np.float32)
    for _ in range(20):
        res = (2 ** int(rng.integers(1, 5)), 2 ** int(rng.integers(1, 5)))
        m = (perlin((h, w), res, rng) > rng.uniform(0.35, 0.65)).astype(np.float32)
        if rng.random() < 0.7:  # keep defects local: cut to a random disc
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            rad = rng.uniform(0.08, 0.35) * min(h, w)
            yy, xx = np.mgrid[0:h, 0:w]
            m *= ((yy - cy) ** 2 + (xx - cx) ** 2) < rad**2
        if lo <= m.mean() <= hi:
            return m
    return m


def _walk(m: np.ndarray, rng: np.random.Generator, y: float, x: float, ang: float,
          length: float, depth: int) -> None:  # fmt: skip
    h, w = m.shape
    for _ in range(int(length / 0.5)):
        ang += rng.normal(0, 0.12)
        y, x = y + 0.5 * math.sin(ang), x + 0.5 * math.cos(ang)
        iy, ix = int(round(y)), int(round(x))
        if not (0 <= iy < h and 0 <= ix < w):
            return
        m[iy, ix] = 1
        if depth < 2 and rng.random() < 0.004:  # a branch
            turn = float(rng.choice([-1, 1])) * rng.uniform(0.4, 1.2)
            _walk(m, rng, y, x, ang + turn, length * rng.uniform(0.2, 0.6), depth + 1)


def _crack(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    y, x = rng.uniform(0, h), rng.uniform(0, w)
    if rng.random() < 0.3:  # cracks often cross the image from a border
        if rng.random() < 0.5:
            y = 0.0 if rng.random() < 0.5 else h - 1.0
        else:
            x = 0.0 if rng.random() < 0.5 else w - 1.0
    ang = math.atan2(h / 2 - y, w / 2 - x) + rng.normal(0, 0.8)
    _walk(m, rng, y, x, ang, rng.uniform(0.15, 1.0) * min(h, w), 0)
    return _dilate(m, int(rng.choice([0, 0, 1, 1, 2])))


def _line(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    length = rng.uniform(0.05, 0.5) * min(h, w)
    y, x = rng.uniform(0, h), rng.uniform(0, w)
    if rng.random() < 0.6:  # mostly along the image axes
        ang = float(rng.choice([0, math.pi / 2])) + rng.normal(0, 0.05)
    else:
        ang = rng.uniform(0, math.pi)
    t = np.arange(0, length, 0.5)
    iy, ix = (
        np.round(y + t * math.sin(ang)).astype(int),
        np.round(x + t * math.cos(ang)).astype(int),
    )
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    m[iy[ok], ix[ok]] = 1
    return _dilate(m, int(rng.choice([0, 1, 1, 2])))


Defect = Callable[
    [np.ndarray, Sequence[np.ndarray], np.random.Generator], tuple[np.ndarray, np.ndarray]
]


def _region(img: np.ndarray, others: Sequence[np.ndarray], rng: np.random.Generator,
            kind: str) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    c, h, w = img.shape
    m = perlin_mask(h, w, rng)
    soft = np.clip(_blur(m, 1), 0, 1) if rng.random() < 0.5 else m
    if kind == "dark":
        return img * (1 - rng.uniform(0.25, 0.95) * soft[None]), m
    if kind == "blend":
        src = others[int(rng.integers(len(others)))]
        src = _fit(src, c, h, w)
        if rng.random() < 0.5:
            src = src[:, ::-1]
        if rng.random() < 0.5:
            src = src[:, :, ::-1]
    elif kind == "self":
        shift = (int(rng.integers(h // 8, h - h // 8)), int(rng.integers(w // 8, w - w // 8)))
        src = np.roll(img, shift, (1, 2)) * rng.uniform(0.4, 1.3) + rng.uniform(-0.2, 0.1)
    else:  # texture
        t = perlin((h, w), (2 ** int(rng.integers(2, 6)),) * 2, rng)
        t = t + 0.5 * perlin((h, w), (2 ** int(rng.integers(3, 6)),) * 2, rng)
        src = np.broadcast_to(rng.uniform(0.0, 0.6) + rng.uniform(0.05, 0.4) * t, (c, h, w))
    beta = rng.uniform(0.0, 0.6)  # weight of the original inside the region
    return img * (1 - soft[None]) + soft[None] * (beta * img + (1 - beta) * src), m


def _fit(src: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
    """A source image as ``(c, h, w)``: channels matched, tiled or cropped to size."""
    if src.shape[0] != c:
        src = np.repeat(src.mean(0, keepdims=True), c, 0)
    if src.shape[1:] != (h, w):
        reps = (1, math.ceil(h / src.shape[1]), math.ceil(w / src.shape[2]))
        src = np.tile(src, reps)[:, :h, :w]
    return src


def _scar(img: np.ndarray, others: Sequence[np.ndarray], rng: np.random.Generator,
          kind: str) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    c, h, w = img.shape
    m = _crack(h, w, rng) if kind == "scar" else _line(h, w, rng)
    if kind == "scar" and rng.random() < 0.3:  # a crack often darkens its surroundings
        m = np.clip(_blur(m, 1) * 1.5, 0, 1)
    if kind == "line" and rng.random() < 0.2:
        return img + m[None] * rng.uniform(0.15, 0.5), (m > 0.2).astype(np.float32)
    return img * (1 - rng.uniform(0.3, 0.95) * m[None]), (m > 0.2).astype(np.float32)


def _cutpaste(img: np.ndarray, others: Sequence[np.ndarray], rng: np.random.Generator,
              kind: str) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    c, h, w = img.shape
    ph, pw = max(2, int(rng.uniform(0.04, 0.3) * h)), max(2, int(rng.uniform(0.04, 0.3) * w))
    if rng.random() < 0.3:  # a thin, scar-like strip
        if rng.random() < 0.5:
            ph = max(2, ph // 6)
        else:
            pw = max(2, pw // 6)
    ph, pw = min(ph, h - 1), min(pw, w - 1)
    y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    y1, x1 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    patch = img[:, y0 : y0 + ph, x0 : x0 + pw]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if rng.random() < 0.5:
        patch = patch[:, :, ::-1]
    out = img.copy()
    out[:, y1 : y1 + ph, x1 : x1 + pw] = patch * rng.uniform(0.6, 1.2)
    m = np.zeros((h, w), np.float32)
    m[y1 : y1 + ph, x1 : x1 + pw] = 1
    return out, m


_APPLY: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "dark": _region, "blend": _region, "self": _region, "texture": _region,
    "scar": _scar, "line": _scar, "cutpaste": _cutpaste,
}  # fmt: skip


def simulate_defects(
    images: np.ndarray,
    rng: int | np.random.Generator = 0,
    p_anomaly: float = 0.6,
    weights: dict[str, float] | None = None,
    max_defects: int = 2,
    sources: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Paste simulated defects into a share of a batch of normal images.

    Args:
        images: ``(N, C, H, W)`` floats in [0, 1].
        rng: a seed or a numpy generator (its state advances).
        p_anomaly: probability that an image gets defects (else it is unchanged).
        weights: relative weight per kind (default :data:`DEFAULT_WEIGHTS`).
        max_defects: an image gets 1 to ``max_defects`` defects.
        sources: extra ``(C', H', W')`` float images whose content fills
            ``blend`` regions beside the batch's own images.

    Returns:
        The defective copies ``(N, C, H, W)`` float32 in [0, 1] and their masks
        ``(N, 1, H, W)`` float32: 1 where a pixel differs from the original by more
        than :data:`CHANGED` (in any channel), 0 elsewhere.

    Example:
        >>> x = np.full((4, 1, 32, 32), 0.5, np.float32)
        >>> out, masks = simulate_defects(x, 0, p_anomaly=1.0)
        >>> out.shape, masks.shape, bool(masks.sum(axis=(1, 2, 3)).min() > 0)
        ((4, 1, 32, 32), (4, 1, 32, 32), True)
    """
    x = np.asarray(images, dtype=np.float32)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    kw = dict(DEFAULT_WEIGHTS if weights is None else weights)
    names = list(kw)
    probs = np.array([kw[k] for k in names], dtype=np.float64)
    probs /= probs.sum()
    n = x.shape[0]
    out = x.copy()
    masks = np.zeros((n, 1, *x.shape[2:]), np.float32)
    for i in range(n):
        if gen.random() >= p_anomaly:
            continue
        others = [x[j] for j in range(n) if j != i] + list(sources)
        for _ in range(1 + int(gen.integers(0, max_defects))):
            kind = names[int(gen.choice(len(names), p=probs))]
            after, _ = _APPLY[kind](out[i], others or [out[i]], gen, kind)
            out[i] = np.clip(after, 0, 1)
        masks[i, 0] = np.abs(out[i] - x[i]).max(0) > CHANGED
    return out, masks
