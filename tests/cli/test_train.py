from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from aetool.cli.main import cli
from aetool.models.file import load_model


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _train(runner: CliRunner, folder: Path, out: Path, *extra: str):  # noqa: ANN202
    return runner.invoke(
        cli, ["train", str(folder), "-o", str(out), "--epochs", "3", "--batch-size", "16", *extra]
    )


def test_train_prints_only_the_model_path(
    runner: CliRunner, blob_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.safetensors"
    res = _train(runner, blob_folder, out, "--samples", str(tmp_path / "grids"))
    assert res.exit_code == 0, res.stderr
    assert res.stdout == f"{out}\n"
    assert "Training summary" in res.stderr and "epoch 3/3" in res.stderr
    assert "only 5 validation image(s)" in res.stderr  # 10% of 48: a rough threshold
    loaded = load_model(out)
    assert loaded.metadata["training"]["epochs_run"] == 3
    assert loaded.metadata["training"]["data"] == [str(blob_folder.resolve())]
    grids = sorted(p.name for p in (tmp_path / "grids").iterdir())
    assert grids == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]
    final = tmp_path / "m.samples.png"
    assert Image.open(final).size[0] > 100


def test_train_refuses_to_overwrite(runner: CliRunner, blob_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    res = _train(runner, blob_folder, out)
    assert res.exit_code == 2 and "--overwrite" in res.stderr
    assert out.read_bytes() == b"precious"
    res = _train(runner, blob_folder, out, "--overwrite")
    assert res.exit_code == 0 and load_model(out).metadata["arch"] == "conv"


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable"])
def test_bad_folders_are_one_line_errors(runner: CliRunner, tmp_path: Path, case: str) -> None:
    folder = tmp_path / "imgs"
    if case != "missing":
        folder.mkdir()
    if case == "unreadable":
        (folder / "a.png").write_text("not a png")
    res = _train(runner, folder, tmp_path / "m.safetensors")
    assert res.exit_code == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_bad_files_warn_and_strict_fails(
    runner: CliRunner, blob_folder: Path, tmp_path: Path
) -> None:
    (blob_folder / "zzz.png").write_bytes(b"")
    res = _train(runner, blob_folder, tmp_path / "m.safetensors")
    assert res.exit_code == 0
    assert "warning" in res.stderr and "zzz.png" in res.stderr
    meta = load_model(tmp_path / "m.safetensors").metadata
    assert [Path(s["path"]).name for s in meta["training"]["skipped"]] == ["zzz.png"]
    res = _train(runner, blob_folder, tmp_path / "strict.safetensors", "--strict")
    assert res.exit_code == 1 and "zzz.png" in res.stderr


def test_nan_is_an_error_with_advice(runner: CliRunner, blob_folder: Path, tmp_path: Path) -> None:
    res = _train(runner, blob_folder, tmp_path / "m.safetensors", "--lr", "1e12", "--arch", "dense")
    assert res.exit_code == 1 and "lower --lr" in res.stderr


def test_bad_options_are_usage_errors(runner: CliRunner, blob_folder: Path, tmp_path: Path) -> None:
    res = _train(runner, blob_folder, tmp_path / "m.safetensors", "--noise", "pink:3")
    assert res.exit_code == 2 and "gaussian" in res.stderr
    res = _train(runner, blob_folder, tmp_path / "m.safetensors", "--arch", "nope")
    assert (
        res.exit_code == 2
        and "'nope' is not one of 'auto', 'conv', 'denoiser', 'dense', 'draem'" in res.stderr
    )


def test_info_readable_and_json(runner: CliRunner, blob_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    assert _train(runner, blob_folder, out, "--noise", "gaussian:0.1").exit_code == 0
    res = runner.invoke(cli, ["info", str(out)])
    # The readable table is info's output: on stdout, so `info M > f` writes f.
    assert res.exit_code == 0 and res.stderr == ""
    assert "conv" in res.stdout and "gaussian:0.1" in res.stdout and "val mse" in res.stdout
    res = runner.invoke(cli, ["info", str(out), "--json"])
    meta = json.loads(res.stdout)
    assert meta["format"] == "aetool-model" and meta["training"]["noise"] == "gaussian:0.1"
    assert len(meta["validation"]["scores"]["mse"]) == meta["validation"]["count"]
    res = runner.invoke(cli, ["info"], env={"AETOOL_MODEL": str(out)})
    assert res.exit_code == 0 and str(out) in res.stdout
    res = runner.invoke(cli, ["info", str(tmp_path / "none.safetensors")])
    assert res.exit_code == 1 and "not found" in res.stderr


def test_python_m_aetool_works() -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "aetool", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "aetool" in res.stdout


@pytest.mark.parametrize(("size", "hinted"), [((1024, 1024), True), ((300, 300), True),
                                              ((256, 256), False), (None, False)])  # fmt: skip
def test_large_working_size_gets_an_image_size_hint(
    size: tuple[int, int] | None, hinted: bool
) -> None:
    import io

    from rich.console import Console

    from aetool.cli.train import _hint_large_images

    buf = io.StringIO()
    _hint_large_images(Console(file=buf, width=300), size)
    text = buf.getvalue()
    assert ("--image-size" in text) is hinted
    if hinted and size is not None:
        assert f"{size[0]}x{size[1]}" in text


def test_large_images_hint_reaches_stderr(runner: CliRunner, tmp_path: Path) -> None:
    import numpy as np

    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((260, 270), 40 * i, np.uint8)).save(folder / f"{i}.png")
    res = runner.invoke(cli, ["train", str(folder), "-o", str(tmp_path / "m.safetensors"),
                              "--image-size", "16", "--epochs", "1"])  # fmt: skip
    assert res.exit_code == 0 and "--image-size 128" not in res.stderr  # size was chosen
    res = runner.invoke(cli, ["train", str(folder), "-o", str(tmp_path / "n.safetensors"),
                              "--epochs", "1", "--arch", "dense", "--latent-dim", "2"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert "260x270" in res.stderr and "--image-size 128" in res.stderr


def test_help_texts_have_examples_and_no_rest_markup(runner: CliRunner) -> None:
    for command in ("train", "score", "denoise", "export", "interpolate", "latent-map",
                    "report", "info", "demo"):  # fmt: skip
        res = runner.invoke(cli, [command, "--help"])
        assert res.exit_code == 0
        assert "Examples:" in res.stdout and f"aetool {command}" in res.stdout, command
        assert "``" not in res.stdout, command
    top = runner.invoke(cli, ["--help"]).stdout
    assert "..." not in top.split("Commands:")[1]  # no description cut off
    for command in ("score", "denoise", "export"):
        assert "--shard I/N" in runner.invoke(cli, [command, "--help"]).stdout
    train_help = " ".join(runner.invoke(cli, ["train", "--help"]).stdout.split())
    assert "--patches-per-epoch INTEGER RANGE With --patch-size: random patches" in train_help
