"""Train the bundled digits model: a conv autoencoder on scikit-learn's 8x8 digits.

Writes ``aetool/models/pretrained/digits-conv.safetensors`` (about 100 KB) with a fixed
seed, and prints how well the latent codes separate the ten digits: the
accuracy of a 5-nearest-neighbour classifier on the codes of a held-out
quarter of the images (codes of the other three quarters as neighbours).

    python pretrained/train_pretrained_digits.py                  # the bundled model
    python pretrained/train_pretrained_digits.py --latent-dim 2 -o /tmp/digits-2d.safetensors

Takes about a minute on one CPU core.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aetool.data.cache import load_images
from aetool.demo import write_digits
from aetool.latents import encode_latents
from aetool.models.registry import ModelConfig
from aetool.training.config import TrainConfig
from aetool.training.loop import train

OUT = Path(__file__).resolve().parent.parent / "aetool" / "pretrained" / "digits-conv.safetensors"


def knn_accuracy(codes: np.ndarray, labels: np.ndarray, k: int = 5, seed: int = 0) -> float:
    """Held-out accuracy of a k-nearest-neighbour classifier on latent codes (75/25 split)."""
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    a, b, ya, yb = train_test_split(
        codes, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    return float(KNeighborsClassifier(k).fit(a, ya).score(b, yb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folders = write_digits(tmp)
        images = load_images([folders["digits"]])
        t0 = time.perf_counter()
        result = train(
            images,
            ModelConfig(arch="conv", latent_dim=args.latent_dim),
            TrainConfig(epochs=args.epochs, seed=args.seed, patience=20, device="cpu", lr=2e-3),
            data_sources=["sklearn.datasets.load_digits (1,797 8x8 scans)"],
        )
        seconds = time.perf_counter() - t0
        path = result.save(args.output)
        rows = list(encode_latents(result.model, images.refs, batch_size=256))
        codes = np.stack([z for _, z in rows])
        labels = np.array([int(ref.relpath.split("/")[0]) for ref, _ in rows])
    hist = result.metadata["training"]["history"]
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB) in {seconds:.0f} s")
    print(
        f"epochs {len(hist['train_loss'])}, val mse {min(v for v in hist['val_loss'] if v):.5f}, "
        f"latent dim {args.latent_dim}, 5-NN digit accuracy on codes "
        f"{knn_accuracy(codes, labels):.3f}"
    )


if __name__ == "__main__":
    main()
