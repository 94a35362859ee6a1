"""Tests for aetool.latents: streaming codes, interpolation, strips, labels, latent maps."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aetool.data.decode import prepare_image
from aetool.errors import ConfigError, ImageError
from aetool.latents import (
    encode_latents,
    folder_labels,
    interpolate,
    latent_map,
    model_preprocessing,
    strip_image,
)
from aetool.models.file import load_model, save_model
from aetool.models.registry import create_model

# Small models run faster on one thread than on two busy ones.
pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(root: Path, n: int, seed: int = 0, size: int = 16) -> list[Path]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05) * 230
        paths.append(root / f"b{i:02d}.png")
        Image.fromarray(img.astype(np.uint8)).save(paths[-1])
    return paths


@pytest.fixture
def conv_model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("conv", channels=1, height=16, width=16, latent_dim=5)
    pre = {"channels": 1, "height": 16, "width": 16, "resize": "stretch"}
    return save_model(tmp_path / "conv.safetensors", model, {"preprocessing": pre})


def _tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(prepare_image(path, channels=1, size=(16, 16)))).float() / 255


def test_encode_latents_streams_one_code_per_image(tmp_path: Path, conv_model_file: Path) -> None:
    paths = _blobs(tmp_path / "data" / "a", 5) + _blobs(tmp_path / "data" / "b", 4, seed=1)
    (tmp_path / "data" / "b" / "zbad.png").write_bytes(b"broken")
    loaded = load_model(conv_model_file)
    failed: list[str] = []
    rows = list(
        encode_latents(
            loaded,
            [tmp_path / "data"],
            batch_size=3,
            on_error=lambda r, why: failed.append(r.relpath),
        )
    )
    assert [ref.path for ref, _ in rows] == paths
    assert all(z.shape == (5,) and z.dtype == np.float32 for _, z in rows)
    assert failed == ["b/zbad.png"]
    with torch.no_grad():
        expected = loaded.model.encode(_tensor(paths[0])[None])[0].numpy()
    np.testing.assert_allclose(rows[0][1], expected, atol=1e-5)
    with pytest.raises(ImageError, match="zbad.png"):
        list(encode_latents(loaded, [tmp_path / "data"], strict=True))


def test_models_without_vector_latent_are_refused() -> None:
    model = create_model("denoiser", base_channels=8, depth=2)
    with pytest.raises(ConfigError, match="vector latent"):
        encode_latents(model, [])
    with pytest.raises(ConfigError, match="vector latent"):
        interpolate(model, np.zeros((1, 16, 16)), np.zeros((1, 16, 16)))


def test_interpolation_endpoints_are_the_reconstructions(
    tmp_path: Path, conv_model_file: Path
) -> None:
    a, b = _blobs(tmp_path / "x", 2)
    loaded = load_model(conv_model_file)
    frames = interpolate(loaded, a, b, steps=5)
    assert frames.shape == (5, 1, 16, 16)
    for path, frame in ((a, frames[0]), (b, frames[-1])):
        with torch.no_grad():
            recon = loaded.model(_tensor(path)[None])[0].numpy()
        np.testing.assert_allclose(frame, recon, atol=1e-5)
    with torch.no_grad():  # the middle frame decodes the midpoint of the two codes
        za, zb = loaded.model.encode(_tensor(a)[None]), loaded.model.encode(_tensor(b)[None])
        mid = loaded.model.decode((za + zb) / 2)[0].numpy()
    np.testing.assert_allclose(frames[2], mid, atol=1e-5)
    arrays = interpolate(loaded.model, frames[0], frames[-1], steps=2)  # arrays work too
    assert arrays.shape == (2, 1, 16, 16)
    with pytest.raises(ConfigError, match="at least 2"):
        interpolate(loaded, a, b, steps=1)


def test_strip_image_upscales_tiny_frames() -> None:
    frames = np.random.default_rng(0).random((7, 1, 8, 8)).astype(np.float32)
    img = strip_image(frames, min_height=64)
    assert img.mode == "L" and img.size == (7 * 64 + 6, 64)
    arr = np.asarray(img)
    assert arr[0, 0] == round(frames[0, 0, 0, 0] * 255) and arr[7, 7] == arr[0, 0]  # nearest
    assert (arr[:, 64] == 255).all()  # the gap between frames
    rgb = strip_image(np.zeros((3, 3, 100, 50), np.float32))
    assert rgb.mode == "RGB" and rgb.size == (3 * 50 + 2, 100)


def test_folder_labels() -> None:
    assert folder_labels(["train/good/a.png", "train/crack/b.png", "x.png"]) == [
        "normal",
        "anomaly",
        None,
    ]
    assert folder_labels(["3/a.png", "7/b.png", "c.png"]) == ["3", "7", None]


def test_latent_map_png_decodes(tmp_path: Path) -> None:
    codes = np.random.default_rng(0).normal(size=(30, 6))
    png = latent_map(codes, ["a"] * 15 + ["b"] * 15, "title")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > 300 and img.height > 200


def test_model_preprocessing_falls_back_to_arch_args(conv_model_file: Path) -> None:
    model = create_model("conv", channels=3, height=12, width=20)
    assert model_preprocessing(model) == {
        "channels": 3,
        "size": (12, 20),
        "resize": "stretch",
        "alpha_background": "black",
    }
    assert model_preprocessing(load_model(conv_model_file))["size"] == (16, 16)
