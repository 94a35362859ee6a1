"""Data-parallel training on the CPU: 1 process vs N processes (gloo), same global batch.

Writes a folder of generated 28x28 PNGs, then trains the conv model on it with
the same seed, epochs and global ``--batch-size``:

* ``1 proc``: ``python -m aetool train`` (all cores to one process),
* ``1 proc, 1 thread``: the same with OMP_NUM_THREADS=1,
* ``1 proc (torchrun, DDP)``: the DDP code path with one process (its overhead),
* ``N procs``: ``python -m torch.distributed.run --nproc-per-node N -m aetool train``
  with OMP_NUM_THREADS=1 per process (torchrun's own default).

and prints images/s (training epochs after the first, as recorded in the model
file), wall time including start-up and decoding, and the final validation
loss. Run::

    python benchmarks/distributed_train.py --images 4000 --epochs 4 --nproc 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from aetool.models.file import read_metadata


def write_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    """Smooth random blobs with a little noise: a learnable class of 'normal' images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        r = rng.uniform(0.15, 0.3)
        img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2)) * 220
        img = (img + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"img{i:05d}.png")


def run(
    label: str, launcher: list[str], train_args: list[str], out: Path, threads: int | None
) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [*launcher, "-m", "aetool", "train", *train_args, "-o", str(out), "--overwrite", "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
    t = read_metadata(out)["training"]
    rates = [e["images_per_s"] for e in t["epochs"]]
    return {
        "label": label,
        "world": t["world_size"],
        "img_s": statistics.median(rates[1:] or rates),
        "train_s": sum(e["seconds"] for e in t["epochs"]),
        "wall_s": wall,
        "val": t["history"]["val_loss"][-1],
        "same": "-"
        if not t.get("distributed")
        else str(len(set(t["distributed"]["rank_checksums"])) == 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64, help="global batch")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per setting, interleaved; best kept"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "imgs"
        write_images(data, args.images, args.size)
        common = [str(data), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
        common += ["--device", "cpu", "--patience", "0", "--seed", "0"]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        setups = [
            ("1 proc", [sys.executable], None),
            ("1 proc, 1 thread", [sys.executable], 1),
            ("1 proc (torchrun, DDP)", [*torchrun, "--nproc-per-node=1"], None),
            (
                f"{args.nproc} procs (torchrun, DDP)",
                [*torchrun, f"--nproc-per-node={args.nproc}"],
                1,
            ),
        ]
        # Interleaved repeats, best of each: the machine may be shared with other jobs.
        results: dict[str, list[dict[str, object]]] = {label: [] for label, _, _ in setups}
        for _ in range(args.repeat):
            for label, launcher, threads in setups:
                out = Path(tmp) / "m.safetensors"
                results[label].append(run(label, launcher, common, out, threads))
        rows = [max(rs, key=lambda r: r["img_s"]) for rs in results.values()]  # type: ignore[arg-type, return-value]
    print(
        f"conv AE, {args.images} images {args.size}x{args.size}, {args.epochs} epochs, "
        f"global batch {args.batch_size}, gloo on CPU ({os.cpu_count()} cores)"
    )
    print(f"{'run':<26}{'img/s':>9}{'train s':>9}{'wall s':>9}{'final val':>11}{'ranks same':>12}")
    base = rows[0]["img_s"]
    for r in rows:
        print(
            f"{r['label']:<26}{r['img_s']:>9,.0f}{r['train_s']:>9.1f}{r['wall_s']:>9.1f}"
            f"{r['val']:>11.5f}{r['same']:>12}  ({r['img_s'] / base:.2f}x)"  # type: ignore[operator]
        )


if __name__ == "__main__":
    main()
