"""ELPV solar cells: aetool's defaults as a user runs them, against PCA on pixels.

The issue-17 protocol, per cell type (mono, poly) separately: normal cells
(defect probability 0) split 80/20 by ``sha256(file name) % 5 == 0`` (test);
test anomalies are the cells with probability 1.0. The images (300x300,
8-bit grayscale) are written into an MVTec-like layout in a temporary folder
(``train/good``, ``test/good``, ``test/defect``) and aetool runs exactly as a
user would: ``aetool train train/good`` with its defaults, then ``aetool
score test --report r.json`` (labels from the folders, ``--threshold auto``).
Reported: image ROC AUC, average precision, recall and false-positive rate
at the automatic threshold, and the training time. The baseline is PCA with 8
components on the normal training images at 64x64 (mean squared
reconstruction error), fitted and scored in the same script.

Needs the ``bench`` extra (``elpv-dataset``, CC BY-NC-SA: benchmark only,
never shipped or used in tests). Run::

    python benchmarks/elpv.py                      # defaults, both types
    python benchmarks/elpv.py --types mono --train-args "--arch conv"

``--train-args`` passes extra options to ``aetool train`` (for example
``--time-budget 5`` or ``--arch conv``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PCA_SIZE = 64
PCA_COMPONENTS = 8


def is_test(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 5 == 0


def load_split(cell_type: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``train``, ``test_good``, ``test_defect``: (file name, uint8 image) lists."""
    import elpv_dataset
    from elpv_dataset.utils import load_dataset

    images, probs, types = load_dataset()
    labels = Path(elpv_dataset.__file__).parent / "data" / "labels.csv"
    names = [line.split()[0] for line in labels.read_text().splitlines() if line.strip()]
    assert len(names) == len(images)
    out: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test_good": [], "test_defect": []}
    for im, p, t, n in zip(images, probs, types, names, strict=True):
        if t != cell_type:
            continue
        if p == 0:
            out["test_good" if is_test(n) else "train"].append((n, im))
        elif p == 1.0:
            out["test_defect"].append((n, im))
    return out


def write_layout(split: dict[str, list[tuple[str, np.ndarray]]], root: Path) -> None:
    folders = {"train": "train/good", "test_good": "test/good", "test_defect": "test/defect"}
    for key, folder in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, im in split[key]:
            Image.fromarray(im).save(root / folder / Path(name).name)


def _auc_ap(neg: np.ndarray, pos: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]
    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def pca_baseline(split: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, float]:
    def flat(items: list[tuple[str, np.ndarray]]) -> np.ndarray:
        small = [
            np.asarray(Image.fromarray(im).resize((PCA_SIZE, PCA_SIZE), Image.BILINEAR))
            for _, im in items
        ]
        return np.stack(small).reshape(len(small), -1).astype(np.float64) / 255

    t0 = time.perf_counter()
    train = flat(split["train"])
    mean = train.mean(0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    basis = vt[:PCA_COMPONENTS]
    seconds = time.perf_counter() - t0

    def score(x: np.ndarray) -> np.ndarray:
        c = x - mean
        return ((c - (c @ basis.T) @ basis) ** 2).mean(1)

    auc, ap = _auc_ap(score(flat(split["test_good"])), score(flat(split["test_defect"])))
    return {"roc_auc": auc, "ap": ap, "train_s": seconds}


def run_aetool(root: Path, train_args: list[str]) -> dict[str, float | str]:
    aetool = [sys.executable, "-m", "aetool"]
    model = root / "model.safetensors"
    t0 = time.perf_counter()
    subprocess.run([*aetool, "train", str(root / "train/good"), "-o", str(model), *train_args],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    wall = time.perf_counter() - t0
    meta = json.loads(subprocess.run([*aetool, "info", str(model), "--json"], check=True,
                                     capture_output=True, text=True).stdout)  # fmt: skip
    subprocess.run([*aetool, "score", str(root / "test"), "-m", str(model), "--report",
                    str(root / "r.json"), "-q"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    report = json.loads((root / "r.json").read_text())
    m = report["metrics"]
    c = m["confusion"]
    return {
        "arch": meta["arch"],
        "size": f"{meta['preprocessing']['height']}x{meta['preprocessing']['width']}",
        "score": report["score_kind"],
        "roc_auc": m["roc_auc"],
        "ap": m["average_precision"],
        "recall": m["recall"],
        "fpr": c["fp"] / max(1, c["fp"] + c["tn"]),
        "train_s": float(meta["training"]["seconds"]),
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", nargs="+", default=["mono", "poly"])
    ap.add_argument("--train-args", default="", help="extra `aetool train` options")
    args = ap.parse_args()
    print(
        "| type | model | size | score | image ROC AUC | AP | recall @auto | FPR @auto | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for cell_type in args.types:
        split = load_split(cell_type)
        counts = {k: len(v) for k, v in split.items()}
        print(f"<!-- {cell_type}: {counts} -->", flush=True)
        p = pca_baseline(split)
        print(f"| {cell_type} | PCA-{PCA_COMPONENTS} pixels | {PCA_SIZE}x{PCA_SIZE} | mse | "
              f"{p['roc_auc']:.3f} | {p['ap']:.3f} | | | {p['train_s']:.1f} |", flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_layout(split, root)
            r = run_aetool(root, shlex.split(args.train_args))
        label = f"aetool {args.train_args or 'defaults'} ({r['arch']})"
        print(f"| {cell_type} | {label} | {r['size']} | {r['score']} | {r['roc_auc']:.3f} | "
              f"{r['ap']:.3f} | {r['recall']:.3f} | {r['fpr']:.3f} | {r['train_s']:.0f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
