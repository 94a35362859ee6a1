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

Run: ``python benchmarks/texture_defects.py`` (about 3-4 minutes of CPU on one core).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from aetool.anomaly.pipeline import score_images
from aetool.anomaly.scores import SCORE_KINDS
from aetool.data.cache import load_images
from aetool.models.file import load_model
from aetool.models.registry import ModelConfig
from aetool.training.config import TrainConfig
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


def main() -> None:
    t0 = time.perf_counter()
    rows = []
    rng = np.random.default_rng(0)
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
            model = load_model(path)
            for kind in SCORE_KINDS:
                run = score_images([root / "test"], model, device="cpu", score_kind=kind)
                for _ in run:
                    pass
                rep = run.summary.report()
                rows.append((name, kind, epochs, rep["metrics"]["roc_auc"], rep["pixel"]["roc_auc"],
                             rep["metrics"]["f1"]))  # fmt: skip
            print(f"{name} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    print("| texture | score | epochs | image ROC AUC | pixel ROC AUC | F1 at auto threshold |")
    print("|---|---|---|---|---|---|")
    for name, kind, ep, auc, pix, f1 in rows:
        f1s = "-" if f1 is None else f"{f1:.3f}"
        print(f"| {name} | {kind} | {ep} | {auc:.3f} | {pix:.3f} | {f1s} |")
    for kind in SCORE_KINDS:
        sel = [r for r in rows if r[1] == kind]
        print(f"| **mean** | {kind} | | {np.mean([r[3] for r in sel]):.3f} | "
              f"{np.mean([r[4] for r in sel]):.3f} | |")  # fmt: skip
    print(f"\n{N_TRAIN} train / {N_TEST} test crops of {CROP}x{CROP} per texture; "
          f"total {time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} thread(s)")  # fmt: skip


if __name__ == "__main__":
    main()
