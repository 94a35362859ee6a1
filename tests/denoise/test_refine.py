"""Collaborative Wiener refinement (aetool.denoise.refine): numbers, tiling, edge cases."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data

from aetool.denoise import refine
from aetool.denoise.array import denoise_array
from aetool.denoise.pipeline import denoise_images, gaussian_trained
from aetool.denoise.refine import refine_weight, wiener_refine
from aetool.errors import ConfigError
from aetool.metrics import psnr


def _brick(size: int = 128) -> np.ndarray:
    return (data.brick()[:size, :size] / 255.0).astype(np.float32)


def _noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)


def test_transforms_are_orthonormal() -> None:
    for n in (1, 2, 4, 8, 16):
        h = refine._haar(n)
        assert torch.allclose(h @ h.T, torch.eye(n), atol=1e-6)
    d = refine._dct(8)
    assert torch.allclose(d @ d.T, torch.eye(8), atol=1e-6)
    assert torch.allclose(d[0], torch.full((8,), 8**-0.5))  # row 0 is the mean


def test_recovers_texture_a_smooth_pilot_lost() -> None:
    clean = _brick()
    noisy = _noisy(clean, 0.1)
    pilot = gaussian_filter(noisy, 1.5)  # a pilot smoother than the truth
    out = wiener_refine(noisy, pilot, 0.1)
    assert out.dtype == np.float32 and out.shape == clean.shape
    gain = psnr(clean, out) - psnr(clean, pilot)
    assert gain > 1.0, gain
    assert psnr(clean, out) > psnr(clean, noisy) + 3.0


def test_a_perfect_pilot_gives_nearly_the_truth() -> None:
    clean = _brick()
    noisy = _noisy(clean, 0.1)
    out = wiener_refine(noisy, clean, 0.1)
    assert psnr(clean, out) > psnr(clean, noisy) + 8.0


@pytest.fixture
def threads() -> Iterator[Callable[[int], None]]:
    """Set torch's thread count for the test; restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _reference(noisy: np.ndarray, pilot: np.ndarray, sigma: float) -> np.ndarray:
    """The algorithm of the module's notes, transcribed plainly in float64 numpy: one
    reference patch at a time, its group, its transforms, its weighted patches added."""
    n, r = refine.PATCH, refine.RADIUS
    s2 = (sigma * refine.SIGMA_SCALE) ** 2
    y, p = (np.pad(a.astype(np.float64), r, mode="reflect") for a in (noisy, pilot))
    d = refine._dct(n).double().numpy()
    win = np.kaiser(n, refine.KAISER_BETA)
    win2 = win[:, None] * win[None, :]
    num, den = np.zeros_like(y), np.zeros_like(y)
    h, w = noisy.shape
    offsets = [(dy, dx) for dy in range(-r, r + 1, refine.OFFSET_STEP)
               for dx in range(-r, r + 1, refine.OFFSET_STEP)]  # fmt: skip
    grids = []
    for length in (h, w):
        g, last = refine._grid(length)
        grids.append(g + ([last] if last is not None else []))
    for ry in grids[0]:
        for rx in grids[1]:
            at = [(ry + r + dy, rx + r + dx) for dy, dx in offsets]
            ref = p[ry + r : ry + r + n, rx + r : rx + r + n]
            dist = [((p[a : a + n, b : b + n] - ref) ** 2).mean() for a, b in at]
            dist[offsets.index((0, 0))] = -1.0
            order = np.argsort(dist, kind="stable")[: refine.GROUP]
            count = max(1, sum(dist[i] <= refine.TAU for i in order))
            k = 2 ** int(np.floor(np.log2(count)))
            group = [at[i] for i in order[:k]]
            haar = refine._haar(k).double().numpy()
            spec = {
                name: np.stack([d @ a[i : i + n, j : j + n] @ d.T for i, j in group])
                for name, a in (("noisy", y), ("pilot", p))
            }
            noisy_t = np.einsum("ab,bij->aij", haar, spec["noisy"])
            pilot_t = np.einsum("ab,bij->aij", haar, spec["pilot"])
            gain = pilot_t**2 / (pilot_t**2 + s2)
            weight = 1.0 / (s2 * (gain**2).sum())
            z = np.einsum("ba,bij->aij", haar, gain * noisy_t)
            for (i, j), coef in zip(group, z, strict=True):
                num[i : i + n, j : j + n] += weight * win2 * (d.T @ coef @ d)
                den[i : i + n, j : j + n] += weight * win2
    num, den = num[r : r + h, r : r + w], den[r : r + h, r : r + w]
    return np.where(den > 0, num / np.maximum(den, 1e-30), pilot)


def test_equals_a_plain_transcription_of_the_algorithm(threads: Callable[[int], None]) -> None:
    threads(1)
    clean = (data.camera()[200:241, 100:159] / 255.0).astype(np.float32)
    noisy = _noisy(clean, 0.08, seed=3)
    pilot = gaussian_filter(noisy, 1.0)
    expect = _reference(noisy, pilot, 0.08)
    got = wiener_refine(noisy, pilot, 0.08)
    np.testing.assert_allclose(got, expect, atol=1e-5)
    assert np.abs(expect - pilot).max() > 0.01  # the reference did change the picture


def test_bands_one_a_thread_give_the_whole_plane_result(
    threads: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = (data.camera()[:150, :400] / 255.0).astype(np.float32)
    noisy = _noisy(clean, 0.08, seed=2)
    pilot = gaussian_filter(noisy, 1.0)
    threads(1)
    monkeypatch.setattr(refine, "_BAND", 1000)  # all 49 rows of reference patches at once
    whole = wiener_refine(noisy, pilot, 0.08)
    monkeypatch.setattr(refine, "_BAND", 6)  # 49 rows -> 9 bands (the last of 1 row)
    for count in (1, 3):  # in turn; in rounds of three, one band a thread
        threads(count)
        checked_in: list[int] = []
        banded = wiener_refine(
            noisy, pilot, 0.08, check=lambda seen=checked_in: seen.append(threading.get_ident())
        )
        assert torch.get_num_threads() == count  # restored after the bands ran
        # once a band in turn, once a round side by side; always in the calling thread,
        # whose own cancel flag the denoiser's check reads
        assert checked_in == [threading.get_ident()] * (9 if count == 1 else 3)
        np.testing.assert_allclose(banded, whole, atol=1e-5)


@pytest.mark.gpu
def test_cuda_gives_the_cpu_result(
    threads: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads(1)
    clean = (data.camera()[:300, :420] / 255.0).astype(np.float32)
    noisy = _noisy(clean, 0.08, seed=4)
    pilot = gaussian_filter(noisy, 1.0)
    np.testing.assert_allclose(
        wiener_refine(noisy, pilot, 0.08, device="cuda"),
        wiener_refine(noisy, pilot, 0.08),
        atol=1e-5,
    )
    monkeypatch.setattr(refine, "TILE", 99)  # tiled, on the GPU too
    np.testing.assert_allclose(
        wiener_refine(noisy, pilot, 0.08, device="cuda"),
        wiener_refine(noisy, pilot, 0.08),
        atol=1e-5,
    )


def test_tiles_give_the_whole_picture_result(
    monkeypatch: pytest.MonkeyPatch, threads: Callable[[int], None]
) -> None:
    threads(1)  # one tile at a time, so one check a tile
    clean = (data.camera()[:150, :230] / 255.0).astype(np.float32)
    noisy = _noisy(clean, 0.08, seed=1)
    pilot = gaussian_filter(noisy, 1.0)
    whole = wiener_refine(noisy, pilot, 0.08)
    # tiles when a side is over 66 + 2 * 33; both multiples of STEP, as the module's are
    monkeypatch.setattr(refine, "TILE", 66)
    assert refine.TILE % refine.STEP == 0 and refine.MARGIN % refine.STEP == 0
    calls: list[int] = []
    tiled = wiener_refine(noisy, pilot, 0.08, check=lambda: calls.append(1))
    assert len(calls) == 3 * 4  # 150 / 66 -> 3 rows, 230 / 66 -> 4 columns of tiles
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    assert np.abs(whole - pilot).max() > 0.01  # it did change the picture


def test_tiles_line_up_with_the_whole_planes_grid() -> None:
    # a tile starts at a multiple of TILE and its context MARGIN before: both must be
    # multiples of STEP, or tiled planes would differ from whole ones (see the test above)
    assert refine.TILE % refine.STEP == 0 and refine.MARGIN % refine.STEP == 0


def test_check_can_stop_a_tiled_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine, "TILE", 32)
    noisy = _noisy(_brick(), 0.1)

    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wiener_refine(noisy, noisy, 0.1, check=stop)


def test_edge_cases_return_the_pilot_or_refuse() -> None:
    rng = np.random.default_rng(0)
    small = rng.random((15, 40)).astype(np.float32)
    np.testing.assert_array_equal(wiener_refine(small, small * 0.5, 0.1), small * 0.5)
    plane = rng.random((32, 32)).astype(np.float32)
    for sigma in (0.0, float("nan")):
        np.testing.assert_array_equal(wiener_refine(plane, plane * 0.5, sigma), plane * 0.5)
    with pytest.raises(ConfigError, match="equal 2-D planes"):
        wiener_refine(plane, plane[:, :31], 0.1)
    odd = _noisy(_brick(37)[:, :29], 0.1)  # sides that are not multiples of the step
    out = wiener_refine(odd, gaussian_filter(odd, 1.0), 0.1)
    assert out.shape == odd.shape and np.isfinite(out).all()


def test_denoise_array_refines_every_plane_at_its_own_noise_level() -> None:
    from aetool.denoise.color import _from_opponent, _to_opponent
    from aetool.denoise.noise_level import refine_sigma

    class Blur(torch.nn.Module):  # a stand-in denoiser: a fixed Gaussian blur
        fully_convolutional = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(gaussian_filter(x.numpy(), (0, 0, 1.2, 1.2)))

        def arch_args(self) -> dict[str, int]:
            return {"channels": 1}

    clean = (data.astronaut()[100:228, 150:278] / 255.0).astype(np.float32).transpose(2, 0, 1)
    noisy = np.clip(_noisy(clean, 0.08, seed=2), 0, 1)
    plain = denoise_array(Blur(), noisy)
    refined = denoise_array(Blur(), noisy, refine=True)
    assert refined.shape == noisy.shape
    assert psnr(clean, refined) > psnr(clean, plain) + 1.0
    # the same as refining the opponent planes one by one, each at the sigma estimated from
    # what the model took away
    z = _to_opponent(noisy)
    pilot = np.stack([np.clip(gaussian_filter(p, 1.2), 0, 1) for p in z])
    sigmas = [refine_sigma(z[c], pilot[c]) for c in range(3)]
    assert all(0 < refine_weight(s) for s in sigmas)
    expect = np.stack([np.clip(refine.refine(z[c], pilot[c], sigmas[c]), 0, 1) for c in range(3)])
    np.testing.assert_allclose(refined, np.clip(_from_opponent(expect), 0, 1), atol=1e-5)


def test_refine_blends_by_noise_level_and_skips_strong_noise() -> None:
    assert refine_weight(10 / 255) == refine_weight(25 / 255) == refine.BLEND
    assert refine_weight(27.5 / 255) == pytest.approx(refine.BLEND / 2)
    for sigma in (30 / 255, 0.5, 0.0, -1.0, float("nan"), float("inf")):
        assert refine_weight(sigma) == 0.0
    clean = _brick()
    noisy = _noisy(clean, 0.08)
    pilot = gaussian_filter(noisy, 1.5)
    full = wiener_refine(noisy, pilot, 0.08)
    blended = refine.refine(noisy, pilot, 0.08)
    np.testing.assert_allclose(blended, pilot + refine.BLEND * (full - pilot), atol=1e-6)
    assert psnr(clean, blended) > psnr(clean, pilot) + 1.0
    strong = _noisy(clean, 0.2)
    np.testing.assert_array_equal(refine.refine(strong, pilot, 0.2), pilot)


def test_auto_refines_models_trained_on_gaussian_noise() -> None:
    assert gaussian_trained("gaussian:0.02-0.2") and gaussian_trained("Gaussian:0.1")
    for noise in (None, "none", "saltpepper:0.05", "masking:0.3", 3):
        assert not gaussian_trained(noise)  # type: ignore[arg-type]


def test_denoise_images_refuses_a_bad_refine_value(tmp_path) -> None:
    with pytest.raises(ConfigError, match="refine must be True, False or 'auto'"):
        denoise_images([], tmp_path / "out", refine="yes")


def test_auto_skips_jpegs_with_subsampled_colour(tmp_path) -> None:
    from PIL import Image

    from aetool.denoise.pipeline import DenoiseSummary

    rng = np.random.default_rng(0)
    clean = data.astronaut()[:64, :64].astype(np.float64)
    noisy = np.clip(clean + rng.normal(0, 15, clean.shape), 0, 255).astype(np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(noisy).save(src / "s420.jpg", quality=95, subsampling=2)
    Image.fromarray(noisy).save(src / "s444.jpg", quality=95, subsampling=0)
    Image.fromarray(noisy[:, :, 0]).save(src / "gray.png")
    for refine_opt, expect in (("auto", {"s420.jpg": False, "s444.jpg": True, "gray.png": True}),
                               (True, {"s420.jpg": True, "s444.jpg": True, "gray.png": True}),
                               (False, {"s420.jpg": False, "s444.jpg": False, "gray.png": False})):  # fmt: skip
        out = tmp_path / f"out-{refine_opt}"
        results = list(denoise_images([src], out, refine=refine_opt))
        assert {r.ref.path.name: r.refined for r in results} == expect
        summary = DenoiseSummary()
        for r in results:
            summary.add(r)
        assert summary.refined == sum(expect.values())
    # a Python model without a training record: auto leaves it alone
    (r,) = denoise_images([src / "gray.png"], tmp_path / "id", _Identity(), refine="auto")
    assert not r.refined


class _Identity(torch.nn.Module):
    fully_convolutional = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def arch_args(self) -> dict[str, int]:
        return {"channels": 1}


def test_views_constant_planes_and_thin_planes(monkeypatch: pytest.MonkeyPatch) -> None:
    noisy = _noisy(_brick(), 0.08, seed=3)
    pilot = gaussian_filter(noisy, 1.0)
    flipped = wiener_refine(noisy[::-1], pilot[::-1], 0.08)  # negative strides
    np.testing.assert_allclose(flipped, wiener_refine(noisy[::-1].copy(), pilot[::-1].copy(), 0.08))
    # a flat pilot ties every candidate: each reference still heads its own group
    flat = np.full((64, 64), 0.4, np.float32)
    out = wiener_refine(_noisy(flat, 0.05), flat, 0.05)
    assert np.abs(out - 0.4).max() < 0.02
    # a thin plane runs in tiles (a side over 576 px) with the whole-plane result
    thin = _noisy(np.tile(_brick(16), (1, 45)), 0.08, seed=4)  # 16 x 720
    thin_pilot = gaussian_filter(thin, 1.0)
    tiled = wiener_refine(thin, thin_pilot, 0.08)
    monkeypatch.setattr(refine, "TILE", 4096)
    np.testing.assert_allclose(tiled, wiener_refine(thin, thin_pilot, 0.08), atol=1e-5)


def test_refined_reports_whether_anything_changed(tmp_path) -> None:
    from PIL import Image

    clean = data.camera()[:64, :64].astype(np.float64)
    src = tmp_path / "in"
    src.mkdir()
    for name, sigma in (("low.png", 10), ("high.png", 60)):
        noisy = clean + np.random.default_rng(0).normal(0, sigma, clean.shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(src / name)
    Image.fromarray(clean[:12, :40].astype(np.uint8)).save(src / "tiny.png")  # under 16 px
    results = denoise_images([src], tmp_path / "out", refine="on")
    assert {r.ref.path.name: r.refined for r in results} == {
        "low.png": True, "high.png": False, "tiny.png": False
    }  # fmt: skip
    with pytest.raises(ConfigError, match="refine must be True or False"):
        denoise_array(_Identity(), clean / 255, refine="off")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["grass", "gravel"])
def test_refine_sigma_counts_less_texture_as_noise(name: str) -> None:
    """On fine texture the plain wavelet estimate overshoots; the residual one is closer."""
    from aetool.denoise.noise_level import estimate_sigma, refine_sigma
    from aetool.models.bundled import bundled_model_path
    from aetool.models.file import load_model

    clean = (getattr(data, name)()[:256, :256] / 255.0).astype(np.float32)
    sigma = 15 / 255
    noisy = _noisy(clean, sigma, seed=1)
    pilot = denoise_array(load_model(bundled_model_path()), noisy)
    plain, resid = estimate_sigma(noisy), refine_sigma(noisy, pilot)
    assert plain > 1.1 * sigma  # texture read as noise
    assert abs(np.log(resid / sigma)) < abs(np.log(plain / sigma))
    assert 0.75 * sigma < resid < 1.1 * sigma


def _reference_refine(y: np.ndarray, p: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D's Wiener stage as the module documents it, one group at a time (slow, plain)."""
    n, r = refine.PATCH, refine.RADIUS
    s2 = (sigma * refine.SIGMA_SCALE) ** 2
    yp, pp = np.pad(y, r, mode="reflect"), np.pad(p, r, mode="reflect")
    d = np.kron(refine._dct(n).numpy(), refine._dct(n).numpy()).astype(np.float64)
    win = torch.kaiser_window(n, periodic=False, beta=refine.KAISER_BETA).numpy()
    win2 = np.outer(win, win)
    num, den = np.zeros(yp.shape), np.zeros(yp.shape)
    offsets = [(dy, dx) for dy in range(-r, r + 1, refine.OFFSET_STEP)
               for dx in range(-r, r + 1, refine.OFFSET_STEP)]  # fmt: skip
    rows, last_row = refine._grid(y.shape[0])
    cols, last_col = refine._grid(y.shape[1])
    rows += [last_row] if last_row is not None else []
    cols += [last_col] if last_col is not None else []
    for ry in rows:
        for rx in cols:
            ref = pp[ry + r : ry + r + n, rx + r : rx + r + n]
            dist = []
            for dy, dx in offsets:
                cand = pp[ry + r + dy : ry + r + dy + n, rx + r + dx : rx + r + dx + n]
                dist.append(-1.0 if (dy, dx) == (0, 0) else float(np.mean((cand - ref) ** 2)))
            order = np.argsort(dist, kind="stable")[: refine.GROUP]
            count = max(1, sum(dist[i] <= refine.TAU for i in order))
            k = 2 ** int(np.floor(np.log2(count)))
            at = [(ry + r + offsets[i][0], rx + r + offsets[i][1]) for i in order[:k]]
            ny = np.stack([yp[a : a + n, b : b + n].reshape(-1) for a, b in at]) @ d.T
            np_ = np.stack([pp[a : a + n, b : b + n].reshape(-1) for a, b in at]) @ d.T
            h = refine._haar(k).numpy().astype(np.float64)
            gain = (h @ np_) ** 2
            gain /= gain + s2
            weight = 1.0 / (s2 * np.sum(gain**2))
            est = h.T @ (gain * (h @ ny)) @ d
            for (a, b), patch in zip(at, est, strict=True):
                num[a : a + n, b : b + n] += weight * win2 * patch.reshape(n, n)
                den[a : a + n, b : b + n] += weight * win2
    num, den = num[r:-r, r:-r], den[r:-r, r:-r]
    return np.where(den > 0, num / np.where(den > 0, den, 1), p)


@pytest.mark.parametrize("shape", [(24, 24), (29, 34)])  # off-grid last patch; mixed
def test_matches_a_plain_reference_implementation(shape: tuple[int, int]) -> None:
    """The batched, channels-last implementation computes exactly the documented filter."""
    rng = np.random.default_rng(3)
    clean = gaussian_filter(rng.random(shape), 1.0).astype(np.float32)
    noisy = _noisy(clean, 0.05, seed=4)
    pilot = gaussian_filter(noisy, 0.8).astype(np.float32)
    got = wiener_refine(noisy, pilot, 0.05)
    want = _reference_refine(noisy.astype(np.float64), pilot.astype(np.float64), 0.05)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.abs(got - pilot).max() > 1e-3  # the filter did something
