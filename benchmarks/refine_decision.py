"""Should ``aetool denoise --refine auto`` refine? PSNR with and without, on pictures
that no choice of aetool's was made on.

The bundled denoiser was trained on 14 ``skimage.data`` pictures; camera,
astronaut and coffee are its test pictures (benchmarks/denoise_psnr.py), cell
and hubble_deep_field its validation pictures, and the refinement's constants
were chosen on cell, hubble_deep_field and scikit-learn's china and flower.
This script uses none of them: only the ``skimage.data`` pictures that load
offline and were used for nothing else (cat, colorwheel and logo converted to
grayscale, microaneurysms, the Shepp-Logan phantom), so it is a validation
set for the decision, small as it is.

Each picture at sigma 10, 15, 20 and 25 (0-255 scale), one fixed noise draw
(seed ``1000 + sigma``), unclipped and clipped to 8-bit levels (rounded to
1/255 and clipped to [0, 1], as a PNG stores it). Reported: mean and median PSNR gain of
``--refine on`` over ``--refine off`` (dB), the gain on cat (the one natural
photo), the worst and best picture, and the time ratio, both as ``aetool denoise`` runs them (one thread).

    python benchmarks/refine_decision.py            # about a minute on one core
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from aetool.denoise.array import denoise_array  # noqa: E402
from aetool.metrics import psnr  # noqa: E402
from aetool.models.bundled import bundled_model_path  # noqa: E402
from aetool.models.file import load_model  # noqa: E402

PICTURES = ("cat", "colorwheel", "logo", "microaneurysms", "shepp_logan_phantom")
SIGMAS = (10, 15, 20, 25)


def _gray(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = getattr(skimage.data, name)()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 4:
        img = rgba2rgb(img)
    if img.ndim == 3:
        img = rgb2gray(img)
    img = img.astype(np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    return np.clip(img, 0.0, 1.0)


def main() -> None:
    torch.set_num_threads(1)
    model = load_model(bundled_model_path(), device="cpu")
    rows = []
    for clipped in (False, True):
        for sigma in SIGMAS:
            gains, t_off, t_on = [], 0.0, 0.0
            for name in PICTURES:
                clean = _gray(name)
                rng = np.random.default_rng(1000 + sigma)
                noisy = clean + rng.normal(0, sigma / 255, clean.shape)
                if clipped:
                    noisy = np.clip(np.round(noisy * 255) / 255, 0, 1)
                x = noisy[None].astype(np.float32)
                t0 = time.perf_counter()
                off = denoise_array(model, x, refine=False)
                t1 = time.perf_counter()
                on = denoise_array(model, x, refine=True)
                t2 = time.perf_counter()
                t_off += t1 - t0
                t_on += t2 - t1
                gains.append((psnr(clean, on[0]) - psnr(clean, off[0]), name))
            g = [v for v, _ in gains]
            worst, best = min(gains), max(gains)
            rows.append(
                f"| {'8-bit clipped' if clipped else 'unclipped'} | {sigma} | "
                f"{statistics.mean(g):+.3f} | {statistics.median(g):+.3f} | "
                f"{dict((n, v) for v, n in gains)['cat']:+.3f} | {worst[0]:+.3f} ({worst[1]}) | "
                f"{best[0]:+.3f} ({best[1]}) | {t_on / t_off:.2f}x |"
            )
            print(rows[-1], flush=True)
    print()
    print(
        "| noise | sigma | mean gain (dB) | median | cat (the one photo) | worst picture "
        "| best picture | time on/off |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
