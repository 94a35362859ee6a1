"""Synthetic texture defects: image and pixel ROC AUC for each ``--score``.

For scikit-image's brick, grass and gravel (512x512 grayscale): normal
images are random 64x64 crops of the left half (x < 256), test images random
crops of the right half; half of the test crops get one synthetic defect
(bright/dark scratch, uniform blob, or soft intensity spot) whose mask is
known. The crops are written in the MVTec-AD layout (``train/good``,
``test/good``, ``test/<defect>``, ``ground_truth/<defect>/<name>_mask.png``),
a model is trained per texture with exactly aetool's defaults
(``ModelConfig()``, ``TrainConfig(device="cpu")``: conv, latent 16, automatic
epochs and patience), and ``score_images`` reports image ROC AUC and pixel
ROC AUC (error map vs mask) for mse, ssim and max-local. With 120 test crops
(60 defective) per texture, differences below about 0.03 are noise.

``--draem MINUTES`` adds the model ``aetool train`` now picks for 64x64 images
(``--arch auto`` -> ``draem``, :func:`aetool.training.draem.train_draem` with
batch 16 and that time budget; the CLI default is 10 minutes) and PCA with 8
components on the pixels (residual maps for pixel metrics); every row then
also reports AUPRO (FPR up to 0.3).

Run: ``python benchmarks/texture_defects.py`` (about 3-4 minutes of CPU on one core);
``python benchmarks/texture_defects.py --draem 10`` (about 35 minutes).
``--seed N`` draws other crops and defects: the default seed 0 is the recorded test set,
other seeds are validation sets for choosing settings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from aetool.anomaly.evaluation import aupro, pixel_roc_auc
from aetool.anomaly.pipeline import score_images
from aetool.anomaly.scores import SCORE_KINDS
from aetool.data.cache import load_images
from aetool.models.file import load_model
from aetool.models.registry import ModelConfig
from aetool.training.config import TrainConfig
from aetool.training.draem import DRAEM_BATCH, train_draem
from aetool.training.loop import train

torch.set_num_threads(1)

CROP = 64
N_TRAIN = 400
N_TEST = 120  # half normal, half with a defect
TEXTURES = ("brick", "grass", "gravel")
DEFECTS = ("scratch", "blob", "spot")


def _crops(img: np.ndarray, x_lo: int, x_hi: int, n: int, rng: np.random.Generator) -> np.ndarray:
    ys = rng.integers(0, img.shape[0] - CROP + 1, n)
    xs = rng.integers(x_lo, x_hi - CROP + 1, n)
    return np.stack([img[y : y + CROP, x : x + CROP] for y, x in zip(ys, xs, strict=True)])


def add_defect(
    img: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One defect; returns the float image in [0, 1] and the boolean mask."""
    out = img.astype(np.float64) / 255
    yy, xx = np.mgrid[0:CROP, 0:CROP].astype(np.float64)
    cy, cx = rng.uniform(12, CROP - 12, 2)
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(20, 40)
        d_perp = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
        d_along = np.abs((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle))
        mask = (d_perp <= 1.0) & (d_along <= length / 2)
        out[mask] = 1.0 if rng.random() < 0.5 else 0.0
    elif kind == "blob":
        r = rng.uniform(3, 7)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        out[mask] = rng.choice([0.05, 0.95])
    else:  # soft spot: intensity shift under a Gaussian, masked where it is noticeable
        r = rng.uniform(4, 8)
        g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        out = np.clip(out + rng.choice([-0.45, 0.45]) * g, 0, 1)
        mask = g > 0.3
    return np.clip(out, 0, 1), mask


def write_texture(root: Path, name: str, rng: np.random.Generator) -> None:
    img = getattr(data, name)()
    if img.ndim == 3:
        img = img.mean(axis=-1).astype(np.uint8)
    half = img.shape[1] // 2
    for i, crop in enumerate(_crops(img, 0, half, N_TRAIN, rng)):
        _save(root / "train" / "good" / f"{i:04d}.png", crop)
    test = _crops(img, half, img.shape[1], N_TEST, rng)
    for i, crop in enumerate(test):
        if i % 2 == 0:
            _save(root / "test" / "good" / f"{i:04d}.png", crop)
            continue
        kind = DEFECTS[(i // 2) % len(DEFECTS)]
        bad, mask = add_defect(crop, kind, rng)
        _save(root / "test" / kind / f"{i:04d}.png", np.round(bad * 255).astype(np.uint8))
        _save(root / "ground_truth" / kind / f"{i:04d}_mask.png", (mask * 255).astype(np.uint8))


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "L").save(path)


def _pca_row(root: Path, name: str) -> tuple:
    """PCA-8 on pixels: image ROC AUC (mean squared residual), pixel ROC AUC, AUPRO."""
    from sklearn.metrics import roc_auc_score

    def load(folder: Path) -> tuple[list[Path], np.ndarray]:
        paths = sorted(folder.rglob("*.png"))
        return paths, np.stack([np.asarray(Image.open(p), np.float64) / 255 for p in paths])

    _, train_x = load(root / "train" / "good")
    flat = train_x.reshape(len(train_x), -1)
    mean = flat.mean(0)
    basis = np.linalg.svd(flat - mean, full_matrices=False)[2][:8]
    paths, test_x = load(root / "test")
    c = test_x.reshape(len(test_x), -1) - mean
    maps = ((c - (c @ basis.T) @ basis) ** 2).reshape(test_x.shape)
    labels = np.array([p.parent.name != "good" for p in paths])
    truth = []
    for p in paths:
        m = root / "ground_truth" / p.parent.name / f"{p.stem}_mask.png"
        truth.append(np.asarray(Image.open(m)) > 0 if m.exists() else np.zeros(p_shape(maps), bool))
    auc = roc_auc_score(labels, maps.mean((1, 2)))
    return (name, "PCA-8 pixels", "-", auc, pixel_roc_auc(list(maps), truth), None,
            aupro(list(maps), truth))  # fmt: skip


def p_shape(maps: np.ndarray) -> tuple[int, int]:
    return maps.shape[1], maps.shape[2]


def _report_row(
    root: Path, model_path: Path, name: str, label: str, kind: str, ep: object
) -> tuple:
    run = score_images([root / "test"], load_model(model_path), device="cpu", score_kind=kind)
    for _ in run:
        pass
    rep = run.summary.report()
    return (name, label, ep, rep["metrics"]["roc_auc"], rep["pixel"]["roc_auc"],
            rep["metrics"]["f1"], rep["pixel"]["aupro"])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description="texture defects benchmark")
    ap.add_argument("--draem", type=float, default=None, metavar="MINUTES",
                    help="also train draem with this time budget, and PCA-8")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0,
                    help="crops and defects; 0 (default) is the recorded test set, others are "
                    "for choosing settings")  # fmt: skip
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="aetool-textures-") as tmp:
        for name in TEXTURES:
            root = Path(tmp) / name
            write_texture(root, name, rng)
            result = train(
                load_images([root / "train" / "good"]),
                ModelConfig(),
                TrainConfig(device="cpu"),
            )
            path = result.save(root / "model.safetensors")
            epochs = result.metadata["training"]["epochs_run"]
            for kind in SCORE_KINDS:
                rows.append(_report_row(root, path, name, f"conv {kind}", kind, epochs))
            if args.draem:
                result = train_draem(
                    load_images([root / "train" / "good"]), ModelConfig(arch="draem"),
                    TrainConfig(device="cpu", batch_size=DRAEM_BATCH, time_budget=args.draem * 60),
                )  # fmt: skip
                path = result.save(root / "draem.safetensors")
                steps = result.metadata["training"]["steps"]
                rows.append(_report_row(root, path, name, "draem model", "model", f"{steps} steps"))
                rows.append(_pca_row(root, name))
            print(f"{name} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    print("| texture | model, score | training | image ROC AUC | pixel ROC AUC | F1 at auto "
          "threshold | AUPRO |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, kind, ep, auc, pix, f1, pro in rows:
        f1s = "-" if f1 is None else f"{f1:.3f}"
        pros = "-" if pro is None else f"{pro:.3f}"
        print(f"| {name} | {kind} | {ep} | {auc:.3f} | {pix:.3f} | {f1s} | {pros} |")
    for kind in dict.fromkeys(r[1] for r in rows):
        sel = [r for r in rows if r[1] == kind]
        print(f"| **mean** | {kind} | | {np.mean([r[3] for r in sel]):.3f} | "
              f"{np.mean([r[4] for r in sel]):.3f} | | {np.mean([r[6] for r in sel]):.3f} |")  # fmt: skip
    print(f"\n{N_TRAIN} train / {N_TEST} test crops of {CROP}x{CROP} per texture; "
          f"total {time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} thread(s)")  # fmt: skip


if __name__ == "__main__":
    main()
