"""Denoising throughput and memory: images/s on a folder, peak RSS of tiled large images.

1. Throughput: ``--images`` (1,000) noisy 256x256 grayscale PNG crops of
   scikit-image sample pictures, denoised by :func:`aetool.denoise.pipeline.denoise_images`
   with the bundled denoiser (``aetool denoise``'s default model), written to a
   second folder.
2. Memory: one noisy N x N image (N = 1000, 2000, 4000) denoised in a fresh
   subprocess each, tiled at 256 px, and untiled at 1000 and 2000 px for contrast.
   Peak RSS (``VmHWM``) minus the RSS after loading torch and the model is
   the cost of denoising; the image buffers (the decoded input and the float32
   output, 8 bytes per pixel) are listed beside it: the rest is the model's
   working memory, which tiling keeps at the size of a few tiles.

``--refine both`` (the default) measures the throughput without and with the
collaborative Wiener refinement (:mod:`aetool.denoise.refine`, which ``aetool denoise``
runs by default with the bundled model: the crops' noise, sigma 20, is within
its range), and the memory with it, in 512 px tiles of its own.

    python benchmarks/denoise_throughput.py                # about 6-8 minutes on 1 core
    python benchmarks/denoise_throughput.py --images 200 --threads 2

"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _model():
    """The bundled grayscale denoiser, the model ``aetool denoise`` uses by default."""
    from aetool.models.bundled import bundled_model_path
    from aetool.models.file import load_model

    path = bundled_model_path()
    model = load_model(path).model.eval()
    n = sum(p.numel() for p in model.parameters())
    return model, f"{path.name} ({n:,} parameters)"


def _sources() -> list[np.ndarray]:
    from skimage import color, data

    imgs = [data.camera(), data.moon(), data.coins(), data.page(), data.text()]
    imgs += [color.rgb2gray(data.astronaut()) * 255, color.rgb2gray(data.coffee()) * 255]
    return [np.asarray(i, dtype=np.float32) for i in imgs]


def make_folder(root: Path, n: int, size: int = 256, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = [s for s in _sources() if min(s.shape) >= size]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = sources[i % len(sources)]
        y = rng.integers(0, src.shape[0] - size + 1)
        x = rng.integers(0, src.shape[1] - size + 1)
        crop = src[y : y + size, x : x + size] + rng.normal(0, 20, (size, size))
        Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).save(root / f"{i:04d}.png")


def throughput(n: int, threads: int, refine: bool) -> dict[str, object]:
    import torch

    from aetool.denoise.pipeline import denoise_images

    torch.set_num_threads(threads)
    model, desc = _model()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        t0 = time.perf_counter()
        make_folder(src, n)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = list(denoise_images([src], out, model, device="cpu", refine=refine))
        seconds = time.perf_counter() - t0
        written = sum(r.status == "written" for r in results)
    return {"model": desc, "images": written, "seconds": seconds, "images_per_s": written / seconds,
            "setup_s": made}  # fmt: skip


def _rss_mb() -> float:
    """This process's peak RSS in MB.

    ``VmHWM`` (Linux) starts afresh at exec; ``ru_maxrss`` does not: a child
    started by a big parent would report the parent's peak as its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_big(path: Path, size: int) -> None:
    """A noisy smooth pattern, size x size, 8-bit grayscale PNG."""
    from PIL import Image

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 127 + 80 * np.sin(9 * xx) * np.cos(7 * yy)
    img += np.random.default_rng(0).normal(0, 20, img.shape).astype(np.float32)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)


def memory_child(path: str, tile: int, threads: int, refine: bool) -> None:
    """Run in a subprocess: denoise one image file, print peak RSS as JSON."""
    import torch

    from aetool.denoise.pipeline import denoise_images

    torch.set_num_threads(threads)
    model, _ = _model()
    with torch.no_grad():  # load the kernels (small, so the baseline excludes the work)
        model(torch.rand(1, 1, 64, 64))
    base = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        (r,) = denoise_images(
            [path], Path(tmp) / "out", model, device="cpu", tile=tile, refine=refine
        )
        seconds = time.perf_counter() - t0
        assert r.status == "written", r.error
    print(json.dumps({"tile": tile, "base_mb": base, "peak_mb": _rss_mb(), "seconds": seconds}))


def memory(path: Path, tile: int, threads: int, refine: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--memory-child", str(path), str(tile), str(threads),
           str(int(refine))]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="aetool denoising throughput and memory")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="1000,2000,4000")
    parser.add_argument("--untiled", default="1000,2000", help="sizes also run untiled")
    parser.add_argument(
        "--refine", choices=["off", "on", "both"], default="both",
        help="collaborative Wiener refinement (aetool denoise's default for the bundled "
        "model is on): throughput without, with, or both; memory runs with it on for both",
    )  # fmt: skip
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        path, tile, threads, refine = args.memory_child
        memory_child(path, int(tile), int(threads), bool(int(refine)))
        return
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.refine]

    for refine in modes if args.images else []:
        t = throughput(args.images, args.threads, refine)
        print(f"model: {t['model']}, {args.threads} thread(s), refine {'on' if refine else 'off'}")
        print(f"throughput: {t['images']} images of 256x256 in {t['seconds']:.1f} s = "
              f"{t['images_per_s']:.1f} images/s (decode + denoise + encode + write)\n")  # fmt: skip

    runs = [(int(s), 256) for s in args.sizes.split(",")]
    runs += [(int(s), 100_000) for s in args.untiled.split(",") if s]
    refine = modes[-1]
    print(f"refine {'on' if refine else 'off'}:")
    print(f"{'image':>11} {'tiling':>10} {'time s':>7} {'base MB':>8} {'peak MB':>8} "
          f"{'delta MB':>9} {'img bufs MB':>12} {'model MB':>9}")  # fmt: skip
    tmp = tempfile.TemporaryDirectory()
    for size, tile in runs:
        path = Path(tmp.name) / f"big{size}.png"
        if not path.exists():
            write_big(path, size)
        m = memory(path, tile, args.threads, refine)
        delta = m["peak_mb"] - m["base_mb"]
        buffers = size * size * 8 / 2**20  # float32 input + float32 output
        label = f"{tile} px" if tile < size else "whole"
        print(f"{size:>5}x{size:<5} {label:>10} {m['seconds']:>7.1f} {m['base_mb']:>8.0f} "
              f"{m['peak_mb']:>8.0f} {delta:>9.0f} {buffers:>12.0f} {delta - buffers:>9.0f}")  # fmt: skip
    tmp.cleanup()


if __name__ == "__main__":
    main()
