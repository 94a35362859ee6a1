"""Tests for the bundled pretrained grayscale denoiser (``aetool/models/pretrained/denoiser-gray``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from aetool.cli import cli
from aetool.denoise.array import denoise_array
from aetool.denoise.color import COLOR_MODES
from aetool.metrics import psnr
from aetool.models.bundled import DEFAULT_DENOISER, bundled_model_path
from aetool.models.file import load_model

# Small models run faster on one thread than on two busy ones.
pytestmark = pytest.mark.usefixtures("one_thread")


def _noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return clean + np.random.default_rng(seed).normal(0, sigma, clean.shape).astype(np.float32)


def test_bundled_denoiser_loads_as_a_small_fully_convolutional_float32_model() -> None:
    path = bundled_model_path()
    assert path.name == DEFAULT_DENOISER
    assert path.stat().st_size < 5 * 2**20
    loaded = load_model(path)
    meta = loaded.metadata
    assert meta["arch"] == "denoiser"
    assert meta["preprocessing"]["channels"] == 1 and meta["preprocessing"]["height"] is None
    assert meta["training"]["completed"] is True and meta["training"]["history"]["train_loss"]
    assert set(meta["training"]["held_out"]) >= {"skimage.data.camera"}
    model = loaded.model
    assert model.fully_convolutional and not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(2, 1, 37, 53)  # not a multiple of the 8-pixel stride
    with torch.inference_mode():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert 0 <= float(y.min()) and float(y.max()) <= 1


def test_bundled_denoiser_gains_over_5_db_on_a_held_out_picture() -> None:
    data = pytest.importorskip("skimage.data")
    clean = data.camera()[64:192, 192:320].astype(np.float32) / 255  # never seen in training
    noisy = _noisy(clean, 25 / 255)
    with torch.inference_mode():
        out = denoise_array(load_model(bundled_model_path()), noisy)
    assert out.shape == clean.shape and out.dtype == np.float32
    before, after = psnr(clean, noisy), psnr(clean, out)
    assert before == pytest.approx(20.2, abs=0.3)
    assert after > before + 5, (before, after)


def test_denoise_cli_uses_the_bundled_model_without_model_option(tmp_path: Path) -> None:
    data = pytest.importorskip("skimage.data")
    crops = {
        "gray/camera.png": data.camera()[300:396, 100:212],
        "gray/moon.png": data.moon()[200:280, 200:264],
        "rgb.png": data.astronaut()[20:84, 200:296],
    }
    for rel, clean in crops.items():
        noisy = np.clip(_noisy(clean.astype(np.float32), 20.0, seed=len(rel)), 0, 255)
        for root, arr in (("clean", clean), ("noisy", noisy.round().astype(np.uint8))):
            (tmp_path / root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tmp_path / root / rel)
    res = CliRunner().invoke(
        cli,
        ["denoise", str(tmp_path / "noisy"), str(tmp_path / "out"), "--device", "cpu",
         "--reference", str(tmp_path / "clean")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = {Path(r["src"]).relative_to(tmp_path / "noisy").as_posix(): r
            for r in csv.DictReader(io.StringIO(res.stdout))}  # fmt: skip
    assert set(rows) == set(crops)
    for rel, row in rows.items():
        assert row["status"] == "written", row
        src, dst = Image.open(tmp_path / "noisy" / rel), Image.open(tmp_path / "out" / rel)
        assert Path(row["dst"]) == tmp_path / "out" / rel
        assert (dst.size, dst.mode) == (src.size, src.mode)
        assert float(row["psnr_out"]) > float(row["psnr_in"]) + 3, row


def test_self_ensemble_is_cleaner_than_one_pass() -> None:
    data = pytest.importorskip("skimage.data")
    clean = data.camera()[64:192, 192:320].astype(np.float32) / 255
    noisy = _noisy(clean, 25 / 255)
    model = load_model(bundled_model_path())
    with torch.inference_mode():
        one, eight = (psnr(clean, denoise_array(model, noisy, ensemble=n)) for n in (1, 8))
    assert eight > one + 0.05, (one, eight)  # measured: +0.12 dB on this crop


def test_denoise_cli_ensemble_option(tmp_path: Path) -> None:
    data = pytest.importorskip("skimage.data")
    (tmp_path / "in").mkdir()
    Image.fromarray(data.moon()[:48, :40]).save(tmp_path / "in" / "m.png")
    args = ["denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--device", "cpu"]
    res = CliRunner().invoke(cli, [*args, "--ensemble", "4"])
    assert res.exit_code == 0, res.output
    (row,) = csv.DictReader(io.StringIO(res.stdout))
    assert row["status"] == "written" and Image.open(row["dst"]).size == (40, 48)
    res = CliRunner().invoke(cli, [*args, "--ensemble", "3", "--overwrite"])
    assert res.exit_code == 2 and "--ensemble" in res.stderr


def test_colour_pictures_are_cleaner_in_the_opponent_space() -> None:
    data = pytest.importorskip("skimage.data")
    clean = data.astronaut()[:160, 180:340].transpose(2, 0, 1).astype(np.float32) / 255
    noisy = _noisy(clean, 25 / 255)
    model = load_model(bundled_model_path())
    with torch.inference_mode():
        opp, sep = (psnr(clean, denoise_array(model, noisy, color=c)) for c in COLOR_MODES)
    assert COLOR_MODES == ("opponent", "channels")
    assert opp > sep + 0.5, (opp, sep)  # measured: +1.4 dB on whole held-out pictures


def test_denoise_cli_color_option(tmp_path: Path) -> None:
    data = pytest.importorskip("skimage.data")
    (tmp_path / "in").mkdir()
    Image.fromarray(data.astronaut()[:40, :48]).save(tmp_path / "in" / "a.png")
    outs = {}
    for color in ("opponent", "channels"):
        out = tmp_path / color
        res = CliRunner().invoke(cli, ["denoise", str(tmp_path / "in"), str(out), "--color", color])
        assert res.exit_code == 0, res.output
        outs[color] = np.asarray(Image.open(out / "a.png")).astype(int)
        assert outs[color].shape == (40, 48, 3)
    assert np.abs(outs["opponent"] - outs["channels"]).max() > 0
    res = CliRunner().invoke(cli, ["denoise", str(tmp_path / "in"), str(tmp_path / "x"),
                                   "--color", "rgb"])  # fmt: skip
    assert res.exit_code == 2 and "--color" in res.stderr


def _training_script(monkeypatch):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "pretrained" / "train_pretrained_denoiser.py"
    spec = importlib.util.spec_from_file_location("train_pretrained_denoiser", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_training_script_fine_tunes_from_init(tmp_path: Path, monkeypatch) -> None:
    import hashlib
    import sys

    script = _training_script(monkeypatch)
    rng = np.random.default_rng(0)
    pictures = [rng.random((48, 40), dtype=np.float32) for _ in range(3)]
    monkeypatch.setattr(script, "load_pictures", lambda names, npz=None: list(pictures))
    init = bundled_model_path()
    out = tmp_path / "ft.safetensors"
    argv = ["x", "--init", str(init), "--device", "cpu", "--steps", "2", "--warmup", "1",
            "--batch-size", "2", "--patch-size", "32", "--lr", "1e-4", "-o", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    loaded, before = load_model(out), load_model(init)
    assert loaded.metadata["arch_args"] == before.metadata["arch_args"]
    training = loaded.metadata["training"]
    assert training["steps"] == 2 and training["recipe"]["init"] == init.name
    record = training["init"]
    assert record["sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    assert record["training"] == before.metadata["training"]
    assert set(record["validation_psnr"]) == {"sigma15", "sigma25", "sigma50"}
    # Trained from the bundled weights: moved, but only by two small steps.
    a = torch.cat([p.flatten() for p in loaded.model.parameters()])
    b = torch.cat([p.flatten() for p in before.model.parameters()])
    assert 0 < (a - b).abs().max() < 0.01
    # An architecture flag next to --init is refused: the file gives the architecture.
    monkeypatch.setattr(sys, "argv", [*argv, "--depth", "4", "--overwrite"])
    with pytest.raises(SystemExit) as exc:
        script.main()
    assert exc.value.code == 2


def test_info_shows_the_run_a_fine_tuned_model_started_from() -> None:
    res = CliRunner().invoke(cli, ["info", str(bundled_model_path())])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.replace("│", " ").split())  # the table's lines joined
    meta = load_model(bundled_model_path()).metadata["training"]
    first = meta["init"]["training"]
    assert "started from" in text and meta["init"]["sha256"][:12] in text
    assert f"{first['steps']} steps" in text and str(first["device"]) in text


def test_info_survives_odd_records_of_earlier_runs(tmp_path: Path) -> None:
    from aetool.models.file import save_model

    loaded = load_model(bundled_model_path())
    for odd in ("oops", [1], {"seconds": None, "steps": 3}):
        training = dict(loaded.metadata["training"], init={"file": "x", "training": odd})
        path = save_model(tmp_path / "m.safetensors", loaded.model, {"training": training})
        res = CliRunner().invoke(cli, ["info", str(path)])
        assert res.exit_code == 0, res.output
        assert "started from" in res.output
