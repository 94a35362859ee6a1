"""Training, scoring and denoising throughput on one device (CUDA by default).

Called by ``benchmarks/gpu_check.sh``; also runs on the CPU for a dry run::

    python benchmarks/gpu_bench.py --device cuda --out gpu_figures.txt
    python benchmarks/gpu_bench.py --device cpu --quick          # seconds, to check it runs

Sections (each guarded: a failure is written down and the next one runs):

1. training: conv autoencoder on 10,000 generated 28x28 images held in memory,
   AMP on/off; images/s is the median of the epochs after the first;
2. scoring: the trained model over the same 10,000 images, in memory (uint8
   from pinned memory, float conversion on the device, MSE and SSIM scores)
   and end to end with ``aetool score`` on a PNG folder (decoding included);
3. denoising: the fully convolutional ``denoiser`` on 256x256 images: forward
   passes (fp32 and autocast), ``denoise_array`` (tiled), ``aetool train``
   (one epoch) and ``aetool denoise`` on a PNG folder;
4. training again with ``torch.compile`` (last: compiling is slow; the first
   epoch's seconds include it).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aetool.anomaly.scores import image_scores
from aetool.data.cache import ImageSet
from aetool.data.inputs import ImageRef
from aetool.devices import autocast_dtype, resolve_device
from aetool.models.registry import ModelConfig, create_model
from aetool.training.config import TrainConfig
from aetool.training.loop import train
from aetool.training.record import TrainResult

OUT: list[Path] = []  # the figures file, written line by line so a timeout keeps them


def emit(line: str = "") -> None:
    print(line, flush=True)
    for path in OUT:
        with open(path, "a") as f:
            f.write(line + "\n")


def blobs(n: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 1, size, size) smooth random blobs with a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx, cy = rng.uniform(0.3, 0.7, (2, n, 1, 1))
    r = rng.uniform(0.15, 0.3, (n, 1, 1))
    img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2)) * 220
    img = img + rng.normal(0, 3, img.shape)
    return img.clip(0, 255).astype(np.uint8)[:, None]


def image_set(data: np.ndarray) -> ImageSet:
    refs = [ImageRef(Path(f"memory/{i:05d}.png"), f"{i:05d}.png") for i in range(len(data))]
    return ImageSet(refs, data, 1, (data.shape[2], data.shape[3]))


def write_pngs(root: Path, data: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(data):
        Image.fromarray(a[0]).save(root / f"{i:05d}.png")
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def section(title: str, fn: Callable[[], None]) -> None:
    emit(f"\n## {title}")
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # a missing piece must not stop the other figures
        emit(f"FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    emit(f"({time.perf_counter() - t0:.1f} s)")


def aetool_cli(*args: str) -> float:
    """Run ``python -m aetool ARGS`` (stdout discarded) and return its wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "aetool", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"aetool {args[0]} exited {proc.returncode}: {proc.stderr[-800:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path("gpu_figures.txt"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a dry run")
    args = ap.parse_args()
    q = args.quick
    n_train, size, epochs = (512, 28, 2) if q else (10_000, 28, 5)
    n_den, den_size = (4, 64) if q else (64, 256)
    device = resolve_device(args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    OUT.append(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="aetool-bench-"))
    trained: dict[str, TrainResult] = {}

    emit("# aetool device benchmark")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    emit(f"device {device} ({name}); torch {torch.__version__}; python {platform.python_version()}")
    emit(f"autocast dtype {autocast_dtype(device)}; {os.cpu_count()} CPU cores; quick={q}")

    data = blobs(n_train, size)
    images = image_set(data)

    amp_opts = (True, False) if device.type == "cuda" else (False,)

    def training(compile_: bool = False) -> None:
        emit(f"conv AE, {n_train} images {size}x{size} in memory, {epochs} epochs")
        emit(f"{'batch':>5} {'amp':>5} {'compile':>7} {'img/s':>9} {'epoch1 s':>9} {'val loss':>9}")
        runs = [(256, amp, compile_) for amp in amp_opts]
        if not compile_:
            runs.insert(0, (64, amp_opts[0], False))
        for batch, amp, comp in runs:
            cfg = TrainConfig(epochs=epochs, batch_size=batch, device=str(device), amp=amp,
                              compile=comp, patience=0, seed=0)  # fmt: skip
            try:
                res = train(images, ModelConfig(arch="conv", latent_dim=16), cfg)
            except Exception as exc:
                emit(f"{batch:>5} {amp!s:>5} {comp!s:>7}  FAILED: {type(exc).__name__}: {exc}")
                continue
            trained.setdefault("conv", res)
            rates = [r.images_per_s for r in res.history]
            emit(
                f"{batch:>5} {amp!s:>5} {comp!s:>7} {statistics.median(rates[1:] or rates):>9,.0f}"
                f" {res.history[0].seconds:>9.2f} {res.history[-1].val_loss:>9.5f}"
            )

    def scoring() -> None:
        model = (trained["conv"].model if "conv" in trained else create_model("conv")).to(device)
        model.eval()
        cache = torch.from_numpy(data)
        if device.type == "cuda":
            cache = cache.pin_memory()
        for kind in ("mse", "ssim"):
            for batch in (256, 1024):
                sync(device)
                t0 = time.perf_counter()
                out = []
                with torch.inference_mode():
                    for i in range(0, len(cache), batch):
                        x = cache[i : i + batch].to(device, non_blocking=True).float().div_(255)
                        out.append(image_scores(x, model(x), kind).cpu())
                sync(device)
                dt = time.perf_counter() - t0
                emit(f"in memory, {kind:<4} batch {batch:>4}: {len(cache) / dt:>10,.0f} img/s")
        if "conv" in trained:
            model_path = trained["conv"].save(tmp / "conv.safetensors")
            folder = write_pngs(tmp / "score-imgs", data)
            wall = aetool_cli("score", str(folder), "-m", str(model_path), "--device",
                              str(device), "-q", "--batch-size", "256")  # fmt: skip
            emit(f"aetool score, {len(data)} PNGs (decode + start-up): {wall:.1f} s, "
                 f"{len(data) / wall:,.0f} img/s")  # fmt: skip

    def denoising() -> None:
        torch.manual_seed(0)
        model = create_model("denoiser", channels=1).to(device).eval()
        x = torch.rand(16, 1, den_size, den_size, device=device)
        amp = autocast_dtype(device)
        for label, dtype in (("fp32", None), (f"autocast {amp}", amp)):
            if label != "fp32" and dtype is None:
                continue
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                        enabled=dtype is not None):  # fmt: skip
                for _ in range(3):
                    model(x)
                sync(device)
                t0 = time.perf_counter()
                reps = 3 if q else 20
                for _ in range(reps):
                    model(x)
                sync(device)
            dt = time.perf_counter() - t0
            rate = reps * len(x) / dt
            emit(f"denoiser forward {den_size}x{den_size} batch 16, {label}: {rate:,.0f} img/s, "
                 f"{rate * den_size * den_size / 1e6:,.1f} MP/s")  # fmt: skip
        try:
            from aetool.denoise.array import denoise_array
        except ImportError as exc:
            emit(f"denoise_array unavailable: {exc}")
        else:
            noisy = blobs(n_den, den_size, seed=1).astype(np.float32) / 255
            sync(device)
            t0 = time.perf_counter()
            for img in noisy:
                denoise_array(model, img, device=device)
            sync(device)
            dt = time.perf_counter() - t0
            emit(f"denoise_array (tiled), {n_den} images {den_size}x{den_size}: "
                 f"{n_den / dt:,.1f} img/s")  # fmt: skip
        folder = write_pngs(tmp / "den-imgs", blobs(n_den, den_size, seed=2))
        model_path = tmp / "denoiser.safetensors"
        wall = aetool_cli("train", str(folder), "-o", str(model_path), "--arch", "denoiser",
                          "--epochs", "1", "--batch-size", "8", "--noise", "gaussian:0.1",
                          "--device", str(device), "-q")  # fmt: skip
        emit(f"aetool train denoiser, 1 epoch on {n_den} PNGs (start-up included): {wall:.1f} s")
        wall = aetool_cli("denoise", str(folder), str(tmp / "den-out"), "-m", str(model_path),
                          "--device", str(device), "-q")  # fmt: skip
        emit(f"aetool denoise, {n_den} PNGs {den_size}x{den_size} (decode + encode + start-up): "
             f"{wall:.1f} s, {n_den / wall:,.1f} img/s")  # fmt: skip

    section("training throughput", training)
    section("scoring throughput", scoring)
    section("denoising throughput", denoising)
    section("training throughput with torch.compile", lambda: training(compile_=True))
    print(f"figures appended to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
