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
the tiles run side by side, one a thread; on a GPU the same operators run there.

Within a plane (or tile) the CPU works band by band: :data:`_BAND` rows of
reference patches with the pixels their groups reach, so that every intermediate
(distances, the patches' spectra, the filtered sums) is a band's size, and the memory
one band freed serves the next instead of being mapped afresh (on this project's
2-core test machine, fresh pages of a plane-sized intermediate cost about as much as
the arithmetic on it). The bands of a whole plane run side by side on a CPU with
several threads, in rounds of one a thread; on an accelerator the plane is one band
(one round of large kernels).

The filtered groups are summed per patch position in the DCT domain, weighted, and
the inverse DCT and the window are applied once per position at the end (they are
linear), not once per member of every group: the same sums, fewer transforms; that
inverse, like the forward transform, runs separably (rows, then columns).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from aetool.errors import ConfigError

_T = TypeVar("_T")

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
#: Rows of reference patches filtered together on a CPU (a band): every intermediate has
#: the size of a band, not of the plane, and is reused from the allocator's free memory
#: band after band rather than mapped afresh (BENCHMARKS.md). On an accelerator the whole
#: plane is one band.
_BAND = 16


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
        check: called before each band of reference rows (each tile of a large plane);
            it may raise to stop.
        device: where to compute (default the CPU); the result is the same on every
            device but for float rounding. On the CPU with several torch threads, the
            bands of a plane (the tiles of a large one) run side by side, one a thread.

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
    if max(h, w) <= TILE + 2 * MARGIN:
        return _refine(_on(y, dev), _on(p, dev), s2, check, threads).cpu().numpy()
    out = np.empty((h, w), np.float32)

    def run(tile: tuple[int, int]) -> None:
        y0, x0 = tile
        y1, x1 = min(h, y0 + TILE), min(w, x0 + TILE)
        a, b = max(0, y0 - MARGIN), max(0, x0 - MARGIN)
        c, d = min(h, y1 + MARGIN), min(w, x1 + MARGIN)
        part = _refine(_on(y[a:c, b:d], dev), _on(p[a:c, b:d], dev), s2).cpu().numpy()
        out[y0:y1, x0:x1] = part[y0 - a : y1 - a, x0 - b : x1 - b]

    tiles = [(y0, x0) for y0 in range(0, h, TILE) for x0 in range(0, w, TILE)]
    _side_by_side(tiles, run, threads, check)
    return out


def _side_by_side(
    jobs: list[_T], run: Callable[[_T], None], threads: int, check: Callable[[], None] | None
) -> None:
    """``run`` each job: in turn with one thread, else in rounds of one job a thread, each
    thread with torch's intra-op threads set to one (its operators would otherwise start as
    many again; restored after; torch's operators release the GIL). ``check`` is called
    in the calling thread before each job (each round): what it reads may be that
    thread's own (:func:`aetool.denoise.cancel._check_cancel` is)."""
    if threads <= 1 or len(jobs) <= 1:
        for job in jobs:
            if check is not None:
                check()
            run(job)
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(threads, len(jobs))) as pool:
            for i in range(0, len(jobs), threads):
                if check is not None:
                    check()
                list(pool.map(run, jobs[i : i + threads]))
    finally:
        torch.set_num_threads(before)


def _on(plane: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(plane)).to(dev)


@torch.inference_mode()
def _refine(
    y: torch.Tensor,
    p: torch.Tensor,
    s2: float,
    check: Callable[[], None] | None = None,
    threads: int = 1,
) -> torch.Tensor:
    """The refined plane, computed band by band: a band is :data:`_BAND` rows of
    reference patches (on an accelerator the whole plane) with the pixels their groups
    reach, so that every intermediate (block-matching distances, the patches' spectra,
    the filtered sums) has the size of a band, not of the plane."""
    r, dev = RADIUS, y.device
    h, w = y.shape
    both = F.pad(torch.stack([y, p])[None], (r, r, r, r), mode="reflect")[0]  # sides >= 16
    hp, wp = both.shape[1:]
    gr, lr = _grid(h)
    gc, lc = _grid(w)
    rows = gr + ([lr] if lr is not None else [])
    cols = gc + ([lc] if lc is not None else [])
    band = _BAND if dev.type == "cpu" else len(rows)
    bands = [rows[i : i + band] for i in range(0, len(rows), band)]
    # the bands run in rounds, one a thread; each adds into the numerator and denominator
    # of its place in its round, which no other band of the round touches
    parts = min(threads, len(bands))
    sums = [
        (torch.zeros(hp, wp, device=dev), torch.zeros(hp, wp, device=dev)) for _ in range(parts)
    ]

    def run(job: tuple[int, list[int]]) -> None:
        _filter_band(both, job[1], cols, s2, *sums[job[0] % parts])

    _side_by_side(list(enumerate(bands)), run, threads, check)
    num, den = sums[0]
    for more_num, more_den in sums[1:]:
        num += more_num
        den += more_den
    num, den = num[r : r + h, r : r + w], den[r : r + h, r : r + w]
    return torch.where(den > 0, num / den.clamp_min(1e-30), p)


@torch.inference_mode()  # each thread's own mode
def _filter_band(
    both: torch.Tensor, refs: list[int], cols: list[int], s2: float,
    num: torch.Tensor, den: torch.Tensor,
) -> None:  # fmt: skip
    """Filter the groups of the reference patches in rows ``refs`` (top-left corners in
    the unpadded plane) and columns ``cols`` of ``both`` (the noisy and pilot planes,
    padded by :data:`RADIUS`); add the weighted, windowed patches to ``num`` and their
    weights to ``den`` (padded planes)."""
    n, r, dev = PATCH, RADIUS, both.device
    wp = both.shape[2]
    w = wp - 2 * r
    top = refs[0]  # the band's first pixel row (padded): the top of a group at offset -r
    sub = both[:, top : refs[-1] + 2 * r + n]  # every pixel the band's groups reach
    bh = sub.shape[1]
    pp = sub[1]
    ry = torch.tensor(refs, device=dev) - top  # reference rows in the band, less r
    rx = torch.tensor(cols, device=dev)

    # 1. block matching on the pilot: mean squared differences of every reference patch to
    # its candidates, as sums of 8 rows, then of 8 columns, of squared differences of
    # shifted copies of the band
    offsets = [(dy, dx) for dy in range(-r, r + 1, OFFSET_STEP)
               for dx in range(-r, r + 1, OFFSET_STEP)]  # fmt: skip
    hb = refs[-1] - top + n
    ref = pp[r : r + hb, r : r + w]
    diff = torch.empty(len(offsets), hb, w, device=dev)
    for i, (dy, dx) in enumerate(offsets):
        torch.sub(pp[r + dy : r + dy + hb, r + dx : r + dx + w], ref, out=diff[i])
    diff.square_()
    by_rows = diff.index_select(1, ry)
    for i in range(1, n):
        by_rows += diff.index_select(1, ry + i)
    del diff
    sums = by_rows.index_select(2, rx)
    for j in range(1, n):
        sums += by_rows.index_select(2, rx + j)
    del by_rows
    dist = sums.reshape(len(offsets), -1).T.mul(1 / (n * n))  # (refs, offsets)
    dist[:, offsets.index((0, 0))] = -1.0  # the reference heads its group, even among ties
    dd, best = dist.topk(min(GROUP, len(offsets)), dim=1, largest=False, sorted=True)
    count = (dd <= TAU).sum(1).clamp_min(1)  # nearest first; the reference itself first
    size = 2 ** torch.floor(torch.log2(count.float())).long()
    off = torch.tensor(offsets, device=dev)
    ry = ry[:, None].expand(-1, len(cols)).reshape(-1)
    rx = rx[None, :].expand(len(refs), -1).reshape(-1)

    # 2. 3-D transform domain: the 8x8 DCT of every patch of both planes, separably (rows,
    # then columns: 16 products a pixel instead of 64), laid out channels-last: a row per
    # patch position, both planes side by side; coefficient (u, v) sits at v * 8 + u
    ph, pw = bh - n + 1, wp - n + 1
    spec = _dct_patches(sub[None])
    spec = spec.permute(0, 2, 3, 1).reshape(ph * pw, 2, n * n)  # no copy if channels-last
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
    win = torch.kaiser_window(n, periodic=False, beta=KAISER_BETA)  # on the CPU: read below
    num[top : top + bh] += _undct_patches(acc, ph, pw, win.to(dev))
    # the weights spread like the patches, by the window, an outer product: rows, then columns
    spread = torch.zeros(bh, pw, device=dev)
    for i in range(n):
        spread[i : i + ph].add_(wsum.view(ph, pw), alpha=float(win[i]))
    band_den = den[top : top + bh]
    for j in range(n):
        band_den[:, j : j + pw].add_(spread, alpha=float(win[j]))


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
    ``win x win``, summed where patches overlap: (h w, 64) -> (h + 7, w + 7).

    Separably, like the forward transform: for each column frequency ``v``, the inverse
    transform down the rows (times the window) as one product, its 8 rows added at their
    shifts; then across the columns the same way. 16 products a coefficient, not 64."""
    n = PATCH
    k = (_dct(n).to(spec.device) * win[None, :]).T.contiguous()  # [i, u] = d[u, i] win[i]
    down = torch.zeros(n, h + n - 1, w, device=spec.device)  # [v, row, column]
    for v in range(n):
        rows = torch.mm(k, spec[:, n * v : n * v + n].T).view(n, h, w)  # [i, y, x]
        for i in range(n):
            down[v, i : i + h] += rows[i]
    across = torch.mm(k, down.view(n, -1)).view(n, h + n - 1, w)  # [j, row, x]
    out = torch.zeros(h + n - 1, w + n - 1, device=spec.device)
    for j in range(n):
        out[:, j : j + w] += across[j]
    return out
