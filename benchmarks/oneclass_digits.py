"""One-class anomaly detection on scikit-learn's digits: aetool vs PCA vs IsolationForest.

Protocol: every digit's images (8x8, 0..16 scaled to 0..255 PNGs) are split
once in half with a fixed seed. For each digit as the normal class, each
method is fitted on that digit's first half only; the test set is the second
half of ALL digits (~900 images, about 10% normal), label 1 for the other
nine digits. Metric: image ROC AUC (higher = better), per class and mean.

* aetool default: ``aetool.training.loop.train`` with ``TrainConfig(device="cpu")``
  and ``ModelConfig()`` -- what ``aetool train`` picks for 8x8 images: ``--arch auto``
  keeps ``conv`` below 128 px (:func:`aetool.training.draem.choose_arch`, checked
  at the start of the run) -- exactly the library defaults (conv, latent 16,
  automatic epochs and patience, lr, batch size, val split) -- on the digit's
  training half, then ``aetool.anomaly.pipeline.score_images`` (mse score) on the test
  set. ``--variants`` adds rows that change one or two settings; every variant
  is the same for all ten classes (no per-class tuning) and is labelled
  ``variant:`` so it is never mistaken for the default.
* PCA: reconstruction squared error; n_components = the smallest number
  explaining >= 90% of the training variance.
* IsolationForest: scikit-learn defaults, random_state=0; score = -score_samples.

Run: ``python benchmarks/oneclass_digits.py`` (default, PCA and IsolationForest;
about 1-2 minutes on one core); ``--variants all`` adds every variant row
(about 1 minute per variant); ``--variants "latent 8,lr 2e-3"`` picks some.
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
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from aetool.anomaly.pipeline import score_images
from aetool.data.cache import load_images
from aetool.models.file import load_model
from aetool.models.registry import ModelConfig
from aetool.training.config import TrainConfig
from aetool.training.loop import train

torch.set_num_threads(1)

DEFAULT = "aetool default (conv, latent 16, auto epochs)"
#: name -> (ModelConfig kwargs, TrainConfig kwargs) changed from the defaults.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "latent 8": ({"latent_dim": 8}, {}),
    "latent 32": ({"latent_dim": 32}, {}),
    "base channels 16": ({"extra": {"base_channels": 16}}, {}),
    "base channels 64": ({"extra": {"base_channels": 64}}, {}),
    "lr 5e-4": ({}, {"lr": 5e-4}),
    "lr 2e-3": ({}, {"lr": 2e-3}),
    "batch 32": ({}, {"batch_size": 32}),
    "cosine lr": ({}, {"lr_schedule": "cosine"}),
    "cosine lr 2e-3": ({}, {"lr_schedule": "cosine", "lr": 2e-3}),
    "old defaults: 30 epochs patience 10": ({}, {"epochs": 30, "patience": 10}),
}


def write_split(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = load_digits()
    imgs = np.round(d.images * (255 / 16)).astype(np.uint8)
    rng = np.random.default_rng(0)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = np.flatnonzero(d.target == digit)
        rng.shuffle(idx)
        half = len(idx) // 2
        train_idx += list(idx[:half])
        test_idx += list(idx[half:])
    for name, idx in (("train", train_idx), ("test", test_idx)):
        for i in idx:
            out = root / name / str(d.target[i]) / f"{i:04d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(imgs[i], "L").save(out)
    tr, te = np.array(train_idx), np.array(test_idx)
    return imgs[tr] / 255.0, d.target[tr], imgs[te] / 255.0, d.target[te]


def aetool_auc(
    root: Path, digit: int, model_kw: dict, train_kw: dict, out: Path
) -> tuple[float, int]:
    """ROC AUC on the test set and the number of epochs the run took."""
    images = load_images([root / "train" / str(digit)])
    cfg = TrainConfig(device="cpu", **train_kw)
    result = train(images, ModelConfig(**model_kw), cfg)
    path = result.save(out)
    test = root / "test"
    labels = {p.relative_to(test).as_posix(): int(p.parent.name != str(digit))
              for p in test.rglob("*.png")}  # fmt: skip
    run = score_images([test], load_model(path), device="cpu", labels=labels)
    for _ in run:
        pass
    auc = float(run.summary.report()["metrics"]["roc_auc"])
    return auc, int(result.metadata["training"]["epochs_run"])


def pick_variants(spec: str) -> dict[str, tuple[dict, dict]]:
    if spec.strip().lower() in ("", "none"):
        return {}
    if spec.strip().lower() == "all":
        return dict(VARIANTS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; choose from: {', '.join(VARIANTS)}")
    return {n: VARIANTS[n] for n in names}


def main() -> None:
    from aetool.training.draem import choose_arch

    assert choose_arch([(8, 8)]) == ("conv", None), "--arch auto no longer picks conv"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", default="none", help="'all', 'none' or comma-separated variant names"
    )
    args = parser.parse_args()
    runs = {DEFAULT: ({}, {})} | {
        f"variant: {n}": v for n, v in pick_variants(args.variants).items()
    }
    t0 = time.perf_counter()
    results: dict[str, list[float]] = {name: [] for name in runs}
    epochs: dict[str, list[int]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="aetool-digits-") as tmp:
        root = Path(tmp)
        xtr, ytr, xte, yte = write_split(root)
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
        results["PCA (90% variance)"] = []
        results["IsolationForest"] = []
        pca_k: list[int] = []
        for digit in range(10):
            normal = xtr[ytr == digit]
            y = (yte != digit).astype(int)
            pca = PCA(n_components=0.9, svd_solver="full").fit(normal)
            pca_k.append(int(pca.n_components_))
            rec = pca.inverse_transform(pca.transform(xte))
            results["PCA (90% variance)"].append(roc_auc_score(y, ((xte - rec) ** 2).mean(1)))
            iso = IsolationForest(random_state=0).fit(normal)
            results["IsolationForest"].append(roc_auc_score(y, -iso.score_samples(xte)))
            for name, (mkw, tkw) in runs.items():
                auc, ep = aetool_auc(root, digit, mkw, tkw, root / "m.safetensors")
                results[name].append(auc)
                epochs[name].append(ep)
            print(f"digit {digit} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    print("| method | " + " | ".join(str(d) for d in range(10)) + " | mean | epochs run |")
    print("|---" * 13 + "|")
    for name, aucs in results.items():
        cells = " | ".join(f"{a:.3f}" for a in aucs)
        ep = f"{min(epochs[name])}-{max(epochs[name])}" if epochs.get(name) else "-"
        print(f"| {name} | {cells} | **{np.mean(aucs):.4f}** | {ep} |")
    print(
        f"\nImage ROC AUC, normal = the column's digit. {len(xtr)} train / {len(xte)} test images;"
    )
    print(f"PCA components per digit (90% variance): {pca_k}")
    print(f"Total time: {time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
