"""Tests for `aetool denoise`: rows on stdout, summary on stderr, safety, shards, stdin."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

# The test-only architectures (registered by the autouse fixture) and the tiny-denoiser trainer.
from denoise.test_denoising import registered_test_models, train_tiny_denoiser  # noqa: F401
from PIL import Image

from aetool.cli.main import cli
from aetool.models.file import save_model
from aetool.models.registry import create_model

# Small models run faster on one thread than on two busy ones.
pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def halving_model(tmp_path: Path) -> Path:
    model = create_model("test-identity")
    with torch.no_grad():
        model.scale.fill_(0.5)
    return save_model(tmp_path / "half.safetensors", model, {"preprocessing": {"channels": 1}})


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "in"
    for rel in ("a/one.png", "a/two.png", "b/c/three.png", "four.png", "five.png", "six.png"):
        _write(root / rel, rng.integers(0, 256, (12, 14), dtype=np.uint8))
    _write(root / "rgb.png", rng.integers(0, 256, (12, 14, 3), dtype=np.uint8))
    return root


def _plain(text: str) -> str:
    """The summary table's cells, unwrapped (a cell folds over several lines)."""
    return " ".join(text.replace("│", " ").split())


REFINED = "then collaborative Wiener refinement"


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(cli, list(args), input=stdin)


def test_denoise_writes_mirrored_tree_and_streams_rows(
    tmp_path: Path, folder: Path, halving_model: Path
) -> None:
    out = tmp_path / "out"
    res = _run("denoise", str(folder), str(out), "--model", str(halving_model), "--device", "cpu",
               "--color", "channels")  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = _rows(res.stdout)
    assert list(rows[0]) == ["src", "dst", "sigma_est", "status", "error"]
    assert len(rows) == 7 and {r["status"] for r in rows} == {"written"}
    for r in rows:
        src, dst = Path(r["src"]), Path(r["dst"])
        assert dst == out / src.relative_to(folder)
        a, b = np.asarray(Image.open(src)), np.asarray(Image.open(dst))
        assert a.shape == b.shape and np.abs(b - np.round(a / 2)).max() <= 1
        assert float(r["sigma_est"]) >= 0
    assert "Denoising summary" in res.stderr and "written" in res.stderr
    assert "Denoising summary" not in res.stdout


def test_denoise_jsonl(tmp_path: Path, folder: Path, halving_model: Path) -> None:
    res = _run("denoise", str(folder), str(tmp_path / "o"), "-m", str(halving_model),
               "--format", "jsonl", "-q")  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 7 and all(isinstance(r["sigma_est"], float) for r in rows)
    assert res.stderr == ""  # --quiet


def test_existing_outputs_are_skipped_with_a_warning(
    tmp_path: Path, folder: Path, halving_model: Path
) -> None:
    out = tmp_path / "out"
    _write(out / "four.png", np.full((3, 3), 9, np.uint8))
    res = _run("denoise", str(folder), str(out), "-m", str(halving_model))
    assert res.exit_code == 0
    rows = {Path(r["src"]).name: r for r in _rows(res.stdout)}
    assert rows["four.png"]["status"] == "exists" and rows["one.png"]["status"] == "written"
    assert "not overwritten" in res.stderr and "1 existing output" in res.stderr
    assert np.asarray(Image.open(out / "four.png")).shape == (3, 3)
    res = _run("denoise", str(folder), str(out), "-m", str(halving_model), "--overwrite")
    assert {r["status"] for r in _rows(res.stdout)} == {"written"}
    assert np.asarray(Image.open(out / "four.png")).shape == (12, 14)


def test_output_inside_input_is_refused(folder: Path, halving_model: Path) -> None:
    res = _run("denoise", str(folder), str(folder / "den"), "-m", str(halving_model))
    assert res.exit_code == 1
    assert res.stderr.startswith("Error:") and "inside the input folder" in res.stderr
    assert not (folder / "den").exists() and res.stdout == ""


def test_symlink_out_of_output_is_refused(tmp_path: Path, folder: Path, halving_model: Path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "a").symlink_to(outside)
    res = _run("denoise", str(folder), str(out), "-m", str(halving_model))
    assert res.exit_code == 4  # some written, some refused
    rows = {Path(r["src"]).name: r for r in _rows(res.stdout)}
    assert rows["one.png"]["status"] == "error" and "symlink" in rows["one.png"]["error"]
    assert rows["four.png"]["status"] == "written"
    assert list(outside.iterdir()) == []


def test_unreadable_files_warn_and_strict_fails(
    tmp_path: Path, folder: Path, halving_model: Path
) -> None:
    (folder / "g_broken.png").write_bytes(b"\x89PNG nope")
    res = _run("denoise", str(folder), str(tmp_path / "o1"), "-m", str(halving_model))
    assert res.exit_code == 4
    rows = {Path(r["src"]).name: r for r in _rows(res.stdout)}
    assert rows["g_broken.png"]["status"] == "error" and rows["g_broken.png"]["error"]
    assert sum(r["status"] == "written" for r in rows.values()) == 7
    assert "g_broken.png" in res.stderr and "errors" in res.stderr
    assert "1 input(s) could not be denoised (exit code 4" in res.stderr
    res = _run("denoise", str(folder), str(tmp_path / "o2"), "-m", str(halving_model), "--strict")
    assert res.exit_code == 1 and "g_broken.png" in res.stderr
    on_disk = {str(p) for p in (tmp_path / "o2").rglob("*.png")}
    rows = _rows(res.stdout)
    assert len(on_disk) == 2  # five.png and four.png come before g_broken.png
    assert {r["dst"] for r in rows if r["status"] == "written"} == on_disk


def test_shards_partition_the_images(tmp_path: Path, folder: Path, halving_model: Path) -> None:
    full = _run("denoise", str(folder), str(tmp_path / "all"), "-m", str(halving_model))
    expected = sorted(r["src"] for r in _rows(full.stdout))
    for n in range(1, 6):
        seen: list[str] = []
        for i in range(1, n + 1):
            res = _run("denoise", str(folder), str(tmp_path / f"s{n}"), "-m", str(halving_model),
                       "--shard", f"{i}/{n}", "-q")  # fmt: skip
            assert res.exit_code == 0, res.output
            seen += [r["src"] for r in _rows(res.stdout)]
        assert sorted(seen) == expected  # union is everything, no duplicates
        assert len(list((tmp_path / f"s{n}").rglob("*.png"))) == 7
    bad = _run("denoise", str(folder), str(tmp_path / "x"), "--shard", "3/2")
    assert bad.exit_code == 2 and "I/N" in bad.stderr


def test_paths_from_stdin(tmp_path: Path, folder: Path, halving_model: Path) -> None:
    listed = f"{folder / 'four.png'}\n\n{folder / 'a'}\n"
    for args in (["-", str(tmp_path / "o1")], [str(tmp_path / "o2")]):
        res = _run("denoise", *args, "-m", str(halving_model), stdin=listed)
        assert res.exit_code == 0, res.output
        names = sorted(Path(r["dst"]).name for r in _rows(res.stdout))
        assert names == ["four.png", "one.png", "two.png"]
    empty = _run("denoise", str(tmp_path / "o3"), "-m", str(halving_model), stdin="")
    assert empty.exit_code == 2 and "no image paths were read from stdin" in empty.stderr


def test_reference_columns_show_psnr_gain(tmp_path: Path) -> None:
    from skimage import data

    from aetool.models.file import save_model as save

    model = train_tiny_denoiser(tmp_path / "train")
    model_path = save(tmp_path / "den.safetensors", model, {"preprocessing": {"channels": 1}})
    clean = data.camera()[200:328, 150:278]
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25.5, clean.shape), 0, 255)
    _write(tmp_path / "clean/x/n.png", clean)
    _write(tmp_path / "noisy/x/n.png", noisy.astype(np.uint8))
    res = _run("denoise", str(tmp_path / "noisy"), str(tmp_path / "out"), "-m", str(model_path),
               "--reference", str(tmp_path / "clean"), "--tile", "64", "--overlap", "16")  # fmt: skip
    assert res.exit_code == 0, res.output
    (row,) = _rows(res.stdout)
    assert list(row) == ["src", "dst", "sigma_est", "psnr_in", "psnr_out", "ssim_in",
                         "ssim_out", "status", "error"]  # fmt: skip
    assert float(row["psnr_out"]) > float(row["psnr_in"]) + 3
    assert float(row["ssim_out"]) > float(row["ssim_in"])
    assert abs(float(row["sigma_est"]) - 0.1) < 0.015
    assert "PSNR" in res.stderr and "->" in res.stderr


def test_bad_options(tmp_path: Path, folder: Path, halving_model: Path) -> None:
    res = _run("denoise", str(folder), str(tmp_path / "o"), "--tile", "32", "--overlap", "32")
    assert res.exit_code == 2 and "--overlap" in res.stderr
    res = _run("denoise", str(folder), str(tmp_path / "o"), "-m", str(tmp_path / "nope.st"))
    assert res.exit_code == 1 and "not found" in res.stderr


def test_default_model_is_the_bundled_denoiser(tmp_path: Path, folder: Path, monkeypatch) -> None:
    from aetool.models import bundled

    monkeypatch.setattr(bundled, "DEFAULT_DENOISER", "missing-for-test.safetensors")
    monkeypatch.setattr(
        bundled.bundled_model_path, "__defaults__", ("missing-for-test.safetensors",)
    )
    res = _run("denoise", str(folder), str(tmp_path / "o"))
    assert res.exit_code == 1
    assert "missing-for-test.safetensors is missing from this installation" in res.stderr
    assert "--model" in res.stderr


def test_named_files_with_the_output_under_the_working_folder(
    tmp_path: Path, folder: Path, halving_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder)
    res = _run("denoise", "four.png", "a/one.png", "clean", "-m", str(halving_model))
    assert res.exit_code == 0, res.stderr
    assert (folder / "clean/four.png").is_file() and (folder / "clean/a/one.png").is_file()
    res = _run("denoise", "clean2", "-m", str(halving_model), stdin="five.png\nsix.png\n")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in (folder / "clean2").iterdir()) == ["five.png", "six.png"]
    # a folder input still may not hold the output
    res = _run("denoise", ".", "clean3", "-m", str(halving_model))
    assert res.exit_code == 1 and "inside the input folder" in res.stderr
    # a named file reached through '..' is written under its bare name, like an absolute one
    monkeypatch.chdir(folder / "a")
    res = _run("denoise", "../four.png", str(tmp_path / "o"), "-m", str(halving_model))
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "o/four.png").is_file()


def test_an_oversized_image_is_an_error_row_and_the_run_goes_on(
    tmp_path: Path, halving_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image as PILImage

    _write(tmp_path / "in/a.png", np.zeros((5, 5), np.uint8))
    _write(tmp_path / "in/b_big.png", np.zeros((20, 20), np.uint8))
    _write(tmp_path / "in/c.png", np.zeros((5, 5), np.uint8))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # refused above 2x this: 200 px
    res = _run("denoise", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(halving_model))
    assert res.exit_code == 4
    rows = {Path(r["src"]).name: r for r in _rows(res.stdout)}
    assert [rows[n]["status"] for n in ("a.png", "b_big.png", "c.png")] == [
        "written", "error", "written"
    ]  # fmt: skip
    assert "decompression bomb" in rows["b_big.png"]["error"]


def test_a_model_trained_without_noise_is_flagged(
    tmp_path: Path, folder: Path, halving_model: Path
) -> None:
    res = _run("denoise", str(folder / "a"), str(tmp_path / "o"), "-m", str(halving_model))
    assert res.exit_code == 0
    assert "trained without input noise: it is not a denoiser" in res.stderr
    digits = (
        Path(__file__).resolve().parents[2] / "aetool/models/pretrained/digits-conv.safetensors"
    )
    res = _run("denoise", str(folder / "a"), str(tmp_path / "o2"), "-m", str(digits))
    assert "not a denoiser" in res.stderr and "takes fixed 8x8 inputs" in res.stderr
    res = _run("denoise", str(folder / "a"), str(tmp_path / "o3"))  # the bundled denoiser
    assert res.exit_code == 0 and "warning" not in res.stderr
    unet = save_model(tmp_path / "unet.safetensors", create_model("denoiser", base_channels=4), {})
    res = _run("denoise", str(folder / "a"), str(tmp_path / "o4"), "-m", str(unet))
    assert res.exit_code == 0 and "warning" not in res.stderr  # saved from Python: no record


def test_outputs_reached_through_a_symlink_in_the_input_are_not_denoised_again(
    tmp_path: Path, folder: Path, halving_model: Path
) -> None:
    out = tmp_path / "out"
    (folder / "to_out").symlink_to(out, target_is_directory=True)
    first = _run("denoise", str(folder), str(out), "-m", str(halving_model))
    assert first.exit_code == 0, first.stderr
    again = _run("denoise", str(folder), str(out), "-m", str(halving_model))
    rows = _rows(again.stdout)
    looped = [r for r in rows if "/to_out/" in r["src"]]
    assert looped and all(
        r["status"] == "error" and "inside the output folder" in r["error"] for r in looped
    )
    assert not (out / "to_out").exists()


def test_refine_is_on_for_gaussian_trained_models_and_can_be_chosen(
    tmp_path: Path, halving_model: Path
) -> None:
    from skimage.color import rgb2gray
    from sklearn.datasets import load_sample_image

    # fine foliage of a photo the bundled model never saw, sigma 20
    clean = np.round(rgb2gray(load_sample_image("china.jpg"))[100:164, 100:164] * 255)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 20, clean.shape), 0, 255)
    _write(tmp_path / "in/n.png", noisy.astype(np.uint8))
    _write(tmp_path / "clean/n.png", clean.astype(np.uint8))
    outs = {}
    for flag in ("auto", "off", "on"):
        res = _run("denoise", str(tmp_path / "in"), str(tmp_path / flag), "--refine", flag,
                   "--reference", str(tmp_path / "clean"))  # fmt: skip
        assert res.exit_code == 0, res.output
        assert (REFINED in _plain(res.stderr)) == (flag != "off")  # the bundled model: auto is on
        outs[flag] = np.asarray(Image.open(tmp_path / flag / "n.png"), dtype=np.float64)
        (row,) = _rows(res.stdout)
        outs[flag + " psnr"] = float(row["psnr_out"])
    np.testing.assert_array_equal(outs["auto"], outs["on"])
    assert np.abs(outs["on"] - outs["off"]).mean() > 0.5  # grey levels
    assert outs["on psnr"] > outs["off psnr"] + 0.3  # texture the model smoothed comes back
    # a model file without a Gaussian-noise training record: auto is off
    res = _run("denoise", str(tmp_path / "in"), str(tmp_path / "h"), "-m", str(halving_model))
    assert res.exit_code == 0 and REFINED not in _plain(res.stderr)
    res = _run("denoise", str(tmp_path / "in"), str(tmp_path / "h2"), "-m", str(halving_model),
               "--refine", "on")  # fmt: skip
    assert res.exit_code == 0 and REFINED in _plain(res.stderr)
    res = _run("denoise", str(tmp_path / "in"), str(tmp_path / "x"), "--refine", "yes")
    assert res.exit_code == 2 and "--refine" in res.stderr


def test_empty_shard_writes_the_header(tmp_path: Path, folder: Path, halving_model: Path) -> None:
    """Every shard of two images over 8 writes the header, and the method line says what ran."""
    imgs = [str(folder / "four.png"), str(folder / "five.png")]
    results = [
        _run(
            "denoise",
            *imgs,
            str(tmp_path / "out"),
            "-m",
            str(halving_model),
            "--shard",
            f"{i}/8",
            "--device",
            "cpu",
        )  # fmt: skip
        for i in range(1, 9)
    ]
    assert all(r.exit_code == 0 for r in results), [r.stderr for r in results]
    assert {r.stdout.splitlines()[0] for r in results} == {"src,dst,sigma_est,status,error"}
    assert sum(len(_rows(r.stdout)) for r in results) == 2
    assert sum(r.stdout.count("\n") == 1 for r in results) == 6
    assert all("alone, no refinement" in " ".join(r.stderr.replace("│", " ").split())
               for r in results)  # fmt: skip


def test_summary_says_what_ran(tmp_path: Path, halving_model: Path) -> None:
    rng = np.random.default_rng(1)
    ramp = np.add.outer(np.arange(48), np.arange(48)) * 2.0 + 30
    noisy = np.clip(ramp + rng.normal(0, 8, ramp.shape), 0, 255).round().astype(np.uint8)
    img = _write(tmp_path / "in" / "noisy.png", noisy)

    def plain(text: str) -> str:  # the summary table's cells, unwrapped
        return " ".join(text.replace("│", " ").split())

    off = _run("denoise", str(img), str(tmp_path / "o1"), "--refine", "off", "--device", "cpu")
    assert off.exit_code == 0, off.stderr
    assert "bundled grayscale denoiser alone" in plain(off.stderr)
    assert "(--refine off)" in plain(off.stderr)
    on = _run("denoise", str(img), str(tmp_path / "o2"), "--refine", "on", "--device", "cpu")
    assert on.exit_code == 0, on.stderr
    assert "then collaborative Wiener refinement" in plain(on.stderr)
    assert "on all of 1 image(s)" in plain(on.stderr)
