"""One-class anomaly detection on scikit-learn's digits: aetool vs PCA vs IsolationForest.

Protocol: every digit's images (8x8, 0..16 scaled to 0..255 PNGs) are split
once in half with a fixed seed. For each digit as the normal class, each
method is fitted on that digit's first half only; the test set is the second
half of ALL digits (~900 images, about 10% normal), label 1 for the other
nine digits. Metric: image ROC AUC (higher = better), per class and mean.

* aetool: ``aetool.training.train`` with the library defaults (arch conv,
  latent 16, 30 epochs, patience 10, lr 1e-3, batch 64, val split 0.1) on the
  folder of the digit's training half, then ``aetool.scorer.score_images``
  (mse score) on the test folder. Variants change one default at a time and
  are the same for every class (no per-class tuning).
* PCA: reconstruction squared error; n_components = the smallest number
  explaining >= 90% of the training variance.
* IsolationForest: scikit-learn defaults, random_state=0; score = -score_samples.

Run: ``python benchmarks/oneclass_digits.py`` (about 1-3 minutes on one core).
"""

from __future__ import annotations

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

from aetool.images import load_images
from aetool.modelfile import load_model
from aetool.models import ModelConfig
from aetool.scorer import score_images
from aetool.training import TrainConfig, train

torch.set_num_threads(1)

#: name -> (ModelConfig kwargs, TrainConfig kwargs) changed from the defaults.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "aetool default (conv, latent 16, 30 ep)": ({}, {}),
    "conv latent 8": ({"latent_dim": 8}, {}),
    "conv latent 32": ({"latent_dim": 32}, {}),
    "conv 100 epochs, patience 20": ({}, {"epochs": 100, "patience": 20}),
    "conv lr 3e-3": ({}, {"lr": 3e-3}),
    "conv 300 epochs, patience 30": ({}, {"epochs": 300, "patience": 30}),
    "conv batch 16, 100 epochs, patience 20": (
        {},
        {"batch_size": 16, "epochs": 100, "patience": 20},
    ),
    "conv lr 3e-3, 100 epochs, patience 20": ({}, {"lr": 3e-3, "epochs": 100, "patience": 20}),
    "conv latent 32, 300 epochs, patience 30": (
        {"latent_dim": 32},
        {"epochs": 300, "patience": 30},
    ),
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


def aetool_auc(root: Path, digit: int, model_kw: dict, train_kw: dict, out: Path) -> float:
    images = load_images([root / "train" / str(digit)])
    cfg = TrainConfig(device="cpu", **train_kw)
    result = train(images, ModelConfig(arch="conv", **{"latent_dim": 16, **model_kw}), cfg)
    path = result.save(out)
    test = root / "test"
    labels = {p.relative_to(test).as_posix(): int(p.parent.name != str(digit))
              for p in test.rglob("*.png")}  # fmt: skip
    run = score_images([test], load_model(path), device="cpu", labels=labels)
    for _ in run:
        pass
    return float(run.summary.report()["metrics"]["roc_auc"])


def main() -> None:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aetool-digits-") as tmp:
        root = Path(tmp)
        xtr, ytr, xte, yte = write_split(root)
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
        results: dict[str, list[float]] = {name: [] for name in VARIANTS}
        results["PCA (90% variance)"] = []
        results["IsolationForest"] = []
        pca_k: list[int] = []
        for digit in range(10):
            normal = xtr[ytr == digit]
            y = (yte != digit).astype(int)
            pca = PCA(n_components=0.9, svd_solver="full").fit(normal)
            pca_k.append(pca.n_components_)
            rec = pca.inverse_transform(pca.transform(xte))
            results["PCA (90% variance)"].append(roc_auc_score(y, ((xte - rec) ** 2).mean(1)))
            iso = IsolationForest(random_state=0).fit(normal)
            results["IsolationForest"].append(roc_auc_score(y, -iso.score_samples(xte)))
            for name, (mkw, tkw) in VARIANTS.items():
                results[name].append(aetool_auc(root, digit, mkw, tkw, root / "m.safetensors"))
            print(f"digit {digit} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    header = "| method | " + " | ".join(str(d) for d in range(10)) + " | mean |"
    print(header)
    print("|" + "---|" * 12)
    for name, aucs in results.items():
        cells = " | ".join(f"{a:.3f}" for a in aucs)
        print(f"| {name} | {cells} | **{np.mean(aucs):.3f}** |")
    print(f"\nPCA components per digit (90% variance): {pca_k}")
    print(f"Total time: {time.perf_counter() - t0:.0f} s on {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
