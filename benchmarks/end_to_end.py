"""End to end beside model-only: ``aetool denoise`` and ``aetool score`` against the network.

Called by ``benchmarks/gpu_check.sh`` (on a GPU, and with ``--device cpu`` on a CPU);
every figure is images/s, so the gap between the pipeline and the network is one
division away:

1. denoising, the bundled denoiser on ``--denoise-images`` noisy 256x256 grayscale PNG
   crops of scikit-image sample pictures (sigma 20):
   * model only: its forward passes on the images held in memory, 8 a pass;
   * in memory, one image at a time (:func:`aetool.denoise.array.denoise_array`), without
     and with the refinement: the refinement's cost as a ratio to the network's
     (``(network + refinement) / network``), and the mean PSNR against the clean crops;
   * end to end: ``aetool denoise`` in a fresh process (start-up, decode, encode and
     writes included), ``--refine off`` and ``--refine on``, with the mean PSNR of the
     files written;
2. scoring, a ``conv`` autoencoder trained for one epoch on 1,000 other 28x28 images,
   on ``--score-images`` 28x28 PNGs: model only (uint8 held in memory, 1,024 a pass,
   forward and MSE score) and ``aetool score`` end to end in a fresh process, with the
   decoding processes it chooses and with threads only (``AETOOL_DECODE_PROCESSES=0``).

    python benchmarks/end_to_end.py --device cuda                     # 1,000 / 10,000 images
    python benchmarks/end_to_end.py --device cpu --denoise-images 100 --score-images 2000

Run against another tree (for a before/after on the same machine) with
``PYTHONPATH=/that/tree``: the subprocesses inherit it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from denoise_throughput import _sources  # noqa: E402
from gpu_bench import blobs, write_pngs  # noqa: E402

OUT: list[Path] = []


def emit(line: str = "") -> None:
    print(line, flush=True)
    for path in OUT:
        with open(path, "a") as f:
            f.write(line + "\n")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def cli(*args: str, env: dict[str, str] | None = None) -> float:
    """Wall time of ``python -m aetool ARGS`` in a fresh process (stdout discarded)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "aetool", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})})  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"aetool {args[0]} exited {proc.returncode}: {proc.stderr[-800:]}")
    return time.perf_counter() - t0


def crops(n: int, size: int = 256, sigma: float = 20, seed: int = 0) -> tuple[np.ndarray, ...]:
    """uint8 clean and noisy (n, size, size) crops of the sample pictures."""
    rng = np.random.default_rng(seed)
    sources = [s for s in _sources() if min(s.shape) >= size]
    clean = np.empty((n, size, size), np.uint8)
    noisy = np.empty_like(clean)
    for i in range(n):
        src = sources[i % len(sources)]
        y = rng.integers(0, src.shape[0] - size + 1)
        x = rng.integers(0, src.shape[1] - size + 1)
        crop = src[y : y + size, x : x + size]
        clean[i] = np.clip(crop, 0, 255).astype(np.uint8)
        noisy[i] = np.clip(crop + rng.normal(0, sigma, crop.shape), 0, 255).astype(np.uint8)
    return clean, noisy


def psnr_u8(clean: np.ndarray, out: np.ndarray) -> float:
    mse = np.mean((clean.astype(np.float64) - out.astype(np.float64)) ** 2, axis=(1, 2))
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))))


def denoising(n: int, device: torch.device, tmp: Path) -> None:
    from aetool.denoise.array import denoise_array
    from aetool.devices import fast_layout
    from aetool.models.bundled import bundled_model_path
    from aetool.models.file import load_model

    clean, noisy = crops(n)
    folder = write_pngs(tmp / "den-in", noisy[:, None])
    model = load_model(bundled_model_path(), device=device).model.eval()
    fast_layout(model, device)
    x = torch.from_numpy(noisy[:, None].astype(np.float32) / 255)

    def forward() -> None:
        with torch.inference_mode():
            for i in range(0, n, 8):
                model(x[i : i + 8].to(device)).float().cpu()

    forward()  # warm-up
    net = timed(forward, device)
    emit(f"model only: denoiser forward, {n} images 256x256, 8 a pass: {n / net:,.1f} img/s")
    planes = noisy.astype(np.float32) / 255
    outs = {}
    secs = {}
    for refine in (False, True):
        denoise_array(model, planes[0], device=device, refine=refine)  # warm-up
        res: list[np.ndarray] = []
        secs[refine] = timed(
            lambda r=refine, o=res: o.extend(
                denoise_array(model, p, device=device, refine=r) for p in planes
            ),
            device,
        )
        outs[refine] = np.stack([np.round(np.clip(o, 0, 1) * 255) for o in res])
    for refine in (False, True):
        emit(f"in memory, denoise_array one at a time, refine {'on ' if refine else 'off'}: "
             f"{n / secs[refine]:,.1f} img/s, PSNR {psnr_u8(clean, outs[refine]):.3f} dB")  # fmt: skip
    emit(f"refinement cost: (network + refinement) / network = {secs[True] / secs[False]:.2f}")
    for refine in ("off", "on"):
        out = tmp / f"den-out-{refine}"
        wall = cli("denoise", str(folder), str(out), "--device", str(device), "-q",
                   "--refine", refine)  # fmt: skip
        got = np.stack([np.asarray(Image.open(out / f"{i:05d}.png")) for i in range(n)])
        emit(f"end to end: aetool denoise --refine {refine}, {n} PNGs 256x256 (start-up "
             f"included): {wall:.1f} s, {n / wall:,.1f} img/s, PSNR {psnr_u8(clean, got):.3f} dB")  # fmt: skip


def scoring(n: int, device: torch.device, tmp: Path) -> None:
    from aetool.anomaly.scores import image_scores
    from aetool.models.file import load_model

    train_dir = write_pngs(tmp / "score-train", blobs(1000, 28, seed=5))
    model_path = tmp / "conv.safetensors"
    cli("train", str(train_dir), "-o", str(model_path), "--arch", "conv", "--epochs", "1",
        "--device", str(device), "-q")  # fmt: skip
    data = blobs(n, 28, seed=6)
    folder = write_pngs(tmp / "score-in", data)
    model = load_model(model_path, device=device).model.eval()
    cache = torch.from_numpy(data)

    def forward() -> None:
        with torch.inference_mode():
            for i in range(0, n, 1024):
                xb = cache[i : i + 1024].to(device).float().div_(255)
                image_scores(xb, model(xb), "mse").cpu()

    forward()
    net = timed(forward, device)
    emit(f"model only: conv forward + MSE, {n} images 28x28 in memory, 1,024 a pass: "
         f"{n / net:,.0f} img/s")  # fmt: skip
    for how, env in (("decoding processes as chosen", {}),
                     ("decoding threads only", {"AETOOL_DECODE_PROCESSES": "0"})):  # fmt: skip
        wall = cli("score", str(folder), "-m", str(model_path), "--device", str(device), "-q",
                   "--batch-size", "1024", env=env)  # fmt: skip
        emit(f"end to end: aetool score, {n} PNGs 28x28 (start-up included), {how}: "
             f"{wall:.1f} s, {n / wall:,.0f} img/s")  # fmt: skip
    wall = cli("info", str(model_path))
    emit(f"start-up alone: aetool info on the model file: {wall:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--denoise-images", type=int, default=1000)
    ap.add_argument("--score-images", type=int, default=10_000)
    ap.add_argument("--out", type=Path, help="append the figures to this file too")
    args = ap.parse_args()
    from aetool.devices import resolve_device

    device = resolve_device(args.device)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        OUT.append(args.out)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    emit(f"\n## end to end vs model only on {device} ({name}); {os.cpu_count()} CPU cores, "
         f"torch threads {torch.get_num_threads()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="aetool-e2e-") as tmp:
        for title, fn, n in (("denoising", denoising, args.denoise_images),
                             ("scoring", scoring, args.score_images)):  # fmt: skip
            if n <= 0:
                continue
            emit(f"### {title}")
            t0 = time.perf_counter()
            try:
                fn(n, device, Path(tmp))
            except Exception as exc:  # a failed section must not hide the others' figures
                emit(f"FAILED: {type(exc).__name__}: {exc}")
            emit(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
