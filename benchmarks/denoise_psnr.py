"""Denoising PSNR of the bundled grayscale denoiser against classical methods.

Additive Gaussian noise at sigma = 15, 25 and 50 (0-255 scale) on three
grayscale pictures the model never saw in training (scikit-image's
``camera``, ``astronaut`` and ``coffee``, converted with ``rgb2gray``), one
fixed noise draw per picture and sigma (seed ``1000 + sigma``). Compared, in
one process on one thread:

* ``model``: the bundled ``denoiser-gray.safetensors`` (or ``--model FILE``),
  loaded with :func:`aetool.models.file.load_model` and run with
  :func:`aetool.denoise.array.denoise_array` at its defaults (256 px tiles, 32 px
  overlap, 8 tiles a pass, so a 512x512 picture runs in one pass), exactly as
  ``aetool denoise`` runs it. Blind: it is not told sigma.
* scikit-image's ``denoise_nl_means``, ``denoise_tv_chambolle`` and
  ``denoise_wavelet``, and BM3D (the ``bm3d`` package, ``bm3d.bm3d`` with
  ``sigma_psd``, default profile with ``num_threads = 1``: its library
  otherwise uses every core, and is then not deterministic). All four are given the true sigma; the free parameter of the
  three scikit-image methods was tuned per sigma on a *training* picture
  (``chelsea``, grayscale) over a small grid and is fixed in :data:`PARAMS`;
  the test pictures were never used for tuning.

``model, ensemble N`` is the same model averaged over N rotations/flips of
the picture (``aetool denoise --ensemble N``, N = 2, 4, 8), N times the work.
``+ refine`` follows the model with collaborative Wiener filtering of the noisy
picture, the model's output as pilot (:mod:`aetool.denoise.refine`, BM3D's second
stage; ``aetool denoise --refine``, on by default for the bundled model), at
the noise level :func:`aetool.denoise.noise_level.refine_sigma` finds in what the model took
away: still blind.
Its constants were chosen on other pictures (cell, hubble_deep_field and
scikit-learn's china and flower), never on these.

Table 1 uses the noisy values as drawn (below 0 and above 1 included).
Table 2 clips the noisy picture to [0, 1] first, as storing it in an image
file would: the realistic input of ``aetool denoise``; there the model is
compared with nl_means and BM3D only (still given the sigma of the noise
before clipping).

Seconds per 512x512 picture: median of 3 rounds on ``camera`` at sigma 25, each
round running every method once, BM3D included, one after the other (so a
machine that slows down or speeds up during the run moves all of them alike),
after a warm-up round without BM3D. ``model`` is timed as ``aetool denoise``
runs it (the whole picture in one pass); ``model, 256 px tiles`` forces nine
overlapping 256 px tiles (``--batch-size 1``), the per-pixel cost of pictures
too big for one pass.

    python benchmarks/denoise_psnr.py                    # about 6-7 minutes on one core
    python benchmarks/denoise_psnr.py --no-bm3d          # about 2-3 minutes
    python benchmarks/denoise_psnr.py --json results.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread for every method, set before numpy loads

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from aetool.denoise.array import denoise_array  # noqa: E402
from aetool.denoise.tiling import DEFAULT_TILE  # noqa: E402
from aetool.models.bundled import bundled_model_path  # noqa: E402
from aetool.models.file import load_model  # noqa: E402

IMAGES = ["camera", "astronaut", "coffee"]
SIGMAS = [15, 25, 50]

#: Parameters tuned per sigma on grayscale ``chelsea`` (a training picture), best PSNR on a grid:
#: nl_means ``h = factor * sigma`` over factors {0.5, 0.6, 0.7, 0.8, 1.0} (5x5 patches,
#: distance 6, fast mode); tv_chambolle ``weight`` over {0.03, ..., 0.25}; wavelet basis over
#: {db1, db2, db4, sym4, sym8, coif2} (soft BayesShrink, rescaled sigma).
PARAMS: dict[str, dict[int, float | str]] = {
    "nl_means": {15: 0.6, 25: 0.6, 50: 0.8},
    "tv_chambolle": {15: 0.04, 25: 0.08, 50: 0.25},
    "wavelet": {15: "sym4", 25: "db2", 50: "db2"},
}

Method = Callable[..., np.ndarray]  # f(noisy, sigma_255) -> denoised


def load_gray(name: str) -> np.ndarray:
    """A ``skimage.data`` picture as float32 grayscale in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float32

    x = np.asarray(getattr(skimage.data, name)())
    if x.ndim == 3:
        x = rgb2gray(x)
    return np.ascontiguousarray(img_as_float32(x), dtype=np.float32)


def noisy(clean: np.ndarray, sigma: int) -> np.ndarray:
    """``clean`` plus Gaussian noise of ``sigma`` / 255 (seed ``1000 + sigma``), not clipped."""
    rng = np.random.default_rng(1000 + sigma)
    return (clean + rng.normal(0, sigma / 255, clean.shape)).astype(np.float32)


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    mse = np.mean((np.asarray(image, np.float64) - reference) ** 2)
    return float(10 * np.log10(1 / mse))


def methods(model_path: Path, use_bm3d: bool) -> dict[str, Method]:
    """Name -> ``f(noisy, sigma_255) -> denoised``."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet

    model = load_model(model_path).model

    def run_model(
        y: np.ndarray, s: int, batch_size: int = 8, ensemble: int = 1, refine: bool = False
    ) -> np.ndarray:
        with torch.inference_mode():
            return denoise_array(
                model, y, tile=DEFAULT_TILE, batch_size=batch_size, ensemble=ensemble,
                refine=refine,
            )  # fmt: skip

    def nl_means(y: np.ndarray, s: int) -> np.ndarray:
        sg = s / 255
        h = float(PARAMS["nl_means"][s]) * sg
        return denoise_nl_means(
            y, h=h, sigma=sg, fast_mode=True, patch_size=5, patch_distance=6
        )  # fmt: skip

    def tv(y: np.ndarray, s: int) -> np.ndarray:
        w = float(PARAMS["tv_chambolle"][s])
        return denoise_tv_chambolle(y.astype(np.float64), weight=w, eps=1e-5, max_num_iter=500)

    def wavelet(y: np.ndarray, s: int) -> np.ndarray:
        return denoise_wavelet(
            y, sigma=s / 255, wavelet=str(PARAMS["wavelet"][s]), mode="soft",
            method="BayesShrink", rescale_sigma=True,
        )  # fmt: skip

    out: dict[str, Method] = {
        "model": run_model,
        "model, ensemble 2": lambda y, s: run_model(y, s, ensemble=2),
        "model, ensemble 4": lambda y, s: run_model(y, s, ensemble=4),
        "model, ensemble 8": lambda y, s: run_model(y, s, ensemble=8),
        "model + refine": lambda y, s: run_model(y, s, refine=True),
        "model, ensemble 8 + refine": lambda y, s: run_model(y, s, ensemble=8, refine=True),
        "nl_means": nl_means, "tv_chambolle": tv, "wavelet": wavelet,
    }  # fmt: skip
    if use_bm3d:
        import bm3d

        profile = bm3d.BM3DProfile()
        profile.num_threads = 1
        out["bm3d"] = lambda y, s: bm3d.bm3d(y, sigma_psd=s / 255, profile=profile)
    return out


def evaluate(
    funcs: dict[str, Method], clean: dict[str, np.ndarray], clip: bool
) -> dict[str, dict[str, float]]:
    """PSNR per method per ``image/sigma``."""
    psnrs: dict[str, dict[str, float]] = {k: {} for k in funcs}
    for s in SIGMAS:
        for name, im in clean.items():
            y = noisy(im, s)
            if clip:
                y = np.clip(y, 0, 1)
            for k, f in funcs.items():
                t0 = time.perf_counter()
                den = f(y, s)
                dt = time.perf_counter() - t0
                psnrs[k][f"{name}/{s}"] = psnr(im, den)
                print(f"  {'clipped ' if clip else ''}{k} {name} {s}: "
                      f"{psnrs[k][f'{name}/{s}']:.2f} dB {dt:.2f} s", file=sys.stderr, flush=True)  # fmt: skip
    return psnrs


def time_512(funcs: dict[str, Method], clean: np.ndarray, rounds: int = 3) -> dict[str, float]:
    """Median seconds per method on a 512x512 picture at sigma 25, over interleaved rounds.

    Each round runs every method once in turn, so drift of a shared machine's speed
    during the benchmark reaches every method alike; a warm-up round (BM3D, which has
    run many times by then, left out) comes first.
    """
    y = noisy(clean, 25)
    for k, f in funcs.items():
        if k != "bm3d":
            f(y, 25)
    runs: dict[str, list[float]] = {k: [] for k in funcs}
    for _ in range(rounds):
        for k, f in funcs.items():
            t0 = time.perf_counter()
            f(y, 25)
            runs[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in runs.items()}


def table(psnrs: dict[str, dict[str, float]], noisy_psnr: dict[str, float]) -> str:
    """Markdown: one row per method, a column per picture and sigma, then the mean per sigma."""
    cols = [f"{n}/{s}" for s in SIGMAS for n in IMAGES]
    head = ["method"] + [f"{n} σ{s}" for s in SIGMAS for n in IMAGES]
    head += [f"mean σ{s}" for s in SIGMAS]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for k, row in {"noisy input": noisy_psnr, **psnrs}.items():
        vals = [row[c] for c in cols]
        means = [np.mean([row[f"{n}/{s}"] for n in IMAGES]) for s in SIGMAS]
        lines.append(f"| {k} | " + " | ".join(f"{v:.2f}" for v in vals + means) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--no-bm3d", action="store_true", help="skip BM3D (the slow one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model_path = args.model or bundled_model_path()

    clean = {n: load_gray(n) for n in IMAGES}
    funcs = methods(model_path, use_bm3d=not args.no_bm3d)
    t0 = time.perf_counter()
    psnrs = evaluate(funcs, clean, clip=False)
    clipped_funcs = {
        k: f for k, f in funcs.items() if k in ("model", "model + refine", "nl_means", "bm3d")
    }
    psnrs_clip = evaluate(clipped_funcs, clean, clip=True)
    tiled = {"model, 256 px tiles": lambda y, s: funcs["model"](y, s, 1)}
    seconds = time_512(funcs | tiled, clean["camera"])
    noisy_in = {f"{n}/{s}": psnr(im, noisy(im, s)) for s in SIGMAS for n, im in clean.items()}
    noisy_clip = {
        f"{n}/{s}": psnr(im, np.clip(noisy(im, s), 0, 1)) for s in SIGMAS for n, im in clean.items()
    }

    print(f"Model: {model_path.name}; PSNR in dB, grayscale, sigma on the 0-255 scale.\n")
    print("Noisy input as drawn (not clipped); classical methods are told sigma:\n")
    print(table(psnrs, noisy_in))
    print("\nNoisy input clipped to [0, 1] (as stored in an image file):\n")
    print(table(psnrs_clip, noisy_clip))
    print("\nSeconds per 512x512 picture (one thread):\n")
    print("| method | s / 512x512 | BM3D's time / this |\n|---|---:|---:|")
    for k, v in seconds.items():
        ratio = f"{seconds['bm3d'] / v:.1f}x" if "bm3d" in seconds else ""
        print(f"| {k} | {v:.3f} | {ratio} |")
    print(f"\n(benchmark ran {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(
            {"psnr": psnrs, "psnr_clipped": psnrs_clip, "seconds_per_512": seconds,
             "noisy_psnr": noisy_in, "noisy_psnr_clipped": noisy_clip,
             "params": {k: {str(s): v for s, v in p.items()} for k, p in PARAMS.items()}},
            indent=1,
        ))  # fmt: skip


if __name__ == "__main__":
    main()
