"""Scoring throughput and peak memory of ``aetool score`` for 5,000 vs 50,000 images.

Writes 50,000 random-blob 8x8 grayscale PNGs once (the first 5,000 in their
own folder too), trains a tiny conv model for 3 epochs, then runs
``aetool score DIR -q > /dev/null`` in a fresh process per size (one torch
thread) and reads that process's peak RSS (``ru_maxrss`` of the waited
child, via a wrapper process so each size is measured on its own). A run on
100 images gives the fixed start-up cost (imports, model load), subtracted
for the "scoring only" rate. Memory must stay flat as the count grows: only
the path list and two numbers per image are kept.

Run: ``python benchmarks/score_streaming.py`` (about 1-3 minutes on one core).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from aetool.data.cache import load_images
from aetool.models.registry import ModelConfig
from aetool.training.config import TrainConfig
from aetool.training.loop import train

torch.set_num_threads(1)

SIZES = (100, 5_000, 50_000)
SIDE = 8

_WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": rc, "wall": wall, "maxrss_kb": kb}))
"""


def write_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    for i in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05) * 230 + rng.normal(
            0, 4, (SIDE, SIDE)
        )
        sub = root / f"{i // 1000:03d}"  # 1,000 files per folder
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8), "L").save(sub / f"{i:06d}.png")


def measure(folder: Path, model: Path) -> dict:
    cmd = [sys.executable, "-m", "aetool", "score", str(folder), "-m", str(model), "-q",
           "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True,
                         env=env, check=True)  # fmt: skip
    res = json.loads(out.stdout)
    if res["rc"] != 0:
        raise SystemExit(f"aetool score failed with status {res['rc']}")
    return res


def main() -> None:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aetool-stream-") as tmp:
        root = Path(tmp)
        for n in SIZES:
            write_images(root / f"n{n}", n)
        print(f"wrote {sum(SIZES):,} PNGs ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        result = train(
            load_images([root / "n5000" / "000"]),
            ModelConfig(arch="conv", latent_dim=8),
            TrainConfig(epochs=3, device="cpu"),
        )
        model = result.save(root / "model.safetensors")
        runs = {n: measure(root / f"n{n}", model) for n in SIZES}
    base = runs[SIZES[0]]["wall"]
    print("| images | wall s | images/s (wall) | images/s (minus start-up) | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for n, r in runs.items():
        net = r["wall"] - base
        rate = f"{(n - SIZES[0]) / net:,.0f}" if n > SIZES[0] and net > 0 else "-"
        print(f"| {n:,} | {r['wall']:.1f} | {n / r['wall']:,.0f} | {rate} | "
              f"{r['maxrss_kb'] / 1024:.0f} |")  # fmt: skip
    grow = (runs[50_000]["maxrss_kb"] - runs[5_000]["maxrss_kb"]) / 1024
    print(f"\nPeak RSS growth 5,000 -> 50,000 images: {grow:+.0f} MiB "
          f"({grow * 1024 / 45_000:.2f} KiB per extra image); "
          f"{SIDE}x{SIDE} PNGs, batch 64, one torch thread; "
          f"total {time.perf_counter() - t0:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
