"""Score refinement set-ups on the tuning pictures only (never the benchmark's test pictures).

The tuning set of "How the refinement's constants were chosen" (BENCHMARKS.md): cell and
the top-left 512x512 of hubble_deep_field (the bundled denoiser's validation pictures)
and scikit-learn's china and flower cut to their first 512 columns, in grayscale, at
sigma 15 and 25 (where the refinement runs), the noise clipped to [0, 1] and not, drawn
as in ``benchmarks/denoise_psnr.py`` (seed ``1000 + sigma``). The bundled denoiser's
output is the pilot; each set-up runs :func:`aetool.denoise.refine.refine` (blended, at
the noise level :func:`~aetool.denoise.noise_level.refine_sigma` estimates), clipped to
[0, 1] as ``aetool denoise`` writes it. Printed per set-up: the mean over the four
(sigma, clipping) cases of the mean PSNR over the four pictures, its gain over the
network alone, and the refinements' total time (``--rounds`` rounds, set-ups alternating,
best kept). A set-up is a JSON object of module constants to override, e.g.::

    python benchmarks/refine_tuning.py '{}' '{"RADIUS": 4, "TAU": 0.00615}' '{"STEP": 4}'

``{}`` is the module as shipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_psnr import DEFAULT_TILE, load_gray, noisy, psnr  # noqa: E402

from aetool.denoise import refine as R  # noqa: E402
from aetool.denoise.array import denoise_array  # noqa: E402
from aetool.denoise.noise_level import refine_sigma  # noqa: E402
from aetool.models.bundled import bundled_model_path  # noqa: E402
from aetool.models.file import load_model  # noqa: E402

SIGMAS = (15, 25)
KNOBS = ("STEP", "GROUP", "RADIUS", "OFFSET_STEP", "TAU", "SIGMA_SCALE", "KAISER_BETA")


def pictures() -> dict[str, np.ndarray]:
    from skimage.color import rgb2gray
    from sklearn.datasets import load_sample_image

    out = {"cell": load_gray("cell"), "hubble": load_gray("hubble_deep_field")[:512, :512]}
    for name in ("china.jpg", "flower.jpg"):
        gray = rgb2gray(load_sample_image(name))[:, :512]
        out[name] = np.ascontiguousarray(gray, dtype=np.float32)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("setups", nargs="*", default=["{}"], help="JSON objects of constants")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    setups = [json.loads(s) for s in args.setups]
    for s in setups:
        if not isinstance(s, dict) or set(s) - set(KNOBS):
            raise SystemExit(f"a set-up overrides only {', '.join(KNOBS)}: {s!r}")
    model = load_model(bundled_model_path()).model.eval()
    cases = []
    for clean in pictures().values():
        for sigma in SIGMAS:
            for clip in (False, True):
                y = noisy(clean, sigma)
                y = np.clip(y, 0, 1) if clip else y
                with torch.inference_mode():
                    pilot = denoise_array(model, y, tile=DEFAULT_TILE)
                cases.append(((sigma, clip), clean, y, pilot, refine_sigma(y, pilot)))

    def mean_of_means(outputs: list[np.ndarray]) -> float:
        by_case: dict[tuple[int, bool], list[float]] = {}
        for (key, clean, *_), out in zip(cases, outputs, strict=True):
            by_case.setdefault(key, []).append(psnr(clean, out))
        return float(np.mean([np.mean(v) for v in by_case.values()]))

    network = mean_of_means([c[3] for c in cases])
    print(f"network alone: {network:.4f} dB ({len(cases)} cases, {args.threads} thread(s))")
    shipped = {k: getattr(R, k) for k in KNOBS}
    best_time: list[float] = [float("inf")] * len(setups)
    scores = [0.0] * len(setups)
    try:
        for _ in range(args.rounds):
            for i, setup in enumerate(setups):
                for k, v in {**shipped, **setup}.items():
                    setattr(R, k, v)
                outputs, spent = [], 0.0
                for _key, _clean, y, pilot, level in cases:
                    t0 = time.perf_counter()
                    outputs.append(np.clip(R.refine(y, pilot, level), 0, 1))
                    spent += time.perf_counter() - t0
                best_time[i] = min(best_time[i], spent)
                scores[i] = mean_of_means(outputs)
    finally:
        for k, v in shipped.items():
            setattr(R, k, v)
    for setup, score, spent in zip(setups, scores, best_time, strict=True):
        print(f"{json.dumps(setup)}: {score:.4f} dB, gain {score - network:+.4f}, "
              f"{spent:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
