"""Input discovery and label inference per file: what ``aetool score`` does before decoding.

A folder of ``--files`` tiny PNGs (``good/`` and ``bad/`` halves); the best of
``--rounds`` of :func:`aetool.data.inputs.collect_images`, of
:func:`aetool.anomaly.labels.label_key` over the refs and of
:func:`aetool.anomaly.labels.infer_labels` over the keys. For a before/after, run it
against each tree (``PYTHONPATH=/that/tree``), alternating.

    python benchmarks/discovery.py --files 3000
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    from aetool.anomaly.labels import infer_labels, label_key
    from aetool.data.inputs import collect_images

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.files):
            folder = Path(tmp) / "test" / ("good" if i % 2 else "bad")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / f"{i:05d}.png")
        root = str(Path(tmp) / "test")
        refs, _, _ = collect_images([root])
        keys = [label_key(r) for r in refs]
        labels = infer_labels(keys)
        assert len(refs) == args.files and labels.count(0) == args.files // 2
        best = {
            "collect_images": lambda: collect_images([root]),
            "label_key": lambda: [label_key(r) for r in refs],
            "infer_labels": lambda: infer_labels(keys),
        }
        times = {k: min(timeit.repeat(f, number=1, repeat=args.rounds)) for k, f in best.items()}
    print(f"{args.files} files: " + ", ".join(f"{k} {v:.3f} s" for k, v in times.items()))


if __name__ == "__main__":
    main()
