"""Colour denoising: the bundled grayscale denoiser in an opponent colour space vs per channel.

Additive Gaussian noise, independent in R, G and B, at sigma = 15, 25 and 50
(0-255 scale) on the two colour pictures held out of the denoiser's training
(scikit-image's ``astronaut`` and ``coffee``), one fixed draw per picture and
sigma (seed ``1000 + sigma``). Compared, in one process on one thread:

* ``aetool, opponent``: :func:`aetool.denoise.array.denoise_array` at its defaults:
  luminance and two colour differences denoised by the
  grayscale model, then mapped back to RGB;
* ``aetool, channels``: the same model on R, G and B one by one
  (``--color channels``);
* ``+ refine``: each followed by the collaborative Wiener refinement of each
  plane (:mod:`aetool.denoise.refine`; ``aetool denoise``'s default with the bundled
  model);
* scikit-image's ``denoise_nl_means`` on the colour picture (``channel_axis``),
  with the per-sigma ``h`` factor tuned for grayscale in ``denoise_psnr.py``
  (not retuned for colour);
* CBM3D (``bm3d.bm3d_rgb``, which works in its own opponent colour space),
  one thread.

The classical methods are told sigma; the model is not. PSNR over all three
channels, noisy values not clipped.

A second table takes the realistic case of a noisy photo saved as JPEG: the
same noise, clipped and rounded to 8 bits, stored at quality 95 with full
colour resolution (4:4:4) or with subsampled colour (4:2:0, most encoders'
default), read back with :func:`aetool.denoise.imageio.read_image`. With 4:2:0 the
colour differences are averaged over 2x2 pixels, so most of the noise left is
shared by R, G and B; ``--color auto`` (the default) then denoises R, G and B
one by one, and an opponent space otherwise.

    python benchmarks/denoise_color.py              # about 4 minutes on one core
    python benchmarks/denoise_color.py --no-bm3d    # about a minute
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread for every method, set before numpy loads

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from denoise_psnr import PARAMS, SIGMAS, noisy, psnr  # noqa: E402

from aetool.denoise.array import denoise_array  # noqa: E402
from aetool.denoise.imageio import read_image  # noqa: E402
from aetool.denoise.pipeline import _color_for  # noqa: E402
from aetool.models.bundled import bundled_model_path  # noqa: E402
from aetool.models.file import load_model  # noqa: E402

IMAGES = ["astronaut", "coffee"]


def load_rgb(name: str) -> np.ndarray:
    """A ``skimage.data`` colour picture as float32 (3, H, W) in [0, 1]."""
    import skimage.data

    x = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-bm3d", action="store_true", help="skip CBM3D (the slow one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from skimage.restoration import denoise_nl_means

    model = load_model(bundled_model_path()).model

    def aetool_color(color: str, refine: bool = False):
        def run(y: np.ndarray, s: int) -> np.ndarray:
            with torch.inference_mode():
                return denoise_array(model, y, color=color, refine=refine)

        return run

    def nl_means(y: np.ndarray, s: int) -> np.ndarray:
        sg = s / 255
        out = denoise_nl_means(
            y.transpose(1, 2, 0), h=float(PARAMS["nl_means"][s]) * sg, sigma=sg,
            fast_mode=True, patch_size=5, patch_distance=6, channel_axis=-1,
        )  # fmt: skip
        return out.transpose(2, 0, 1)

    methods = {
        "aetool, opponent + refine (default)": aetool_color("opponent", refine=True),
        "aetool, opponent": aetool_color("opponent"),
        "aetool, channels + refine": aetool_color("channels", refine=True),
        "aetool, channels": aetool_color("channels"),
        "nl_means": nl_means,
    }
    if not args.no_bm3d:
        import bm3d

        profile = bm3d.BM3DProfile()
        profile.num_threads = 1

        def cbm3d(y: np.ndarray, s: int) -> np.ndarray:
            out = bm3d.bm3d_rgb(y.transpose(1, 2, 0), sigma_psd=s / 255, profile=profile)
            return np.asarray(out).transpose(2, 0, 1)

        methods["CBM3D"] = cbm3d

    t_all = time.perf_counter()
    clean = {n: load_rgb(n) for n in IMAGES}
    psnrs: dict[str, dict[str, float]] = {k: {} for k in ["noisy input", *methods]}
    secs: dict[str, list[float]] = {k: [] for k in methods}
    for s in SIGMAS:
        for name, im in clean.items():
            y = noisy(im, s)
            psnrs["noisy input"][f"{name}/{s}"] = psnr(im, y)
            for k, f in methods.items():
                t0 = time.perf_counter()
                den = np.clip(f(y, s), 0, 1)
                secs[k].append(time.perf_counter() - t0)
                psnrs[k][f"{name}/{s}"] = psnr(im, den)
                print(f"  {k} {name} {s}: {psnrs[k][f'{name}/{s}']:.2f} dB", file=sys.stderr)

    cols = [f"{n}/{s}" for s in SIGMAS for n in IMAGES]
    head = ["method"] + [f"{n} σ{s}" for s in SIGMAS for n in IMAGES]
    head += [f"mean σ{s}" for s in SIGMAS] + ["s / picture"]
    print("PSNR in dB (all three channels), colour noise independent per channel:\n")
    print("| " + " | ".join(head) + " |")
    print("|---" + "|---:" * (len(head) - 1) + "|")
    for k, row in psnrs.items():
        vals = [row[c] for c in cols]
        means = [np.mean([row[f"{n}/{s}"] for n in IMAGES]) for s in SIGMAS]
        sec = f"{np.mean(secs[k]):.2f}" if k in secs else "-"
        print(f"| {k} | " + " | ".join(f"{v:.2f}" for v in vals + means) + f" | {sec} |")
    print(f"\n(benchmark ran {time.perf_counter() - t_all:.0f} s)", file=sys.stderr)
    jpeg = jpeg_table(model, clean)
    if args.json:
        args.json.write_text(json.dumps({"psnr": psnrs, "seconds": secs, "jpeg": jpeg}, indent=1))


def jpeg_table(model, clean: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Noisy pictures stored as JPEG (quality 95, 4:4:4 or 4:2:0): opponent vs channels vs auto."""
    import io
    import tempfile

    from PIL import Image

    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sub, sub_name in ((0, "4:4:4"), (2, "4:2:0")):
            for s in SIGMAS:
                for name, im in clean.items():
                    y8 = np.clip(noisy(im, s) * 255, 0, 255).round().astype(np.uint8)
                    path = Path(tmp) / f"{name}.jpg"
                    buf = io.BytesIO()
                    Image.fromarray(y8.transpose(1, 2, 0)).save(
                        buf, "JPEG", quality=95, subsampling=sub
                    )
                    path.write_bytes(buf.getvalue())
                    src = read_image(path)
                    key = f"{name}/{s}"
                    rows.setdefault(f"JPEG {sub_name}, noisy input", {})[key] = psnr(im, src.pixels)
                    outs = {}
                    for color in ("opponent", "channels"):
                        for refine in (False, True):
                            with torch.inference_mode():
                                out = denoise_array(model, src.pixels, color=color, refine=refine)
                            label = color + (" + refine" if refine else "")
                            outs[label] = out
                            rows.setdefault(f"JPEG {sub_name}, aetool {label}", {})[key] = psnr(
                                im, out
                            )
                    auto = _color_for(src, "auto")
                    for label in (auto, auto + " + refine"):
                        row = rows.setdefault(f"JPEG {sub_name}, aetool auto: {label}", {})
                        row[key] = psnr(im, outs[label])
    head = ["JPEG quality 95", *(f"mean σ{s}" for s in SIGMAS)]
    print("\nNoisy pictures stored as JPEG, PSNR in dB (mean of astronaut and coffee):\n")
    print("| " + " | ".join(head) + " |")
    print("|---" + "|---:" * (len(head) - 1) + "|")
    for k, row in rows.items():
        means = [np.mean([row[f"{n}/{s}"] for n in clean]) for s in SIGMAS]
        print(f"| {k} | " + " | ".join(f"{v:.2f}" for v in means) + " |")
    return rows


if __name__ == "__main__":
    main()
