"""The built-in demo: scikit-learn's handwritten digits as a folder of PNG files.

``run_demo`` writes the digits (1,797 real 8x8 scans) into
``DIR/digits/<digit>/<index>.png``, plus a one-class anomaly split
(``DIR/anomaly/train/good`` = half of the zeros, ``DIR/anomaly/test/good`` =
the other half, ``DIR/anomaly/test/<digit>`` = samples of the other digits),
then runs every command on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aetool.errors import OutputError
from aetool.images import load_images
from aetool.models import ModelConfig
from aetool.training import TrainCallback, TrainConfig, train

__all__ = ["run_demo", "write_digits"]

_MARKER = ".aetool-demo"


def write_digits(directory: str | Path) -> dict[str, Path]:
    """Write scikit-learn's digits as PNG folders and return the folders written.

    Returns:
        ``{"digits": ..., "anomaly_train": ..., "anomaly_test": ...}``.
    """
    from sklearn.datasets import load_digits

    root = Path(directory)
    d = load_digits()
    imgs = np.round(d.images * (255 / 16)).astype(np.uint8)
    digits = root / "digits"
    for i, (img, t) in enumerate(zip(imgs, d.target, strict=True)):
        out = digits / str(t) / f"{i:04d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(out)
    # One-class split: zeros are normal; the test set mixes held-out zeros and other digits.
    rng = np.random.default_rng(0)
    zeros = np.flatnonzero(d.target == 0)
    rng.shuffle(zeros)
    half = len(zeros) // 2
    for sub, idx in (("train/good", zeros[:half]), ("test/good", zeros[half:])):
        for i in idx:
            out = root / "anomaly" / sub / f"{i:04d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(imgs[i], "L").save(out)
    for digit in range(1, 10):
        idx = np.flatnonzero(d.target == digit)[:10]
        for i in idx:
            out = root / "anomaly" / "test" / str(digit) / f"{i:04d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(imgs[i], "L").save(out)
    return {
        "digits": digits,
        "anomaly_train": root / "anomaly" / "train",
        "anomaly_test": root / "anomaly" / "test",
    }


def _prepare(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()) and not (directory / _MARKER).exists():
        raise OutputError(
            f"{directory} exists and is not an aetool demo folder; name an empty or new folder"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _MARKER).write_text("written by `aetool demo`; safe to delete\n")


def run_demo(
    directory: str | Path = "aetool-demo",
    *,
    console: Any = None,
    device: str = "auto",
    epochs: int | None = None,
    progress: type[TrainCallback] | None = None,
) -> dict[str, Any]:
    """Run the end-to-end demo and return a summary of what was produced where."""
    root = Path(directory)
    _prepare(root)
    say = console.print if console is not None else (lambda *a, **k: None)
    folders = write_digits(root)
    say(f"Wrote scikit-learn's 1,797 handwritten digits as PNG files under {folders['digits']}")
    summary: dict[str, Any] = {"digits folder": folders["digits"]}

    images = load_images([folders["digits"]])
    n_epochs = epochs or 40
    cbs = [progress(console, n_epochs)] if progress and console is not None else []
    result = train(
        images,
        ModelConfig(arch="conv", latent_dim=16),
        TrainConfig(epochs=n_epochs, device=device, patience=8),
        cbs,
    )
    model_path = result.save(root / "model.safetensors")
    hist = result.metadata["training"]["history"]
    summary["model"] = model_path
    summary["training"] = (
        f"{len(hist['train_loss'])} epochs, loss {hist['train_loss'][0]:.4f} -> "
        f"{hist['train_loss'][-1]:.4f} (val {hist['val_loss'][-1]:.4f})"
    )
    return summary
