"""Collaborative Wiener refinement: the second stage of BM3D, with a network's output as pilot.

A denoising network removes most of the noise but smooths fine, repeated
structure it never learned (textures, the fine leaves of a photo). BM3D's
second stage (Dabov et al., "Image denoising by sparse 3-D transform-domain
collaborative filtering", IEEE TIP 2007) recovers such structure from the
*noisy* image, guided by a first estimate (the pilot):

1. **Block matching on the pilot.** For reference patches of 8x8 pixels on a
   grid of step :data:`STEP`, the :data:`GROUP` most similar patches of the
   pilot within a small search window are found (offsets up to :data:`RADIUS`
   pixels, every :data:`OFFSET_STEP`-th pixel: a patch shifted by one pixel is
   a near copy of the reference and adds little but correlation, and nearby
   matches served the network's pilot better than far ones);
   matches further than :data:`TAU` (mean squared difference) are dropped and
   the group is cut to a power of two.
2. **Empirical Wiener filtering.** The group of noisy patches and the group
   of pilot patches are taken to a 3-D transform domain (8x8 DCT, then Haar
   across the group); each noisy coefficient is scaled by
   ``P^2 / (P^2 + s^2)``, with ``P`` the pilot's coefficient and ``s`` the
   noise level times :data:`SIGMA_SCALE`, and the group is transformed back.
3. **Aggregation.** Every filtered patch is added back at its place with the
   weight ``1 / (s^2 * sum(W^2))`` (groups that kept more noise count less) and
   a Kaiser window, and each pixel is the weighted mean of its estimates.

:data:`SIGMA_SCALE` below 1 (trust the noisy coefficients more than the plain
Wiener rule would) compensates for a pilot that is smoother than the truth, as
a network's output is. :func:`refine` then blends the result with the pilot,
by :func:`refine_weight`: :data:`BLEND` up to sigma 25/255, nothing from 30/255
on (there the rule recovers little, and clipped noise, as stored in files, misleads it).
:func:`aetool.denoise.array.denoise_array` passes the noise level it estimates from what the
network took away (:func:`aetool.denoise.noise_level.refine_sigma`), which counts less texture as
noise than an estimate from the noisy plane alone.

Every constant was chosen on pictures that are not the benchmark's test
pictures: cell and hubble_deep_field (the bundled denoiser's validation
pictures) and scikit-learn's china and flower, at sigma 15, 25 and 50, with
the noise clipped and not, by mean PSNR (``benchmarks/denoise_psnr.py`` and
BENCHMARKS.md give the results on the test pictures).

Pictures with a side longer than ``TILE + 2 * MARGIN`` (576 px) run in tiles of
:data:`TILE` pixels with :data:`MARGIN` pixels of context on every side
(on the device given, the CPU by default): a pixel's result depends
only on pixels closer than that margin, and the tiles' grids line up with the
whole picture's, so tiling changes the result only by float rounding while
bounding the memory, whatever the picture's size. On a CPU with several threads
the tiles run side by side, one a thread, and smaller pictures are cut into
strips for that (:func:`wiener_refine`); on a GPU the same operators run there.

The filtered groups are summed per patch position in the DCT domain, weighted, and
the inverse DCT and the window are applied once per position at the end (they are
linear), not once per member of every group: the same sums, fewer transforms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from aetool.errors import ConfigError

#: Patch side.
PATCH = 8
#: Step between reference patches.
STEP = 3
#: Largest block-matching offset, in pixels, each way.
RADIUS = 4
#: Offsets searched are the multiples of this (so -4, -2, 0, 2, 4 each way: 25 candidates).
OFFSET_STEP = 2
#: Most patches in a group (a power of two).
GROUP = 16
#: Largest mean squared difference from the reference patch for a match (20/255 squared).
TAU = (20 / 255) ** 2
#: The noise level used by the Wiener rule, as a fraction of the estimated one.
SIGMA_SCALE = 0.65
#: Weight of the refined plane against the pilot at low noise (:func:`refine_weight`).
BLEND = 0.6
#: The weight falls linearly from BLEND at this noise level (25/255) ...
SIGMA_FULL = 25 / 255
#: ... to 0 at this one (30/255): above it, the pilot is returned unrefined.
SIGMA_OFF = 30 / 255
#: Kaiser window parameter of the aggregation weights.
KAISER_BETA = 2.0
#: Tile side and the context around each tile, both multiples of :data:`STEP` so that
#: every tile's grid of reference patches lies on the whole plane's. Planes with no side
#: longer than ``TILE + 2 * MARGIN`` (576) are refined whole, larger ones in tiles.
TILE = 510
MARGIN = 33
#: Reference patches filtered per batch: few enough that a batch's 3-D groups (4 MB for
#: groups of 16) stay in the CPU's cache through the chain of transforms (much larger
#: batches ran slower; BENCHMARKS.md).
_REFS_PER_BATCH = 512
#: ... and on a GPU, where a batch is one round of kernel launches: as many as memory allows.
_REFS_PER_BATCH_ACCELERATOR = 16384
#: On a CPU with several threads, planes are cut into strips, one a thread, no shorter
#: than this: shorter ones would spend more time on their context than they save.
_MIN_STRIP = 120


@cache
def _dct(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix, rows = frequencies."""
    k = np.arange(n)
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    c[0] /= np.sqrt(2.0)
    return torch.tensor(c, dtype=torch.float32)


@cache
def _haar(n: int) -> torch.Tensor:
    """Orthonormal Haar matrix of size n (a power of two)."""
    if n == 1:
        return torch.ones(1, 1)
    h = _haar(n // 2)
    top = torch.kron(h, torch.tensor([[1.0, 1.0]]))
    bottom = torch.kron(torch.eye(n // 2), torch.tensor([[1.0, -1.0]]))
    return torch.cat([top, bottom]) / math.sqrt(2.0)


def _grid(length: int) -> tuple[list[int], int | None]:
    """Reference positions along one side: every STEP-th, plus the last one if missed."""
    g = list(range(0, length - PATCH + 1, STEP))
    last = length - PATCH
    return g, (last if g[-1] != last else None)


def refine_weight(sigma: float) -> float:
    """How much of the refined plane :func:`refine` keeps at noise level ``sigma``.

    :data:`BLEND` up to :data:`SIGMA_FULL`, falling linearly to 0 at
    :data:`SIGMA_OFF`. Strong noise leaves the Wiener rule little to recover,
    and in files it is clipped at black and white, which biases the noisy
    values the rule trusts; the network was trained on clipped noise.
    """
    if not sigma > 0 or not math.isfinite(sigma):
        return 0.0
    t = (SIGMA_OFF - sigma) / (SIGMA_OFF - SIGMA_FULL)
    return BLEND * min(1.0, max(0.0, t))


def refine(
    noisy: np.ndarray,
    pilot: np.ndarray,
    sigma: float,
    check: Callable[[], None] | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """``pilot + w * (wiener_refine(...) - pilot)`` with ``w = refine_weight(sigma)``.

    What ``aetool denoise --refine`` runs on each plane: the refined plane
    blended with the pilot, or the pilot itself (no work) at strong noise.
    """
    w = refine_weight(sigma)
    p = np.asarray(pilot, dtype=np.float32)
    if w <= 0:
        return p.copy()
    out = wiener_refine(noisy, p, sigma, check=check, device=device)
    out -= p
    out *= w
    out += p
    return out


def wiener_refine(
    noisy: np.ndarray,
    pilot: np.ndarray,
    sigma: float,
    check: Callable[[], None] | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Refine a denoised plane by collaborative Wiener filtering of the noisy one.

    Args:
        noisy: ``(H, W)`` float plane (the input with its noise).
        pilot: ``(H, W)`` first estimate of the clean plane (a network's output).
        sigma: standard deviation of the noise in ``noisy`` (same units).
        check: called before each tile of a large plane (each round of tiles on a
            CPU with several threads); it may raise to stop.
        device: where to compute (default the CPU); the result is the same on every
            device but for float rounding. On the CPU the plane is cut into as many
            tiles as torch has threads (when it is large enough that each tile's
            context costs little), run side by side.

    Returns:
        float32 ``(H, W)`` plane. Planes smaller than 16 pixels on a side, and
        ``sigma <= 0``, are returned as the pilot.
    """
    y = np.ascontiguousarray(noisy, dtype=np.float32)
    p = np.ascontiguousarray(pilot, dtype=np.float32)
    if y.ndim != 2 or y.shape != p.shape:
        raise ConfigError(f"noisy {y.shape} and pilot {p.shape} must be equal 2-D planes")
    h, w = y.shape
    if min(h, w) < 2 * PATCH or not sigma > 0 or not math.isfinite(sigma):
        return p.copy()
    s2 = float(sigma * SIGMA_SCALE) ** 2
    dev = torch.device(device) if device is not None else torch.device("cpu")
    threads = torch.get_num_threads() if dev.type == "cpu" else 1
    th, tw = _tile_sides(h, w, threads)
    if (th, tw) == (h, w):
        return _refine(_on(y, dev), _on(p, dev), s2).cpu().numpy()
    out = np.empty((h, w), np.float32)

    def run(y0: int, x0: int) -> None:
        y1, x1 = min(h, y0 + th), min(w, x0 + tw)
        a, b = max(0, y0 - MARGIN), max(0, x0 - MARGIN)
        c, d = min(h, y1 + MARGIN), min(w, x1 + MARGIN)
        part = _refine(_on(y[a:c, b:d], dev), _on(p[a:c, b:d], dev), s2).cpu().numpy()
        out[y0:y1, x0:x1] = part[y0 - a : y1 - a, x0 - b : x1 - b]

    tiles = [(y0, x0) for y0 in range(0, h, th) for x0 in range(0, w, tw)]
    if threads == 1:
        for y0, x0 in tiles:
            if check is not None:
                check()
            run(y0, x0)
        return out
    # torch's operators release the GIL: one tile a thread, each on one core
    with ThreadPoolExecutor(threads) as pool, _one_thread_each():
        for i in range(0, len(tiles), threads):
            if check is not None:
                check()
            list(pool.map(lambda t: run(*t), tiles[i : i + threads]))
    return out


def _tile_sides(h: int, w: int, threads: int) -> tuple[int, int]:
    """Tile sides for an ``h`` x ``w`` plane: :data:`TILE` for large planes; on a CPU with
    several threads, strips across the longer side, one a thread, where each is at least
    :data:`_MIN_STRIP` long; else the whole plane. Multiples of :data:`STEP`, so that
    every tile's grid of reference patches lies on the whole plane's."""
    if max(h, w) > TILE + 2 * MARGIN:
        return TILE, TILE
    long = max(h, w)
    parts = min(threads, long // _MIN_STRIP)
    if parts <= 1:
        return h, w
    side = -(-long // (parts * STEP)) * STEP
    return (side, w) if h >= w else (h, side)


@contextmanager
def _one_thread_each() -> Iterator[None]:
    """torch's intra-op threads set to one while tiles run one a thread (each thread's
    operators would otherwise start as many again); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _on(plane: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(plane)).to(dev)


@torch.inference_mode()
def _refine(y: torch.Tensor, p: torch.Tensor, s2: float) -> torch.Tensor:
    n, r, dev = PATCH, RADIUS, y.device
    h, w = y.shape
    both = F.pad(torch.stack([y, p])[None], (r, r, r, r), mode="reflect")[0]  # sides >= 16
    pp = both[1]
    hp, wp = pp.shape

    # 1. block matching on the pilot: mean squared differences of every reference patch to
    # its candidates, as box sums of squared differences of shifted copies of the picture
    gr, lr = _grid(h)
    gc, lc = _grid(w)
    rows = torch.tensor(gr + ([lr] if lr is not None else []), device=dev)
    cols = torch.tensor(gc + ([lc] if lc is not None else []), device=dev)
    offsets = [(dy, dx) for dy in range(-r, r + 1, OFFSET_STEP)
               for dx in range(-r, r + 1, OFFSET_STEP)]  # fmt: skip
    ref = pp[r : r + h, r : r + w]
    diff = torch.empty(len(offsets), 1, h, w, device=dev)
    for i, (dy, dx) in enumerate(offsets):
        torch.sub(pp[r + dy : r + dy + h, r + dx : r + dx + w], ref, out=diff[i, 0])
    diff.square_()
    a = F.avg_pool2d(diff, (n, 1), stride=(STEP, 1))
    if lr is not None:
        a = torch.cat([a, F.avg_pool2d(diff[:, :, lr : lr + n], (n, 1))], 2)
    del diff
    dist = F.avg_pool2d(a, (1, n), stride=(1, STEP))
    if lc is not None:
        dist = torch.cat([dist, F.avg_pool2d(a[:, :, :, lc : lc + n], (1, n))], 3)
    del a
    dist = dist.reshape(len(offsets), -1)
    dist[offsets.index((0, 0))] = -1.0  # the reference heads its group, even among exact ties
    k_max = min(GROUP, len(offsets))
    dd, best = dist.topk(k_max, dim=0, largest=False, sorted=True)
    dd, best = dd.T, best.T  # (refs, k_max), nearest first; the reference itself is first
    count = (dd <= TAU).sum(1).clamp_min(1)
    size = 2 ** torch.floor(torch.log2(count.float())).long()
    off = torch.tensor(offsets, device=dev)
    ry = rows[:, None].expand(-1, len(cols)).reshape(-1)
    rx = cols[None, :].expand(len(rows), -1).reshape(-1)

    # 2. 3-D transform domain: the 8x8 DCT of every patch of both planes, separably (rows,
    # then columns: 16 products a pixel instead of 64), laid out channels-last: a row per
    # patch position, both planes side by side; coefficient (u, v) sits at v * 8 + u
    pw, ph = wp - n + 1, hp - n + 1
    spec = _dct_patches(both[None])
    spec = spec.permute(0, 2, 3, 1).reshape(ph * pw, 2, n * n)  # no copy if channels-last
    win = torch.kaiser_window(n, periodic=False, beta=KAISER_BETA)  # on the CPU: read below
    per_batch = _REFS_PER_BATCH if dev.type == "cpu" else _REFS_PER_BATCH_ACCELERATOR
    acc = torch.zeros(ph * pw, n * n, device=dev)  # weighted sums of filtered spectra
    wsum = torch.zeros(ph * pw, device=dev)
    for k in torch.unique(size).tolist():
        members = (size == k).nonzero()[:, 0]
        haar = _haar(k).to(dev)
        for start in range(0, len(members), per_batch):
            sel = members[start : start + per_batch]
            m = len(sel)
            b = best[sel, :k].T  # (k, m): the groups' j-th members together, so that the
            # Haar transform across each group is one matrix product for the whole batch
            pos = (ry[sel] + r + off[b, 0]) * pw + (rx[sel] + r + off[b, 1])
            pos = pos.reshape(-1)
            g = spec.index_select(0, pos)
            if k > 1:
                g = torch.mm(haar, g.view(k, -1))
            g = g.view(k, m, 2, n * n)
            noisy_t, gain = g[:, :, 0], g[:, :, 1].square()
            gain.div_(gain + s2)
            weight = 1.0 / (s2 * gain.square().sum((0, 2))).clamp_min(1e-12)
            z = gain.mul_(noisy_t)
            if k > 1:
                z = torch.mm(haar.T, z.view(k, -1))
            # 3. aggregation: weighted sums of the filtered spectra per patch position; the
            # inverse DCT is linear, so it runs once per position at the end, not per member
            acc.index_add_(0, pos, z.view(k, m, n * n).mul_(weight[:, None]).view(-1, n * n))
            wsum.index_add_(0, pos, weight.expand(k, -1).reshape(-1))
    del spec
    num = _undct_patches(acc, ph, pw, win.to(dev))
    # the weights spread like the patches, by the window, an outer product: rows, then columns
    by_rows = torch.zeros(hp, pw, device=dev)
    for i in range(n):
        by_rows[i : i + ph].add_(wsum.view(ph, pw), alpha=float(win[i]))
    den = torch.zeros(hp, wp, device=dev)
    for j in range(n):
        den[:, j : j + pw].add_(by_rows, alpha=float(win[j]))
    num, den = num[r : r + h, r : r + w], den[r : r + h, r : r + w]
    return torch.where(den > 0, num / den.clamp_min(1e-30), p)


def _dct_patches(x: torch.Tensor) -> torch.Tensor:
    """The 8x8 DCT of every patch of each plane of ``x`` (1, P, H, W): (1, 64 P, H-7, W-7),
    channels-last; plane ``q``'s coefficient (u, v) (u down, v across) is channel
    ``64 q + 8 v + u``."""
    n, planes = PATCH, x.shape[1]
    d = _dct(n).to(x.device)
    x = x.contiguous(memory_format=torch.channels_last)
    across = d.view(n, 1, 1, n).repeat(planes, 1, 1, 1)  # (8 P, 1, 1, 8): v for each plane
    t = F.conv2d(x, across.contiguous(memory_format=torch.channels_last), groups=planes)
    down = d.view(n, 1, n, 1).repeat(planes * n, 1, 1, 1)  # (64 P, 1, 8, 1): u for each v
    return F.conv2d(t, down.contiguous(memory_format=torch.channels_last), groups=planes * n)


def _undct_patches(spec: torch.Tensor, h: int, w: int, win: torch.Tensor) -> torch.Tensor:
    """Each position's patch from its 64 coefficients (ordered as :func:`_dct_patches`
    gives them, one row per position of an ``(h, w)`` grid), times the 2-D window
    ``win x win``, summed where patches overlap: (h w, 64) -> (h + 7, w + 7)."""
    n = PATCH
    d = _dct(n).to(spec.device)
    basis = d[None, :, :, None] * d[:, None, None, :]  # [v, u, i, j] = d[u, i] d[v, j]
    basis = (basis * (win[:, None] * win[None, :])).reshape(n * n, n * n)
    patches = torch.mm(basis.T, spec.T)  # (64, h w), rows contiguous as fold wants them
    return F.fold(patches[None], (h + n - 1, w + n - 1), n)[0, 0]
