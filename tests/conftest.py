"""Shared fixtures: small real image folders generated with numpy + Pillow."""

from __future__ import annotations

import os

# As the aetool package does for the CLI: sleeping OpenMP waiters, set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # CUDA tests (marked gpu) run only where a GPU is present.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not "gpu" in keywords: param ids count
            item.add_marker(skip)


def make_blob_images(n: int, size: int = 16, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Smooth random blobs: a learnable 'normal' class, uint8 (n, size, size[, 3])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        r = rng.uniform(0.15, 0.3)
        img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))
        img = (img * 220 + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)
        if channels == 3:
            img = np.stack([img, img[::-1], img.T], axis=-1)
        out.append(img)
    return np.stack(out)


def write_folder(
    root: Path, images: np.ndarray, prefix: str = "img", ext: str = ".png"
) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = root / f"{prefix}{i:03d}{ext}"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test with one torch thread, then restore the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def blob_folder(tmp_path: Path) -> Path:
    """48 grayscale 16x16 PNGs in tmp/blobs."""
    root = tmp_path / "blobs"
    write_folder(root, make_blob_images(48))
    return root


# --- aetool score: an MVTec-like tree and a tiny model trained on it (session-wide) ---


def make_texture_images(n: int, size: int = 24, seed: int = 0) -> np.ndarray:
    """Smooth normal images: a soft blob over a gentle gradient, uint8 (n, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0.35, 0.65, 2)
        r = rng.uniform(0.18, 0.28)
        img = 0.25 + 0.35 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))
        img = img + 0.1 * (xx if rng.random() < 0.5 else yy)
        img = (img * 255 + rng.normal(0, 2, img.shape)).clip(0, 255)
        out.append(img.astype(np.uint8))
    return np.stack(out)


def add_defect(
    img: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A bright blob or a bright scratch; returns the image and its 0/255 mask."""
    size = img.shape[0]
    mask = np.zeros_like(img, dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "blob":
        cy, cx = rng.integers(4, size - 4, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 6
    else:
        r = int(rng.integers(3, size - 3))
        c0 = int(rng.integers(0, size // 3))
        mask[r : r + 2, c0 : c0 + size // 2] = True
    out = img.copy()
    out[mask] = 250
    return out, (mask * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def score_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MVTec-like category: train/good, test/good, test/{blob,scratch} + ground_truth masks."""
    root = tmp_path_factory.mktemp("mvtec") / "widget"
    write_folder(root / "train" / "good", make_texture_images(48, seed=1))
    write_folder(root / "test" / "good", make_texture_images(16, seed=2))
    rng = np.random.default_rng(3)
    for d, kind in enumerate(("blob", "scratch")):
        base = make_texture_images(8, seed=10 + d)
        for i, img in enumerate(base):
            bad, mask = add_defect(img, kind, rng)
            for folder, arr, name in (
                (root / "test" / kind, bad, f"{i:03d}.png"),
                (root / "ground_truth" / kind, mask, f"{i:03d}_mask.png"),
            ):
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(folder / name)
    return root


@pytest.fixture(scope="session")
def score_model(score_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small conv autoencoder trained on score_tree/train/good (a few seconds on CPU)."""
    from aetool.data.cache import load_images
    from aetool.models.registry import ModelConfig
    from aetool.training.config import TrainConfig
    from aetool.training.loop import train

    images = load_images([score_tree / "train" / "good"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; one thread is faster under load
    try:
        result = train(
            images,
            ModelConfig(arch="conv", latent_dim=8, extra={"base_channels": 8}),
            TrainConfig(epochs=30, batch_size=16, patience=0, device="cpu", val_split=0.25),
        )
    finally:
        torch.set_num_threads(threads)
    return result.save(tmp_path_factory.mktemp("model") / "model.safetensors")
