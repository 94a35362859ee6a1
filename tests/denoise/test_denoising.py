"""Tests for aetool.denoise: pipeline, image I/O, tiling, colour, output safety, PSNR gains."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from aetool.data.inputs import find_images
from aetool.denoise.array import denoise_array
from aetool.denoise.imageio import read_image
from aetool.denoise.noise_level import estimate_sigma
from aetool.denoise.outputs import output_path
from aetool.denoise.pipeline import denoise_images
from aetool.errors import ConfigError, ImageError, ModelFileError, OutputError
from aetool.files import check_output_dir
from aetool.metrics import psnr, ssim
from aetool.models import registry as models
from aetool.models.bundled import bundled_model_path
from aetool.models.file import load_model, save_model
from aetool.models.registry import AutoEncoder, create_model


class IdentityModel(AutoEncoder):
    """Test only: multiplies its input by one parameter (1 unless a test changes it)."""

    arch_name = "test-identity"
    fully_convolutional = True
    has_vector_latent = False

    def __init__(self, channels: int = 1, height: int = 16, width: int = 16, latent_dim: int = 1):
        super().__init__()
        self._arch_args = dict(channels=channels, height=height, width=width, latent_dim=latent_dim)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class TinyConv(AutoEncoder):
    """Test only: two 3x3 convolutions (receptive field 5 x 5)."""

    arch_name = "test-tiny-fc"
    fully_convolutional = True
    has_vector_latent = False

    def __init__(self, channels: int = 1, height: int = 16, width: int = 16, latent_dim: int = 1):
        super().__init__()
        self._arch_args = dict(channels=channels, height=height, width=width, latent_dim=latent_dim)
        self.net = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@pytest.fixture(autouse=True)
def registered_test_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the test-only models while a test runs (so model files of them load),
    without adding them to the registry that other test modules parametrize over."""
    for cls in (IdentityModel, TinyConv):
        monkeypatch.setitem(models._REGISTRY, cls.arch_name, (cls, "test only"))


def identity(channels: int = 1) -> AutoEncoder:
    return create_model("test-identity", channels=channels).eval()


def train_tiny_denoiser(root: Path) -> AutoEncoder:
    """A small residual U-Net trained for a few seconds on camera crops with sigma 0.1 noise."""
    from skimage import data

    from aetool.data.cache import load_images
    from aetool.models.registry import ModelConfig
    from aetool.training.config import TrainConfig
    from aetool.training.loop import train

    cam = data.camera()
    root.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        y, x = (i // 4) * 128 + 64, (i % 4) * 96 + 64
        Image.fromarray(cam[y : y + 96, x : x + 96]).save(root / f"c{i}.png")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is faster than two contended ones
    extra = dict(base_channels=8, depth=2, max_channels=16, convs_per_level=1, bottleneck_convs=1)
    result = train(
        load_images([root], native_size=True),
        ModelConfig(arch="denoiser", extra=extra),
        TrainConfig(
            epochs=3,
            batch_size=16,
            patch_size=32,
            patches_per_epoch=192,
            noise="gaussian:0.1",
            lr=3e-3,
            val_split=0.0,
            device="cpu",
            amp=False,
            seed=0,
        ),  # fmt: skip
    )
    torch.set_num_threads(threads)
    return result.model.eval()


@pytest.fixture(scope="module")
def tiny_denoiser(tmp_path_factory: pytest.TempPathFactory) -> AutoEncoder:
    return train_tiny_denoiser(tmp_path_factory.mktemp("train"))


# ---------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_estimate_sigma_is_calibrated(sigma: float) -> None:
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0.2, 0.8, 200, dtype=np.float32), (3, 200, 1))
    noisy = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
    assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.08)
    assert estimate_sigma(clean) < 0.002


def test_psnr_and_ssim() -> None:
    a = np.full((1, 32, 32), 0.5, np.float32)
    b = a + 0.1
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, a) == 100.0
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    assert ssim(a, a + rng.normal(0, 0.2, a.shape).astype(np.float32)) < 0.5


# ---------------------------------------------------------------------------
# tiling and channels


def test_tiled_equals_whole_for_fully_convolutional_model() -> None:
    torch.manual_seed(0)
    model = TinyConv().eval()
    x = np.random.default_rng(0).random((1, 300, 410), dtype=np.float32)
    whole = denoise_array(model, x, tile=512)
    tiled = denoise_array(model, x, tile=64, overlap=16)
    with torch.no_grad():
        direct = model(torch.from_numpy(x)[None])[0].numpy()
    assert np.abs(whole - direct).max() < 1e-6
    assert np.abs(tiled - whole).max() < 1e-3


def test_cpu_denoising_lays_out_aetool_models_channels_last_same_result() -> None:
    torch.manual_seed(0)
    model = create_model("denoiser", channels=1, height=32, width=32, base_channels=8).eval()
    torch.nn.init.normal_(model.tail.weight, std=0.05)  # zero at init: make the net count
    x = np.random.default_rng(1).random((1, 64, 80), dtype=np.float32)
    with torch.no_grad():
        plain = model(torch.from_numpy(x)[None])[0].clamp(0, 1).numpy()
    weight = model.tail.weight
    assert weight.is_contiguous()
    with torch.inference_mode():  # as callers often run it
        out = denoise_array(model, x)
    weight = model.tail.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    np.testing.assert_allclose(out, plain, atol=1e-5)
    assert np.abs(out - x).mean() > 1e-3  # the network changed the image
    # still trainable after a call under inference_mode
    model.train()
    t = torch.from_numpy(x)[None]
    torch.nn.functional.mse_loss(model(t), t).backward()
    assert model.tail.weight.grad is not None


def test_models_without_the_opt_in_keep_their_layout() -> None:
    model = TinyConv().eval()
    denoise_array(model, np.random.default_rng(2).random((1, 20, 24), dtype=np.float32))
    assert model.net[2].weight.is_contiguous()


def test_tiled_unet_has_no_seams() -> None:
    torch.manual_seed(0)
    model = create_model("denoiser", base_channels=8, depth=2, max_channels=16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.05)
    yy, xx = np.mgrid[0:120, 0:120] / 120
    x = (0.3 + 0.4 * np.sin(3 * xx) * np.cos(2 * yy)).astype(np.float32)[None]
    tiled = denoise_array(model, x, tile=48, overlap=16, batch_size=1)  # 120^2 > 48^2: tiles
    whole = denoise_array(model, x, tile=256)
    # The U-Net sees further than the tile margin, so tiles differ slightly from the whole
    # image, but blending keeps that small and free of jumps at tile borders.
    assert np.abs(tiled - whole).mean() < 0.01
    jumps = np.abs(np.diff(tiled[0], axis=1)).max()
    assert jumps < np.abs(np.diff(whole[0], axis=1)).max() + 0.02


def test_images_within_one_batch_of_tiles_run_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = create_model("denoiser", base_channels=8, depth=2, max_channels=16).eval()
    shapes: list[tuple[int, ...]] = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda t: shapes.append(tuple(t.shape)) or forward(t))
    x = np.random.default_rng(4).random((3, 90, 100), dtype=np.float32)
    # budget = batch_size * tile^2 = 2 * 64^2 = 8192 pixels per pass: 9000 is over, so tiles
    denoise_array(model, x, tile=64, overlap=16, batch_size=2)
    assert shapes and all(s[0] <= 2 and s[2:] == (64, 64) for s in shapes)
    # 3 * 64^2 = 12288 >= 9000: each plane whole, one plane per pass (12288 // 9000 = 1)
    shapes.clear()
    out = denoise_array(model, x, tile=64, overlap=16, batch_size=3)
    assert shapes == [(1, 1, 90, 100)] * 3
    with torch.no_grad():
        direct = forward(torch.from_numpy(x)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(out, direct, atol=1e-6)
    # a bigger budget takes the planes together
    shapes.clear()
    denoise_array(model, x, tile=64, overlap=16, batch_size=8)
    assert shapes == [(3, 1, 90, 100)]


def test_ensemble_averages_the_model_over_rotations_and_flips() -> None:
    torch.manual_seed(0)
    model = TinyConv(channels=1).eval()  # random weights: not rotation invariant
    x = np.random.default_rng(5).random((1, 30, 41), dtype=np.float32)  # not square

    def run(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(a))[None])[0].numpy()

    views = []  # every rotation (k quarter turns), each also mirrored left-right
    for k in range(4):
        for flip in (False, True):
            a = np.rot90(x, k, axes=(1, 2))
            a = a[:, :, ::-1] if flip else a
            out = run(a)
            out = out[:, :, ::-1] if flip else out
            views.append(np.rot90(out, -k, axes=(1, 2)))
    np.testing.assert_allclose(denoise_array(model, x, ensemble=8), np.mean(views, 0), atol=1e-6)
    single = denoise_array(model, x)
    np.testing.assert_allclose(single, run(x), atol=1e-6)
    assert np.abs(denoise_array(model, x, ensemble=2) - single).max() > 1e-3  # really averaged
    for n in (2, 4):
        out = denoise_array(model, x, ensemble=n)
        assert out.shape == x.shape and out.dtype == np.float32
    with pytest.raises(ConfigError, match="ensemble must be one of 1, 2, 4, 8"):
        denoise_array(model, x, ensemble=3)


def test_gray_model_denoises_each_rgb_channel_with_color_channels() -> None:
    torch.manual_seed(0)
    model = TinyConv(channels=1).eval()
    x = np.random.default_rng(1).random((3, 40, 50), dtype=np.float32)
    out = denoise_array(model, x, color="channels")
    assert out.shape == x.shape
    for c in range(3):
        np.testing.assert_allclose(out[c], denoise_array(model, x[c : c + 1])[0], atol=1e-6)
    with pytest.raises(ConfigError, match="color must be one of opponent, channels"):
        denoise_array(model, x, color="rgb")


def test_gray_model_on_rgb_works_in_an_opponent_colour_space() -> None:
    from aetool.denoise.color import _from_opponent, _to_opponent

    torch.manual_seed(0)
    model = TinyConv(channels=1).eval()
    x = np.random.default_rng(1).random((3, 40, 50), dtype=np.float32)
    z = _to_opponent(x)
    # luminance and two colour differences, each in [0, 1] for any RGB in [0, 1]
    np.testing.assert_allclose(z[0], x.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(z[1], (x[0] - x[2]) / 2 + 0.5, atol=1e-6)
    np.testing.assert_allclose(z[2], (x[0] - 2 * x[1] + x[2]) / 4 + 0.5, atol=1e-6)
    corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).reshape(3, 8, 1).astype(np.float32)
    zc = _to_opponent(corners)
    assert zc.min() >= 0 and zc.max() <= 1
    np.testing.assert_allclose(_from_opponent(z), x, atol=1e-6)
    # Independent equal noise in R, G, B stays independent: the rows are orthogonal.
    noise = np.random.default_rng(2).normal(0, 0.1, (3, 200, 200)).astype(np.float32)
    cov = np.cov((_to_opponent(noise) - _to_opponent(np.zeros_like(noise))).reshape(3, -1))
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 2e-4
    # The model runs on the opponent planes, and the result comes back in RGB.
    with torch.no_grad():
        planes = model(torch.from_numpy(z)[:, None])[:, 0].numpy()
    expected = np.clip(_from_opponent(planes), 0, 1)
    np.testing.assert_allclose(denoise_array(model, x), expected, atol=1e-5)
    assert np.abs(denoise_array(model, x) - denoise_array(model, x, color="channels")).max() > 0.01
    # an identity model gives the input back
    np.testing.assert_allclose(denoise_array(identity(), x), x, atol=1e-6)


def test_rgb_model_on_gray_image_replicates_and_averages() -> None:
    out = denoise_array(identity(channels=3), np.full((1, 20, 30), 0.25, np.float32))
    assert out.shape == (1, 20, 30)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    assert denoise_array(identity(), np.zeros((20, 30), np.float32)).shape == (20, 30)


def test_fixed_size_model_tiles_at_its_input_size() -> None:
    torch.manual_seed(0)
    model = create_model("conv", channels=1, height=16, width=16, latent_dim=4).eval()
    x = np.random.default_rng(2).random((1, 16, 16), dtype=np.float32)
    with torch.no_grad():
        direct = model(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(denoise_array(model, x), direct, atol=1e-6)
    for shape in [(1, 45, 70), (1, 9, 5), (3, 33, 17)]:
        out = denoise_array(model, np.random.default_rng(3).random(shape, dtype=np.float32))
        assert out.shape == shape
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_trained_denoiser_improves_psnr(tiny_denoiser: AutoEncoder) -> None:
    from skimage import data

    clean = data.moon()[:160, :200].astype(np.float32)[None] / 255
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.1, clean.shape), 0, 1)
    out = denoise_array(tiny_denoiser, noisy.astype(np.float32), tile=64, overlap=16)
    assert psnr(clean, out) > psnr(clean, noisy) + 4.0
    assert ssim(clean, out) > ssim(clean, noisy) + 0.1


# ---------------------------------------------------------------------------
# formats and modes


def _make(path: Path, arr: np.ndarray, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **save)  # mode from dtype and shape (LA for 2 channels)
    return path


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "gray.png": rng.integers(0, 256, (20, 30), dtype=np.uint8),
        "rgb.png": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        "rgba.png": rng.integers(0, 256, (20, 30, 4), dtype=np.uint8),
        "deep16.png": rng.integers(0, 65536, (20, 30), dtype=np.uint16),
        "gray.bmp": rng.integers(0, 256, (20, 30), dtype=np.uint8),
        "rgb.tif": rng.integers(0, 256, (20, 30, 3), dtype=np.uint8),
        "deep16.tif": rng.integers(0, 65536, (20, 30), dtype=np.uint16),
    }


def test_lossless_formats_round_trip_exactly_with_identity_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    arrays = _arrays(rng)
    arrays["deep16.png"][0, :3] = [0, 1, 65535]  # extremes and the smallest step survive
    for name, arr in arrays.items():
        _make(src / "sub" / name, arr)
    la = np.stack([arrays["gray.png"], rng.integers(0, 256, (20, 30), dtype=np.uint8)], -1)
    _make(src / "la.png", la)
    results = list(denoise_images([src], tmp_path / "out", identity(), device="cpu"))
    assert [r.status for r in results] == ["written"] * 8
    for r in results:
        assert r.dst == tmp_path / "out" / r.ref.relpath
        with Image.open(r.ref.path) as a, Image.open(r.dst) as b:
            assert (b.format, b.mode, b.size) == (a.format, a.mode, a.size), r.ref.relpath
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a), err_msg=r.ref.relpath)
    with Image.open(tmp_path / "out/sub/deep16.png") as im:
        assert im.mode == "I;16" and np.asarray(im).max() == 65535


def test_sixteen_bit_output_keeps_full_precision(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 60000, 100, dtype=np.uint16), (8, 1)) + 7  # not multiples of 257
    _make(tmp_path / "in/ramp.png", ramp)
    model = create_model("test-identity")
    with torch.no_grad():
        model.scale.fill_(0.5)
    (r,) = denoise_images([tmp_path / "in"], tmp_path / "out", model.eval(), device="cpu")
    out = np.asarray(Image.open(r.dst)).astype(np.int64)
    np.testing.assert_array_less(np.abs(out - ramp.astype(np.int64) / 2), 1.0)
    assert len(np.unique(out)) == len(np.unique(ramp))  # not quantised to 8 bits


@pytest.mark.parametrize(
    ("planes", "alpha", "mode"), [(3, False, "RGB;16"), (4, True, "RGBA;16"), (2, True, "LA;16")]
)
def test_sixteen_bit_colour_and_gray_alpha_pngs_stay_sixteen_bit(
    tmp_path: Path, planes: int, alpha: bool, mode: str
) -> None:
    import png

    rng = np.random.default_rng(planes)
    src = rng.integers(0, 65536, (12, 10, planes), dtype=np.uint16)
    (tmp_path / "in").mkdir()
    with open(tmp_path / "in/x.png", "wb") as f:
        png.Writer(10, 12, greyscale=planes <= 2, alpha=alpha, bitdepth=16).write_array(
            f, src.reshape(-1)
        )
    src_image = read_image(tmp_path / "in/x.png")
    assert src_image.mode == mode
    model = create_model("test-identity")
    with torch.no_grad():
        model.scale.fill_(0.5)
    (r,) = denoise_images(
        [tmp_path / "in"], tmp_path / "out", model.eval(), device="cpu", color="channels"
    )
    assert r.status == "written"
    width, height, rows, meta = png.Reader(filename=str(r.dst)).asDirect()
    out = np.vstack([np.asarray(row, np.uint16) for row in rows]).reshape(height, width, -1)
    assert (meta["bitdepth"], meta["planes"], meta["alpha"]) == (16, planes, alpha)
    color = planes - 1 if alpha else planes
    np.testing.assert_array_less(np.abs(out[..., :color] - src[..., :color] / 2), 1.0)
    if alpha:
        np.testing.assert_array_equal(out[..., -1], src[..., -1])  # alpha kept, all 16 bits


def test_sixteen_bit_colour_tiff_is_an_error_row_not_a_silent_8_bit_copy(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    (tmp_path / "in").mkdir()
    _make(tmp_path / "in/a.png", np.full((8, 8), 100, np.uint8))
    tifffile.imwrite(tmp_path / "in/b.tif", np.full((6, 5, 3), 40000, np.uint16))
    rows = list(denoise_images([tmp_path / "in"], tmp_path / "out", create_model("test-identity")))
    assert [r.status for r in rows] == ["written", "error"]
    assert "16-bit colour TIFF is not supported" in rows[1].error
    assert not (tmp_path / "out/b.tif").exists()


def test_float_and_32_bit_tiffs_keep_their_value_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    wide = (rng.random((9, 11)) * 1020 - 200).astype(np.float32)
    wide[2, 3] = np.nan
    _make(tmp_path / "in/wide.tif", wide)
    counts = rng.integers(0, 255_000, (9, 11)).astype(np.int32)
    Image.fromarray(counts, "I").save(tmp_path / "in/counts.tif")
    src = read_image(tmp_path / "in/wide.tif")
    assert src.value_range == (pytest.approx(float(np.nanmin(wide))), pytest.approx(
        float(np.nanmax(wide))))  # fmt: skip
    assert 0.0 <= src.pixels.min() and src.pixels.max() <= 1.0
    rows = list(denoise_images([tmp_path / "in"], tmp_path / "out", create_model("test-identity")))
    assert [r.status for r in rows] == ["written", "written"]
    out_wide = np.asarray(Image.open(tmp_path / "out/wide.tif"))
    assert out_wide.dtype == np.float32
    assert np.isnan(out_wide[2, 3])
    finite = ~np.isnan(wide)
    np.testing.assert_allclose(out_wide[finite], wide[finite], atol=1e-3)
    with Image.open(tmp_path / "out/counts.tif") as im:
        assert im.mode == "I"
        np.testing.assert_allclose(np.asarray(im), counts, atol=1)


def test_multi_frame_images_are_refused_not_cut_to_one_frame(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((6, 6), v, np.uint8)) for v in (10, 100, 200)]
    (tmp_path / "in").mkdir()
    frames[0].save(tmp_path / "in/anim.gif", save_all=True, append_images=frames[1:])
    (r,) = denoise_images([tmp_path / "in"], tmp_path / "out", create_model("test-identity"))
    assert r.status == "error" and "has 3 frames" in r.error
    assert not (tmp_path / "out/anim.gif").exists()


def test_exif_is_kept_with_the_orientation_reset(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "aetool-test-camera"  # Make
    exif[0x0112] = 6  # rotate 90 degrees to display
    _make(tmp_path / "in/photo.jpg", np.zeros((20, 30, 3), np.uint8), exif=exif.tobytes())
    (r,) = denoise_images([tmp_path / "in"], tmp_path / "out", create_model("test-identity"))
    with Image.open(r.dst) as out:
        kept = out.getexif()
        assert out.size == (20, 30)  # written upright
    assert kept[0x010F] == "aetool-test-camera" and kept[0x0112] == 1


def test_rgba_alpha_untouched_and_jpeg_quality(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)
    _make(tmp_path / "in/a.png", rgba)
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.stack([xx * 3, yy * 4, (xx + yy) * 2], -1).astype(np.uint8)
    _make(tmp_path / "in/photo.jpg", smooth, quality=95)
    _make(tmp_path / "in/gray.jpg", smooth[..., 0])
    model = create_model("test-identity")
    with torch.no_grad():
        model.scale.fill_(0.5)
    results = {r.ref.relpath: r for r in denoise_images([tmp_path / "in"], tmp_path / "out",
                                                         model.eval(), device="cpu",
                                                         color="channels")}  # fmt: skip
    out = np.asarray(Image.open(results["a.png"].dst))
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    assert np.abs(out[..., :3].astype(int) - np.round(rgba[..., :3] / 2)).max() <= 1
    for name, mode in [("photo.jpg", "RGB"), ("gray.jpg", "L")]:
        with Image.open(results[name].dst) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", mode, (64, 48))
            ref = np.asarray(Image.open(tmp_path / "in" / name)).astype(float) / 2
            assert np.abs(np.asarray(im).astype(float) - ref).mean() < 2.0  # quality 95


def test_palette_image_is_written_as_rgb(tmp_path: Path) -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 12, 3), np.uint8))
    img.quantize(16).save(tmp_path / "p.png")
    src = read_image(tmp_path / "p.png")
    assert src.mode == "RGB" and src.pixels.shape == (3, 10, 12)


def test_read_image_reports_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("bad.png", "empty.png"):
        with pytest.raises(ImageError, match=name):
            read_image(tmp_path / name)


# ---------------------------------------------------------------------------
# paths and safety


def test_relative_paths_are_mirrored(tmp_path: Path) -> None:
    for rel in ("a/b/one.png", "a/two.png", "three.png"):
        _make(tmp_path / "in" / rel, np.zeros((8, 8), np.uint8))
    out = tmp_path / "out"
    results = list(denoise_images([tmp_path / "in"], out, identity(), device="cpu"))
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a/b/one.png", "a/two.png", "three.png"]
    assert [r.status for r in results] == ["written"] * 3
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # temp files renamed
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "three.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp's 0600


def test_existing_outputs_are_not_overwritten(tmp_path: Path) -> None:
    _make(tmp_path / "in/x.png", np.full((8, 8), 100, np.uint8))
    _make(tmp_path / "in/y.png", np.full((8, 8), 100, np.uint8))
    out = tmp_path / "out"
    _make(out / "x.png", np.full((8, 8), 7, np.uint8))
    model = create_model("test-identity")
    with torch.no_grad():
        model.scale.fill_(0.5)
    res = {r.ref.relpath: r for r in denoise_images([tmp_path / "in"], out, model, device="cpu")}
    assert res["x.png"].status == "exists" and res["y.png"].status == "written"
    assert np.asarray(Image.open(out / "x.png")).max() == 7
    res = list(denoise_images([tmp_path / "in"], out, model, overwrite=True, device="cpu"))
    assert [r.status for r in res] == ["written", "written"]
    assert np.asarray(Image.open(out / "x.png")).max() == 50


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_output_folder_overlapping_input_is_refused(tmp_path: Path, where: str) -> None:
    src = tmp_path / "data" / "in"
    _make(src / "x.png", np.zeros((8, 8), np.uint8))
    out = {"same": src, "inside": src / "den", "parent": tmp_path / "data"}[where]
    with pytest.raises(OutputError, match="outside the inputs"):
        denoise_images([src], out, identity())
    refs, _ = find_images([src])
    with pytest.raises(OutputError):
        denoise_images(refs, out, identity())  # refs carry their root too
    check_output_dir(tmp_path / "elsewhere", [src])  # a separate folder is fine


def test_symlink_escape_and_dotdot_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _make(src / "sub" / "x.png", np.zeros((8, 8), np.uint8))
    _make(src / "y.png", np.zeros((8, 8), np.uint8))
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "sub")
    res = {r.ref.relpath: r for r in denoise_images([src], out, identity(), device="cpu")}
    assert res["sub/x.png"].status == "error" and "symlink" in (res["sub/x.png"].error or "")
    assert res["y.png"].status == "written"
    assert list(outside.iterdir()) == []
    for bad in ("../x.png", "/etc/x.png", "a/../../x.png"):
        with pytest.raises(OutputError, match="leave the output folder"):
            output_path(out, bad)
    assert output_path(out, "./a/b.png") == out / "a" / "b.png"


def test_unreadable_input_is_an_error_row_or_fatal_with_strict(tmp_path: Path) -> None:
    _make(tmp_path / "in/good.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "in/bad.png").write_bytes(b"garbage")
    res = list(denoise_images([tmp_path / "in"], tmp_path / "out", identity(), device="cpu"))
    assert [(r.ref.relpath, r.status) for r in res] == [
        ("bad.png", "error"),
        ("good.png", "written"),
    ]
    assert "cannot decode" in (res[0].error or "")
    assert not (tmp_path / "out/bad.png").exists()
    with pytest.raises(ImageError, match="bad.png"):
        list(denoise_images([tmp_path / "in"], tmp_path / "o2", identity(), strict=True))


def test_reference_metrics_and_missing_reference(tmp_path: Path, tiny_denoiser) -> None:
    from skimage import data

    clean = data.camera()[100:228, 100:228]
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25.5, clean.shape), 0, 255)
    _make(tmp_path / "clean/n.png", clean)
    _make(tmp_path / "noisy/n.png", noisy.astype(np.uint8))
    _make(tmp_path / "noisy/extra.png", clean)
    res = {
        r.ref.relpath: r
        for r in denoise_images(
            [tmp_path / "noisy"], tmp_path / "out", tiny_denoiser, reference=tmp_path / "clean"
        )
    }
    r = res["n.png"]
    assert r.sigma_est == pytest.approx(0.1, rel=0.15)
    assert r.psnr_out > r.psnr_in + 3 and r.ssim_out > r.ssim_in
    assert r.psnr_in == pytest.approx(psnr(clean[None] / 255, noisy.astype(np.uint8)[None] / 255))
    assert r.ssim_in == pytest.approx(ssim(clean[None] / 255, noisy.astype(np.uint8)[None] / 255))
    assert res["extra.png"].status == "written" and res["extra.png"].psnr_in is None
    assert "reference not used" in (res["extra.png"].error or "")


def test_model_file_and_bundled_model(tmp_path: Path) -> None:
    path = save_model(tmp_path / "id.safetensors", identity(), {"preprocessing": {"channels": 1}})
    _make(tmp_path / "in/x.png", np.full((8, 8), 9, np.uint8))
    (r,) = denoise_images([tmp_path / "in"], tmp_path / "out", path, device="cpu")
    assert r.status == "written" and np.asarray(Image.open(r.dst)).max() == 9
    assert load_model(path).model.fully_convolutional
    with pytest.raises(ModelFileError, match="missing from this installation"):
        bundled_model_path("no-such-model.safetensors")


def test_results_stream_while_the_next_image_is_being_denoised(tmp_path: Path) -> None:
    import threading

    first_received = threading.Event()
    waited: list[bool] = []

    class Gate(IdentityModel):
        """Denoising the second image waits until the first result has reached the caller."""

        calls = 0

        def forward(self, x: Tensor) -> Tensor:
            Gate.calls += 1
            if Gate.calls == 2:
                waited.append(first_received.wait(timeout=30))
            return x * self.scale

    for name, side in (("a.png", 8), ("b.png", 9)):  # sizes apart: one forward pass each
        _make(tmp_path / "in" / name, np.full((side, side), 50, np.uint8))
    results = denoise_images([tmp_path / "in"], tmp_path / "out", Gate().eval(), device="cpu")
    first = next(results)
    assert first.status == "written" and first.dst.exists()
    first_received.set()
    assert [r.status for r in results] == ["written"]
    assert waited == [True]  # the first row did not wait for the second image


def test_closing_the_results_early_stops_the_pipeline(tmp_path: Path) -> None:
    for i in range(20):
        _make(tmp_path / "in" / f"{i:02d}.png", np.full((8, 8), 50, np.uint8))
    results = denoise_images(
        [tmp_path / "in"], tmp_path / "out", create_model("test-identity"), workers=1, batch_size=2
    )
    assert next(results).status == "written"
    results.close()  # the consumer stops: no thread is left running, no more files appear
    n = len(list((tmp_path / "out").iterdir()))
    import threading

    assert not [t for t in threading.enumerate() if t.name == "aetool-denoise"]
    # at most a few ahead: results not yet handed out (2 workers' worth decoded ahead, a
    # batch more for small images, one more: 5) and the batch of 2 whose writes had begun
    assert n <= 8 and len(list((tmp_path / "out").iterdir())) == n


def test_sixteen_bit_colour_png_keeps_its_icc_profile(tmp_path: Path) -> None:
    import png
    from PIL import ImageCms

    (tmp_path / "in").mkdir()
    src = np.random.default_rng(0).integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    with open(tmp_path / "in/x.png", "wb") as f:
        png.Writer(5, 6, greyscale=False, bitdepth=16).write_array(f, src.reshape(-1))

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    import zlib

    _insert_png_chunk(tmp_path / "in/x.png", b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
    assert read_image(tmp_path / "in/x.png").info["icc_profile"] == icc
    (r,) = denoise_images(
        [tmp_path / "in"], tmp_path / "out", create_model("test-identity"), color="channels"
    )
    with Image.open(r.dst) as out:
        assert out.info.get("icc_profile") == icc
    width, height, rows, meta = png.Reader(filename=str(r.dst)).asDirect()
    out16 = np.vstack([np.asarray(row, np.uint16) for row in rows]).reshape(height, width, 3)
    np.testing.assert_array_equal(out16, src)  # identity model: all 16 bits back


def test_tiff_tags_are_not_copied_onto_converted_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    (tmp_path / "in").mkdir()
    pal = Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16
    )
    pal.save(tmp_path / "in/pal.tif")
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).convert("CMYK").save(
        tmp_path / "in/cmyk.tif"
    )
    rows = list(
        denoise_images(
            [tmp_path / "in"], tmp_path / "out", create_model("test-identity"), color="channels"
        )
    )
    assert [r.status for r in rows] == ["written", "written"]
    for r in rows:
        with Image.open(r.dst) as out:
            out.load()
            assert out.mode == "RGB" and out.size == (12, 10)
    with Image.open(tmp_path / "in/pal.tif") as src:
        expected = np.asarray(src.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out/pal.tif")), expected)


def test_sixteen_bit_png_with_fewer_significant_bits_keeps_its_values(tmp_path: Path) -> None:
    import png

    (tmp_path / "in").mkdir()
    src = (np.random.default_rng(1).integers(0, 4096, (6, 5, 3)) << 4).astype(np.uint16)
    with open(tmp_path / "in/x.png", "wb") as f:
        png.Writer(5, 6, greyscale=False, bitdepth=16).write_array(f, src.reshape(-1))
    _insert_png_chunk(tmp_path / "in/x.png", b"sBIT", bytes([12, 12, 12]))  # 12 of 16 bits
    (r,) = denoise_images(
        [tmp_path / "in"], tmp_path / "out", create_model("test-identity"), color="channels"
    )
    _, _, rows, _ = png.Reader(filename=str(r.dst)).read()
    out = np.vstack([np.asarray(row, np.uint16) for row in rows]).reshape(6, 5, 3)
    np.testing.assert_array_equal(out, src)


def test_an_mpo_photo_is_denoised_as_its_main_picture(tmp_path: Path) -> None:
    views = [Image.fromarray(np.full((8, 10, 3), v, np.uint8)) for v in (60, 200)]
    (tmp_path / "in").mkdir()
    views[0].save(tmp_path / "in/photo.jpg", format="MPO", save_all=True, append_images=views[1:])
    with Image.open(tmp_path / "in/photo.jpg") as im:
        assert im.format == "MPO" and im.n_frames == 2
    (r,) = denoise_images([tmp_path / "in"], tmp_path / "out", create_model("test-identity"))
    assert r.status == "written"
    assert abs(float(np.asarray(Image.open(r.dst)).mean()) - 60) < 3


def test_nan_pixels_of_a_float_image_in_0_1_are_kept(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((6, 7)).astype(np.float32)
    x[1, 2], x[3, 4] = np.nan, np.inf
    _make(tmp_path / "in/f.tif", x)
    (r,) = denoise_images([tmp_path / "in"], tmp_path / "out", create_model("test-identity"))
    out = np.asarray(Image.open(r.dst))
    assert np.isnan(out[1, 2]) and np.isposinf(out[3, 4])
    finite = np.isfinite(x)
    np.testing.assert_allclose(out[finite], x[finite], atol=1e-6)


def test_metadata_the_encoder_refuses_is_dropped_but_quality_kept(tmp_path: Path) -> None:
    from aetool.denoise.imageio import SourceImage, write_image

    pixels = np.random.default_rng(4).random((3, 16, 16)).astype(np.float32)
    src = SourceImage(pixels, None, "RGB", "JPEG", {"exif": b"Exif\x00\x00" + bytes(70_000)})
    with pytest.raises(ValueError):  # JPEG's EXIF segment holds at most 64 KB
        Image.new("RGB", (4, 4)).save(tmp_path / "probe.jpg", exif=src.info["exif"])
    out = write_image(tmp_path / "x.jpg", src, pixels)
    Image.fromarray((pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
        tmp_path / "q95.jpg", quality=95
    )
    with Image.open(out) as written, Image.open(tmp_path / "q95.jpg") as ref:
        assert written.quantization == ref.quantization  # still quality 95
        assert "exif" not in written.info


def test_auto_colour_uses_channels_for_jpegs_with_subsampled_colour(tmp_path: Path) -> None:
    rgb = np.random.default_rng(6).integers(40, 200, (16, 16, 3), dtype=np.uint8)
    _make(tmp_path / "in/sub.jpg", rgb, quality=95, subsampling=2)  # 4:2:0
    _make(tmp_path / "in/full.jpg", rgb, quality=95, subsampling=0)  # 4:4:4
    _make(tmp_path / "in/lossless.png", rgb)
    flags = {p.name: read_image(p).chroma_subsampled for p in sorted((tmp_path / "in").iterdir())}
    assert flags == {"full.jpg": False, "lossless.png": False, "sub.jpg": True}
    model = create_model("test-identity")
    with torch.no_grad():
        model.scale.fill_(0.5)  # halving R, G, B differs from halving the opponent planes
    rows = {
        r.ref.path.name: r
        for r in denoise_images([tmp_path / "in"], tmp_path / "out", model.eval(), device="cpu")
    }
    for name, color in (("sub.jpg", "channels"), ("full.jpg", "opponent")):
        src = read_image(tmp_path / "in" / name)
        expected = denoise_array(model, src.pixels, color=color)
        other = denoise_array(model, src.pixels, color=({"channels", "opponent"} - {color}).pop())
        got = read_image(rows[name].dst).pixels
        assert np.abs(got - expected).mean() < np.abs(got - other).mean() / 4, name


def _insert_png_chunk(path: Path, kind: bytes, data: bytes) -> None:
    from aetool.denoise.metadata import _insert_png_chunks

    _insert_png_chunks(path, [(kind, data)])


def _chunk_types(path: Path) -> list[bytes]:
    import struct

    raw, pos, kinds = path.read_bytes(), 8, []
    while pos < len(raw):
        (n,) = struct.unpack(">I", raw[pos : pos + 4])
        kinds.append(raw[pos + 4 : pos + 8])
        pos += 12 + n
    return kinds


def test_png_text_chunks_are_kept_at_8_and_16_bits(tmp_path: Path) -> None:
    import zlib

    import png
    from PIL import ImageCms, PngImagePlugin

    from aetool.denoise.metadata import _png_text_chunks

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(1)
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Software", "scanner 1.2")
    meta.add_text("Comment", "z" * 5000, zip=True)  # zTXt: stays compressed
    meta.add_text("Comment", "a second comment")  # repeated keyword
    meta.add_itxt("Title", "Überprüfung ✓", lang="de", tkey="Titel", zip=True)
    meta.add(b"tEXt", b"Late\x00after the pixels", after_idat=True)
    Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8)).save(
        tmp_path / "in/a.png", pnginfo=meta
    )
    src16 = rng.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    with open(tmp_path / "in/b.png", "wb") as f:
        png.Writer(5, 6, greyscale=False, bitdepth=16).write_array(f, src16.reshape(-1))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _insert_png_chunk(tmp_path / "in/b.png", b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
    _insert_png_chunk(tmp_path / "in/b.png", b"tEXt", b"Author\x00Ana")
    _insert_png_chunk(tmp_path / "in/b.png", b"iTXt", b"Note\x00\x00\x00fr\x00\x00\xc3\xa7a")
    _insert_png_chunk(tmp_path / "in/b.png", b"tEXt", b"dpi\x00300")  # a keyword Pillow uses too

    rows = list(
        denoise_images(
            [tmp_path / "in"], tmp_path / "out", create_model("test-identity"), color="channels"
        )
    )
    assert [r.status for r in rows] == ["written", "written"]
    for name in ("a.png", "b.png"):  # every text chunk, byte for byte, in order
        before = _png_text_chunks(tmp_path / "in" / name)
        assert len(before) == (5 if name == "a.png" else 3)
        assert _png_text_chunks(tmp_path / "out" / name) == before
    assert b"zTXt" in _chunk_types(tmp_path / "out/a.png")
    assert (tmp_path / "out/a.png").stat().st_size < 2000  # the 5,000-byte comment compressed
    with Image.open(tmp_path / "out/a.png") as out:
        out.load()
        assert out.text["Title"] == "Überprüfung ✓" and out.text["Title"].lang == "de"
        assert out.text["Late"] == "after the pixels"
    with Image.open(tmp_path / "out/b.png") as out:
        out.load()
        assert out.text["Note"] == "ça" and out.text["Note"].lang == "fr"
        assert out.info["icc_profile"] == icc
    kinds = _chunk_types(tmp_path / "out/b.png")
    assert b"pHYs" not in kinds  # the text "dpi" stays text, not a resolution
    assert kinds.index(b"iCCP") < kinds.index(b"tEXt") < kinds.index(b"IDAT")  # iCCP before text
    width, height, data, _ = png.Reader(filename=str(tmp_path / "out/b.png")).read()
    out16 = np.vstack([np.asarray(r, np.uint16) for r in data]).reshape(height, width, 3)
    np.testing.assert_array_equal(out16, src16)


def test_orientation_in_png_text_is_not_applied_twice(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    from aetool.denoise.metadata import _png_text_chunks

    (tmp_path / "in").mkdir()
    pixels = np.random.default_rng(5).integers(0, 256, (6, 10), dtype=np.uint8)  # 10 wide
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6" '
        'tiff:Make="Cam"/></rdf:RDF></x:xmpmeta>'
    )
    meta = PngImagePlugin.PngInfo()
    meta.add_itxt("XML:com.adobe.xmp", xmp, zip=True)
    meta.add_text("Software", "kept")
    meta.add_text("Raw profile type iptc", "\niptc\n       4\n1c020000\n")  # no orientation: kept
    raw_exif = Image.Exif()
    raw_exif[0x0112] = 6  # ImageMagick's EXIF profile, which Pillow reads the orientation from
    hexed = raw_exif.tobytes().hex()
    meta.add_text("Raw profile type exif", f"\nexif\n{len(hexed) // 2:8d}\n{hexed}\n")
    Image.fromarray(pixels).save(tmp_path / "in/xmp.png", pnginfo=meta)
    with Image.open(tmp_path / "in/xmp.png") as im:
        shown = ImageOps.exif_transpose(im).size
    assert shown == (6, 10)  # displayed turned: 6 wide, 10 high
    (r,) = denoise_images([tmp_path / "in"], tmp_path / "out", create_model("test-identity"))
    with Image.open(r.dst) as out:
        assert out.size == shown  # written upright ...
        assert ImageOps.exif_transpose(out).size == shown  # ... and not turned again
        out.load()
        assert "Orientation" not in out.text["XML:com.adobe.xmp"]
        assert 'tiff:Make="Cam"' in out.text["XML:com.adobe.xmp"]
        assert out.text["Software"] == "kept" and "Raw profile type iptc" in out.text
        assert "Raw profile type exif" not in out.text
    assert len(_png_text_chunks(r.dst)) == 3


def test_png_text_walk_stops_at_a_chunk_longer_than_the_file(tmp_path: Path) -> None:
    import tracemalloc

    from aetool.denoise.metadata import _png_text_chunks

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    raw = (tmp_path / "a.png").read_bytes()
    bad = raw[:33] + struct.pack(">I", 0xFFFFFFF0) + b"tEXt" + b"abc"  # truncated after IHDR
    (tmp_path / "bad.png").write_bytes(bad)
    tracemalloc.start()
    try:
        assert _png_text_chunks(tmp_path / "bad.png") == []
        assert tracemalloc.get_traced_memory()[1] < 2**20  # never asked for the claimed 4 GB
    finally:
        tracemalloc.stop()
    with pytest.raises(ImageError):
        read_image(tmp_path / "bad.png")


def test_lossless_webp_is_written_lossless_and_lossy_stays_lossy(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    src = np.random.default_rng(2).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    Image.fromarray(src).save(tmp_path / "in/exact.webp", lossless=True)
    Image.fromarray(src).save(tmp_path / "in/photo.webp", quality=80)
    rows = list(
        denoise_images(
            [tmp_path / "in"], tmp_path / "out", create_model("test-identity"), color="channels"
        )
    )
    assert [r.status for r in rows] == ["written", "written"]
    exact = (tmp_path / "out/exact.webp").read_bytes()
    assert exact[12:16] == b"VP8L"  # the lossless bitstream
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out/exact.webp")), src)
    assert (tmp_path / "out/photo.webp").read_bytes()[12:16] == b"VP8 "


def test_lossless_webp_with_alpha_and_one_frame_animation(tmp_path: Path) -> None:
    from aetool.denoise.metadata import _webp_lossless

    (tmp_path / "in").mkdir()
    rgba = np.random.default_rng(6).integers(0, 256, (16, 12, 4), dtype=np.uint8)
    rgba[:4, :, 3] = 0  # transparent pixels whose colour must survive too
    Image.fromarray(rgba).save(tmp_path / "in/alpha.webp", lossless=True, exact=True)
    # A one-frame animation (VP8X, ANIM, ANMF around a VP8L bitstream), as some tools write.
    Image.fromarray(rgba[..., :3]).save(tmp_path / "plain.webp", lossless=True)
    vp8l = (tmp_path / "plain.webp").read_bytes()[12:]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return kind + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)

    w, h = (v.to_bytes(3, "little") for v in (12 - 1, 16 - 1))
    body = b"WEBP" + chunk(b"VP8X", bytes([0x02, 0, 0, 0]) + w + h)
    body += chunk(b"ANIM", struct.pack("<IH", 0, 0))
    body += chunk(b"ANMF", bytes(6) + w + h + (100).to_bytes(3, "little") + b"\0" + vp8l)
    (tmp_path / "in/anim.webp").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert Image.open(tmp_path / "in/anim.webp").n_frames == 1
    assert _webp_lossless(tmp_path / "in/anim.webp")
    rows = list(
        denoise_images(
            [tmp_path / "in"], tmp_path / "out", create_model("test-identity"), color="channels"
        )
    )
    assert [r.status for r in rows] == ["written", "written"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out/alpha.webp")), rgba)
    assert _webp_lossless(tmp_path / "out/anim.webp")
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "out/anim.webp").convert("RGB")), rgba[..., :3]
    )


def test_sixteen_bit_colour_png_keeps_exif_and_dpi(tmp_path: Path) -> None:
    import struct

    import png

    (tmp_path / "in").mkdir()
    src = np.random.default_rng(4).integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    with open(tmp_path / "in/x.png", "wb") as f:
        png.Writer(5, 6, greyscale=False, bitdepth=16).write_array(f, src.reshape(-1))
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    exif[0x0112] = 6  # kept: pypng reads the pixels as stored, not turned upright
    _insert_png_chunk(tmp_path / "in/x.png", b"eXIf", exif.tobytes()[6:])
    _insert_png_chunk(tmp_path / "in/x.png", b"pHYs", struct.pack(">IIB", 11811, 11811, 1))
    (r,) = denoise_images(
        [tmp_path / "in"], tmp_path / "out", create_model("test-identity"), color="channels"
    )
    with Image.open(r.dst) as out:
        assert out.getexif()[0x010F] == "Maker" and out.getexif()[0x0112] == 6
        assert out.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    kinds = _chunk_types(r.dst)
    assert kinds.index(b"pHYs") < kinds.index(b"eXIf") < kinds.index(b"IDAT")
    width, height, data, _ = png.Reader(filename=str(r.dst)).read()
    out16 = np.vstack([np.asarray(row, np.uint16) for row in data]).reshape(height, width, 3)
    np.testing.assert_array_equal(out16, src)


def test_small_images_of_one_size_share_forward_passes_with_the_serial_result(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(7)
    scene = np.clip(np.add.outer(np.arange(40) * 4, np.arange(48) * 3), 0, 255)
    for i in range(6):  # gray, then colour, of one size; then another size
        _make(tmp_path / "in" / f"a{i}.png", _noisy_u8(scene, rng))
    for i in range(2):
        rgb = np.stack([_noisy_u8(scene, rng) for _ in range(3)], axis=-1)
        _make(tmp_path / "in" / f"b{i}.png", rgb)
    _make(tmp_path / "in" / "c.png", _noisy_u8(scene[:30, :30], rng))
    model = load_model(bundled_model_path()).model
    passes: list[int] = []
    model.register_forward_hook(lambda m, i, o: passes.append(len(i[0])))
    runs = {}
    for batch in (8, 1):
        out = tmp_path / f"out{batch}"
        passes.clear()
        rows = list(denoise_images([tmp_path / "in"], out, model, batch_size=batch, refine=True))
        assert [r.status for r in rows] == ["written"] * 9 and all(r.refined for r in rows)
        runs[batch] = (list(passes), {p.name: p.read_bytes() for p in out.iterdir()})
    # batched: the six gray and two colour images (12 planes) in one pass, then the other
    assert runs[8][0] == [12, 1]
    assert runs[1][0] == [1] * 6 + [3] * 2 + [1]
    assert runs[8][1] == runs[1][1]  # byte for byte


def _noisy_u8(scene: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(scene + rng.normal(0, 15, scene.shape), 0, 255).astype(np.uint8)
