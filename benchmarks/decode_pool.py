"""Decoding for ``aetool score`` / ``export``: worker threads against worker processes.

Writes ``--files`` 28x28 grayscale PNGs (scikit-learn's digits, enlarged) and
decodes them all with :func:`aetool.data.cache.iter_batches` at batch 256, with
threads (the default below :data:`~aetool.data.cache.PROCESS_MIN_IMAGES` images
or :data:`~aetool.data.cache.PROCESS_MIN_CPUS` cores) and with 2, 4, ... worker
processes up to the machine's cores less one (pool start-up included). Best of
``--rounds``, rounds alternating, so the ratios compare like with like on a
shared machine. Also checks that every way decodes the same bytes.

    python benchmarks/decode_pool.py --files 10000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from sklearn.datasets import load_digits

    from aetool.data.cache import iter_batches
    from aetool.data.inputs import find_images

    digits = (load_digits().images * 255 / 16).astype(np.uint8)
    cpus = os.cpu_count() or 1
    ways = [0] + [n for n in (1, 2, 4, 8, 15) if n <= max(2, cpus - 1)]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.files):
            im = Image.fromarray(digits[i % len(digits)]).resize((28, 28), Image.BILINEAR)
            im.save(Path(tmp) / f"{i:05d}.png")
        refs, _ = find_images([tmp])
        best: dict[int, float] = {}
        sums: dict[int, int] = {}
        for _ in range(args.rounds):
            for n in ways:
                t = time.perf_counter()
                total = 0
                for b in iter_batches(refs, channels=1, size=(28, 28), batch_size=256,
                                      processes=n):  # fmt: skip
                    total += int(b.data.astype(np.int64).sum()) + len(b.refs)
                best[n] = min(best.get(n, 1e9), time.perf_counter() - t)
                sums[n] = total
    assert len(set(sums.values())) == 1, f"the ways decoded different bytes: {sums}"
    print(f"{args.files} PNGs 28x28, {cpus} cores, best of {args.rounds}")
    print("| decoding | seconds | images/s | vs threads |")
    print("|---|---:|---:|---:|")
    for n in ways:
        name = "threads (up to 8)" if n == 0 else f"{n} processes"
        print(
            f"| {name} | {best[n]:.2f} | {args.files / best[n]:,.0f} | {best[0] / best[n]:.2f}x |"
        )


if __name__ == "__main__":
    main()
